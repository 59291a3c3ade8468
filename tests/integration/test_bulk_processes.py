"""Bulk operations with real processes: emulator, web (the finish webhook), workers.

An `inventory_report` job shows its bulk operation's progress through the status endpoint;
its worker is SIGKILLed while it waits, and the next worker resumes the same operation
(Shopify ran one operation, not two) and completes the report.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from datetime import datetime
from typing import Any

import httpx
import pytest
from databases import Database

from service import store
from service.jobs_client import JobsClient
from shopify_emulator.catalogue import build
from tests.support.jobs import add_job, wait_for_status
from tests.support.net import free_port, wait_for_http
from tests.support.processes import start_worker, web_command

SHOP = "bulk-e2e.myshopify.com"
TOKEN = "shpat_bulk_e2e"
CATALOGUE = {"products": 30, "max_variants": 8, "seed": 4}
# Long enough for the test to see the operation running and kill its worker meanwhile.
RUN_SECONDS = 8


@pytest.fixture
async def stack(env: dict[str, str], spawn, database: Database, redis):
    return _start(env, spawn, finish_webhook=True)


@pytest.fixture
async def unsubscribed_stack(env: dict[str, str], spawn, database: Database, redis):
    """A shop whose app did not subscribe to `bulk_operations/finish`: Shopify sends none."""
    return _start(env, spawn, finish_webhook=False)


def _start(env: dict[str, str], spawn, *, finish_webhook: bool) -> tuple[str, dict[str, str]]:
    web_port, shopify_port = free_port(), free_port()
    web_url, shopify_url = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{shopify_port}"
    stack_env = {**env, "SHOPIFY_APP_URL": web_url, "SHOPIFY_ADMIN_URL": shopify_url}
    spawn(
        [
            sys.executable, "-m", "shopify_emulator",
            "--port", str(shopify_port),
            "--app-url", web_url,
            "--api-key", env["SHOPIFY_API_KEY"],
            "--api-secret", env["SHOPIFY_API_SECRET"],
            "--shop", f"{SHOP}={TOKEN}",
            "--products", str(CATALOGUE["products"]),
            "--max-variants", str(CATALOGUE["max_variants"]),
            "--seed", str(CATALOGUE["seed"]),
            "--bulk-run-seconds", str(RUN_SECONDS),
            *(["--webhook-topic", "bulk_operations/finish"] if finish_webhook else []),
        ],
        stack_env,
        "shopify",
    )  # fmt: skip
    spawn(web_command(web_port), stack_env, "web")
    wait_for_http(f"{web_url}/healthz")
    wait_for_http(f"{shopify_url}/_emulator/stats")
    return shopify_url, stack_env


async def test_killed_worker_resumes_the_same_bulk_operation(
    stack, spawn, database: Database, redis
) -> None:
    shopify_url, stack_env = stack
    shop = await store.upsert_shop(database, SHOP, TOKEN, "read_products")
    first = start_worker(spawn, stack_env)
    job_id = await add_job(database, redis, shop, {}, "inventory_report")
    async with httpx.AsyncClient(base_url=shopify_url) as storefront:
        # The job waits for its operation, as the app proxy's status endpoint shows.
        deadline = time.monotonic() + 60
        while True:
            status = (
                await storefront.get("/apps/jobs/status", params={"jobId": str(job_id)})
            ).json()
            if status.get("waiting") == {"for": "bulk_operation", "until": None}:
                break  # suspended on its operation: no worker slot held
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.05)
        operation_id = await store.bulk_operation_of(database, job_id)
        assert operation_id is not None
        first.signal(signal.SIGKILL)
        first.wait(10)

        start_worker(spawn, stack_env)
        job = await wait_for_status(database, job_id, {"completed", "failed"}, timeout=90)
        assert job.status == "completed", job.error_message
        ops = (await storefront.get("/_emulator/bulk")).json()
        deliveries = (await storefront.get("/_emulator/webhooks")).json()
    assert [o["id"] for o in ops] == [operation_id]  # resumed, not started again
    catalogue = list(build(**CATALOGUE).values())
    variants = [v for p in catalogue for v in p.variants]
    assert job.result is not None
    assert job.result["products"] == len(catalogue)
    assert job.result["variants"] == len(variants)
    assert job.result["totalInventory"] == sum(v.inventory_quantity for v in variants)
    assert job.result["bulkOperationId"] == operation_id
    assert job.attempts == 1  # one attempt however many runs: a wait is not an attempt
    # The emulator told the app the operation finished, and the app took the webhook.
    [finish] = [d for d in deliveries if d["topic"] == "bulk_operations/finish"]
    assert finish["delivered"] and finish["attempts"] == [{"status": 200}]
    event = await database.fetch_one(
        "SELECT topic FROM webhook_events WHERE topic = 'bulk_operations/finish'"
    )
    assert event is not None


async def _operations(shopify_url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=shopify_url) as emulator:
        return list((await emulator.get("/_emulator/bulk")).json())


async def test_a_report_waiting_on_shopify_frees_the_worker_and_wakes_on_the_webhook(
    stack, spawn, database: Database, redis
) -> None:
    """One worker, one slot: another shop's job runs while the report waits for Shopify, and
    the report completes soon after its operation ends (woken by the finish webhook)."""
    shopify_url, stack_env = stack
    shop = await store.upsert_shop(database, SHOP, TOKEN, "read_products")
    other = await store.upsert_shop(database, "other-bulk.myshopify.com", "shpat_x", "")
    start_worker(spawn, stack_env, worker_concurrency=1)
    report = await add_job(database, redis, shop, {}, "inventory_report")
    deadline = time.monotonic() + 60
    while (job := await store.get_job(database, report)) is None or job.waiting is None:
        assert time.monotonic() < deadline, "the report never waited"
        await asyncio.sleep(0.05)
    assert job.waiting == {"for": "bulk_operation", "until": None}
    quick = await add_job(database, redis, other, {"message": "meanwhile"})
    done = await wait_for_status(database, quick, {"completed"}, timeout=30)
    [operation] = await _operations(shopify_url)
    assert operation["status"] == "RUNNING"  # the quick job ran while Shopify worked
    assert done.finished_at is not None
    finished = await wait_for_status(database, report, {"completed"}, timeout=90)
    [operation] = await _operations(shopify_url)
    assert operation["status"] == "COMPLETED"
    assert finished.finished_at is not None
    ended = datetime.fromisoformat(operation["completedAt"])
    # It read the finished operation's result. How soon after the operation's end it resumes
    # (within 1 s of the webhook) is measured by `make bench`'s waits scenario, not timed here.
    assert finished.finished_at >= ended


async def test_without_the_finish_webhook_the_poller_wakes_the_report_without_running_it(
    unsubscribed_stack, spawn, database: Database, redis
) -> None:
    """No webhook will say the operation ended, so it is polled (backoff from 1 s) while the
    report waits: by the workers' poller, not by running the report again. The report runs
    twice however many polls the operation took: once to start it and suspend, once to read
    the result after the poller woke it."""
    shopify_url, stack_env = unsubscribed_stack
    shop = await store.upsert_shop(database, SHOP, TOKEN, "read_products")
    worker = start_worker(spawn, stack_env, worker_concurrency=1)
    report = await add_job(database, redis, shop, {}, "inventory_report")
    finished = await wait_for_status(database, report, {"completed", "failed"}, timeout=90)
    assert finished.status == "completed", finished.error_message
    [operation] = await _operations(shopify_url)
    assert operation["status"] == "COMPLETED"
    assert finished.finished_at is not None
    assert finished.finished_at >= datetime.fromisoformat(operation["completedAt"])
    async with httpx.AsyncClient(base_url=shopify_url) as emulator:
        requests = (await emulator.get("/_emulator/stats")).json()["shops"][SHOP]["requests"]
    runs = re.findall(rf"job {report} type=inventory_report \S+ started attempt=", worker.output)
    # The operation ran RUN_SECONDS: polled (each poll a request to the Admin API, beside the
    # report's own three at most: look for a running one, start, read it back), while the
    # report started twice only. No count of polls beyond one is asked: a slow machine polls
    # less often within the operation's RUN_SECONDS.
    assert requests >= 4, requests
    assert len(runs) == 2, worker.output[-3000:]


async def test_cancelling_a_waiting_report_cancels_its_bulk_operation(
    stack, spawn, database: Database, redis
) -> None:
    shopify_url, stack_env = stack
    shop = await store.upsert_shop(database, SHOP, TOKEN, "read_products")
    start_worker(spawn, stack_env)
    report = await add_job(database, redis, shop, {}, "inventory_report")
    deadline = time.monotonic() + 60
    while (job := await store.get_job(database, report)) is None or job.waiting is None:
        assert time.monotonic() < deadline, "the report never waited"
        await asyncio.sleep(0.05)
    assert await JobsClient(database, redis, {}).cancel(report)
    cancelled = await store.get_job(database, report)
    assert cancelled is not None and cancelled.status == "failed"
    assert cancelled.error_message == "Cancelled"
    deadline = time.monotonic() + 30
    while (operation := (await _operations(shopify_url))[0])["status"] != "CANCELED":
        assert operation["status"] in ("RUNNING", "CANCELING"), operation  # not completed
        assert time.monotonic() < deadline, operation
        await asyncio.sleep(0.1)
