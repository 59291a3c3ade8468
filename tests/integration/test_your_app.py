"""An app of the author's own (tests/support/myapp, outside jobs/ and service/), loaded by
SHOPJOBS_APP into the real web and worker processes: its types, two webhook jobs on one topic,
its route, its schedule, its log lines (docs/your-app.md)."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest
from arq.connections import ArqRedis
from databases import Database

from jobs.registry import AppError, job_types, webhook_jobs
from service.core.settings import Settings
from service.shopify.signatures import webhook_hmac
from tests.support.config import TEST_SECRET
from tests.support.jobs import make_shop, wait_for_status
from tests.support.processes import start_web, start_worker

APP = "jobs.builtin,tests.support.myapp"
PRODUCT = "gid://shopify/Product/8000000001"


def test_the_app_adds_types_and_several_jobs_per_topic(settings: Settings) -> None:
    with_app = settings.model_copy(update={"shopjobs_app": APP})
    types = job_types(with_app)
    assert {"myapp_tag", "myapp_note", "myapp_nightly", "product_summary"} <= set(types)
    assert "customers/redact" in webhook_jobs(with_app)  # shopjobs' own stay
    started = [route.job_type.name for route in webhook_jobs(with_app)["products/update"]]
    assert started == ["product_summary", "myapp_tag", "myapp_note"]
    alone = settings.model_copy(update={"shopjobs_app": "tests.support.myapp"})
    assert "product_summary" not in job_types(alone)  # the examples are an app too
    assert "shop/redact" in webhook_jobs(alone)
    with pytest.raises(AppError, match="no_such_app"):
        job_types(settings.model_copy(update={"shopjobs_app": "no_such_app"}))


async def test_an_app_package_runs_in_the_real_processes(
    env: dict[str, str], spawn, database: Database, redis: ArqRedis
) -> None:
    shop = await make_shop(database, "myapp-shop.myshopify.com")
    app_env = {**env, "SHOPJOBS_APP": APP, "JOB_MAX_ATTEMPTS": "1"}
    worker = start_worker(spawn, app_env)
    _, base = start_web(spawn, app_env)

    body = orjson.dumps({"admin_graphql_api_id": PRODUCT})
    headers = {
        "X-Shopify-Topic": "products/update",
        "X-Shopify-Shop-Domain": shop.domain,
        "X-Shopify-Event-Id": "myapp-ev-1",
        "X-Shopify-Hmac-Sha256": webhook_hmac(body, TEST_SECRET),
    }
    async with httpx.AsyncClient(timeout=10) as client:
        hook = await client.post(f"{base}/webhooks", content=body, headers=headers)
        assert hook.status_code == 200, hook.text
        routed = await client.post(
            f"{base}/myapp/tag", json={"shop": shop.domain, "product_id": "gid://x/Product/2"}
        )
        assert routed.status_code == 200, routed.text
    rows = await database.fetch_all(
        "SELECT id, type FROM jobs WHERE source = 'webhook' ORDER BY type"
    )
    assert [row["type"] for row in rows] == ["myapp_note", "myapp_tag", "product_summary"]
    for row in rows:
        if row["type"].startswith("myapp"):
            done = await wait_for_status(database, row["id"], {"completed"})
            assert done.result in ({"tagged": PRODUCT}, {"noted": PRODUCT})
    routed_job = await wait_for_status(database, routed.json()["jobId"], {"completed"})
    assert routed_job.result == {"tagged": "gid://x/Product/2"}

    deadline = time.monotonic() + 30
    nightly = None
    while nightly is None and time.monotonic() < deadline:
        nightly = await database.fetch_one(
            "SELECT id FROM jobs WHERE type = 'myapp_nightly' AND source = 'schedule'"
            " AND status = 'completed'"
        )
        await asyncio.sleep(0.3)
    assert nightly is not None, "the app's schedule never ran"

    await asyncio.sleep(0.3)  # the worker's last lines are written after the rows
    lines = [orjson.loads(line) for line in worker.output.splitlines()]
    tagging = [e for e in lines if e["message"].startswith("myapp tagging")]
    noting = [e for e in lines if e["message"].startswith("myapp noting")]
    assert tagging and noting, worker.output[-3000:]
    for entry in (*tagging, *noting):
        assert entry["shop"] == shop.domain and entry["job_id"]
        assert entry["logger"] in ("myapp", "myapp.notes")
