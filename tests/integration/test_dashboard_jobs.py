"""What the dashboard and the status endpoint show of jobs started by the app: a delayed job
waiting (runAt), a batch's progress from its children, and the schedules' next ticks."""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from arq.connections import ArqRedis
from databases import Database
from pydantic import SecretStr

from service import store
from service.app import create_app
from service.core.settings import Settings
from service.intake import Source
from service.jobs_client import JobsClient
from tests.support.jobs import make_shop
from tests.support.proxy import proxy_url
from tests.support.scheduled_jobs import EVERY_5S

SHOP = "test-shop.myshopify.com"
AUTH = {"Authorization": "Basic " + base64.b64encode(b"admin:pw-for-tests").decode()}


@pytest.fixture
async def app(settings: Settings, database: Database, redis: ArqRedis) -> AsyncIterator:
    app = create_app(
        settings.model_copy(
            update={"dashboard_username": "admin", "dashboard_password": SecretStr("pw-for-tests")}
        )
    )
    async with app.router.lifespan_context(app):
        web = app.state.web
        app.state.web = dataclasses.replace(
            web, job_types={**web.job_types, EVERY_5S.name: EVERY_5S}
        )
        yield app


@pytest.fixture
async def http(app) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def test_a_delayed_job_shows_waiting(
    app, http: httpx.AsyncClient, database: Database
) -> None:  # type: ignore[no-untyped-def]
    await make_shop(database)
    jobs: JobsClient = app.state.web.jobs
    # As the storefront's: /proxy/status shows only the storefront's jobs.
    job = await jobs.enqueue(
        "echo", shop=SHOP, input={"message": "later"}, delay=600, source=Source.PROXY
    )
    status = (await http.get(proxy_url("", f"/proxy/status?jobId={job.id}", shop=SHOP))).json()
    assert status["status"] == "pending" and status["runAt"] == job.run_at.isoformat()
    page = (await http.get(f"/admin/jobs/{job.id}", headers=AUTH)).text
    assert "Waiting until" in page and "/cancel" in page
    listing = (await http.get("/admin/", headers=AUTH)).text
    assert re.search(r"pending</span> <span class=\"muted\"[^>]*>due in \d+m", listing)


async def test_a_parent_shows_its_batch_progress(
    app,  # type: ignore[no-untyped-def]
    http: httpx.AsyncClient,
    database: Database,
) -> None:
    shop = await make_shop(database)
    parent, _ = await store.create_job(database, shop_id=shop.id, job_type="echo", job_input={})
    await database.execute(
        """UPDATE jobs SET status = 'processing', batch = '{"on_complete": null}'::jsonb
            WHERE id = :id""",
        {"id": parent.id},
    )
    jobs: JobsClient = app.state.web.jobs
    await jobs.enqueue_children(parent.id, shop, "echo", [{"message": str(n)} for n in range(8)])
    await database.execute(
        """UPDATE jobs SET status = 'completed' WHERE id IN (
               SELECT id FROM jobs WHERE parent_id = :p ORDER BY id LIMIT 3)""",
        {"p": parent.id},
    )
    await database.execute(
        """UPDATE jobs SET status = 'failed' WHERE id IN (
               SELECT id FROM jobs WHERE parent_id = :p AND status = 'pending' LIMIT 1)""",
        {"p": parent.id},
    )
    status = (await http.get(proxy_url("", f"/proxy/status?jobId={parent.id}", shop=SHOP))).json()
    assert status["status"] == "processing" and status["progress"] == 50
    assert status["batch"] == {
        "total": 8, "pending": 4, "processing": 0, "retrying": 0, "completed": 3, "failed": 1,
    }  # fmt: skip
    page = (await http.get(f"/admin/jobs/{parent.id}", headers=AUTH)).text
    assert "8 children: 3 completed, 1 failed, 0 running, 4 waiting" in page


async def test_the_dashboard_lists_schedules_with_their_next_tick(
    http: httpx.AsyncClient, database: Database
) -> None:
    page = (await http.get("/admin/", headers=AUTH)).text
    row = re.search(r'<tr data-type="every_5s">(.*?)</tr>', page, re.S)
    assert row is not None
    assert "*/5 * * * * *" in row.group(1) and "per shop" in row.group(1)
    assert re.search(r'class="next"[^>]*>\S+.*\(in \ds\)', row.group(1))
