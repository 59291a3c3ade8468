"""One job, the same view on every reader (service/job_views.py): the storefront's
/proxy/status, the merchant API's GET /api/jobs/{id}, the dashboard and JobsClient.get show
the same status, progress and batch counts, and why a pending job waits (docs/your-app.md)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from arq.connections import ArqRedis
from databases import Database
from pydantic import SecretStr

from jobs.registry import job_types
from service import queue
from service.app import create_app
from service.core.settings import Settings
from service.jobs_client import JobsClient
from service.queue.keys import BLOCKED_SHOP
from service.shopify.proxy_url import signed_proxy_url
from tests.integration.test_embedded_admin import ALPINE, bearer, token
from tests.support.config import TEST_SECRET
from tests.support.jobs import add_job, make_shop, wait_for_status
from tests.support.processes import start_worker

AUTH = ("admin", "pw-for-tests")


@pytest.fixture
async def readers(
    settings: Settings, database: Database, redis: ArqRedis, emulator
) -> AsyncIterator[httpx.AsyncClient]:
    shopify = emulator(shops={ALPINE: "shpat_test"})
    configured = settings.model_copy(
        update={
            "shopify_admin_url": shopify.url,
            "dashboard_username": "admin",
            "dashboard_password": SecretStr("pw-for-tests"),
        }
    )
    app = create_app(configured)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


async def read_everywhere(
    client: httpx.AsyncClient, settings: Settings, database: Database, redis, job_id
) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    """The job as each reader shows it: {reader: {"status", "progress", "batch", "waiting"}}."""
    proxy_url = signed_proxy_url(
        "", f"/proxy/status?jobId={job_id}", shop=ALPINE, secret=TEST_SECRET,
        timestamp=int(time.time()),
    )  # fmt: skip
    storefront = (await client.get(proxy_url)).json()
    merchant = (await client.get(f"/api/jobs/{job_id}", headers=bearer(token()))).json()
    view = await JobsClient(database, redis, job_types(settings)).get(job_id)
    assert view is not None
    page = (await client.get(f"/admin/jobs/{job_id}", auth=AUTH)).text
    progress = re.search(r'<span id="progress">(\d+)%</span>', page)
    waiting = re.search(r'<dd id="waiting">for ([a-z ]+)', page)
    batch = re.search(r'<dd id="batch">(\d+) children: (\d+) completed, (\d+) failed', page)
    return {
        "storefront": {
            "status": storefront["status"],
            "progress": storefront["progress"],
            "batch": storefront.get("batch"),
            "waiting": storefront.get("waiting"),
        },
        "merchant": {k: merchant.get(k) for k in ("status", "progress", "batch", "waiting")},
        "client": {
            "status": view.status,
            "progress": view.progress,
            "batch": view.children,
            "waiting": view.waiting,
        },
        "dashboard": {
            "progress": int(progress.group(1)) if progress else None,
            "waiting": waiting.group(1).strip().replace(" ", "_") if waiting else None,
            "batch": batch.groups() if batch else None,
            "result": 'id="result"' in page,
        },
    }


async def _insert(database: Database, shop_id: int, **fields) -> uuid.UUID:  # type: ignore[no-untyped-def]
    job_id = uuid.uuid4()
    columns = {"id": job_id, "shop_id": shop_id, "type": "echo", "input": "{}", **fields}
    names = ", ".join(columns)
    values = ", ".join(
        f"CAST(:{k} AS jsonb)" if k in ("input", "result", "batch") else f":{k}" for k in columns
    )
    await database.execute(f"INSERT INTO jobs ({names}) VALUES ({values})", columns)
    return job_id


async def test_a_batch_parent_reads_the_same_everywhere(
    readers, settings: Settings, database: Database, redis: ArqRedis
) -> None:
    shop = await make_shop(database, ALPINE)
    parent = await _insert(
        database, shop.id, status="processing", source="proxy", progress=0,
        progress_message="waiting for its batch",
        batch=orjson.dumps({"on_complete": None, "fail_parent": False}).decode(),
        result=orjson.dumps({"pages": 1}).decode(),  # the handler's return, not yet the result
    )  # fmt: skip
    for status in ("completed", "completed", "failed", "pending"):
        await _insert(database, shop.id, status=status, parent_id=parent, source="job")

    seen = await read_everywhere(readers, settings, database, redis, parent)
    for reader in ("storefront", "merchant", "client"):
        assert seen[reader]["status"] == "processing", reader
        assert seen[reader]["progress"] == 75, (reader, seen[reader])
        batch = seen[reader]["batch"]
        assert batch is not None, reader
        assert (batch["total"], batch["completed"], batch["failed"], batch["pending"]) == (
            4, 2, 1, 1,
        ), reader  # fmt: skip
    assert seen["dashboard"]["progress"] == 75
    assert seen["dashboard"]["batch"] == ("4", "2", "1")
    assert seen["dashboard"]["result"] is False  # no Result while it is still processing


async def test_a_paused_shops_job_says_why_everywhere(
    readers, settings: Settings, database: Database, redis: ArqRedis
) -> None:
    shop = await make_shop(database, ALPINE)
    job_id = await _insert(database, shop.id, status="pending", source="proxy")
    await queue.enqueue(redis, "echo", str(job_id), shop=shop.domain)
    await queue.pause_shop(redis, shop.domain)
    seen = await read_everywhere(readers, settings, database, redis, job_id)
    for reader in ("storefront", "merchant", "client"):
        assert seen[reader]["waiting"] == {"for": "paused", "until": None}, reader
    assert seen["dashboard"]["waiting"] == "paused"


async def test_a_capped_job_and_a_later_one_say_why(
    readers, settings: Settings, database: Database, redis: ArqRedis
) -> None:
    shop = await make_shop(database, ALPINE)
    held = await _insert(database, shop.id, status="pending", source="proxy")
    await redis.hset(BLOCKED_SHOP, str(held), shop.domain)  # as the take holds one back
    seen = await read_everywhere(readers, settings, database, redis, held)
    assert seen["merchant"]["waiting"] == {"for": "concurrency_cap", "until": None}
    assert seen["storefront"]["waiting"] == seen["merchant"]["waiting"]
    later = await _insert(database, shop.id, status="pending", source="proxy", run_at=_in(3600))
    seen = await read_everywhere(readers, settings, database, redis, later)
    assert seen["client"]["waiting"]["for"] == "delayed"
    assert seen["client"]["waiting"] == seen["merchant"]["waiting"] == seen["storefront"]["waiting"]


def _in(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def test_the_real_worker_says_rate_limit_and_shop_cap(
    env: dict[str, str], spawn, settings: Settings, database: Database, redis: ArqRedis
) -> None:
    """A worker that defers a job (the global rate limit) or cannot start it (the shop's cap)
    leaves readers able to say so."""
    start_worker(
        spawn, env, rate_limit_max=2, rate_limit_window_seconds=30, shop_concurrency_limit=1,
        worker_concurrency=4,
    )  # fmt: skip
    busy = await make_shop(database, "busy.myshopify.com")
    other = await make_shop(database, "other.myshopify.com")
    client = JobsClient(database, redis, job_types(settings))
    running = await add_job(database, redis, busy, {"message": "long", "sleep_ms": 8000})
    await wait_for_status(database, running, {"processing"})
    capped = await add_job(database, redis, busy, {"message": "capped"})
    first = await add_job(database, redis, other, {"message": "uses the 2nd start"})
    await wait_for_status(database, first, {"completed"})
    limited = await add_job(database, redis, other, {"message": "over the rate"})

    deadline = time.monotonic() + 15
    views: dict[str, object] = {}
    while time.monotonic() < deadline:
        capped_view, limited_view = await client.get(capped), await client.get(limited)
        assert capped_view is not None and limited_view is not None
        views = {"capped": capped_view.waiting, "limited": limited_view.waiting}
        if views["capped"] and views["limited"]:
            break
        await asyncio.sleep(0.2)
    assert views["capped"] == {"for": "shop_cap", "until": None}, views
    limited_wait = views["limited"]
    assert isinstance(limited_wait, dict) and limited_wait["for"] == "rate_limit", views
    assert limited_wait["until"] is not None and limited_wait["until"] > _in(0).isoformat()
