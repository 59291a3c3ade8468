"""Jobs started by the app itself (service/jobs_client.py): every refusal an exception with no
row left, delays held by the queue, cancels of waiting and running jobs, against a real worker."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from arq.connections import ArqRedis
from databases import Database

from jobs.registry import job_types
from service import queue, store
from service.core.settings import Settings
from service.jobs_client import (
    InvalidInput,
    JobsClient,
    QueueUnavailable,
    ShopNotInstalled,
    UnknownJobType,
)
from tests.support.jobs import make_shop, wait_for_status
from tests.support.net import free_port
from tests.support.processes import Spawn, start_worker
from tests.support.queue_entries import queued_score


@pytest.fixture
def client(settings: Settings, database: Database, redis: ArqRedis) -> JobsClient:
    return JobsClient(database, redis, job_types(settings))


async def _rows(database: Database) -> int:
    return await database.fetch_val("SELECT count(*) FROM jobs")


async def test_every_refusal_is_its_exception_and_leaves_no_row(
    client: JobsClient, settings: Settings, database: Database
) -> None:
    await make_shop(database)
    await make_shop(database, "gone-shop.myshopify.com")
    await store.mark_shop_uninstalled(database, "gone-shop.myshopify.com")
    shop = "test-shop.myshopify.com"

    with pytest.raises(UnknownJobType):
        await client.enqueue("no_such_type", shop=shop, input={})
    with pytest.raises(InvalidInput) as invalid:
        await client.enqueue("echo", shop=shop, input={"message": 5, "sleep_ms": -1})
    assert {d["field"] for d in invalid.value.details} == {"input.message", "input.sleep_ms"}
    with pytest.raises(InvalidInput):
        await client.enqueue("echo", shop=shop, input={"message": "x"}, delay=-3)
    with pytest.raises(InvalidInput):  # as a delay over 366 days: surely a unit mistake
        await client.enqueue(
            "echo", shop=shop, input={"message": "x"}, run_at=datetime(9999, 1, 1, tzinfo=UTC)
        )
    with pytest.raises(ShopNotInstalled):
        await client.enqueue("echo", shop="nobody.myshopify.com", input={"message": "x"})
    with pytest.raises(ShopNotInstalled):
        await client.enqueue("echo", shop="gone-shop.myshopify.com", input={"message": "x"})

    dead = queue.connect(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    try:
        offline = JobsClient(database, dead, job_types(settings))
        with pytest.raises(QueueUnavailable):
            await offline.enqueue("echo", shop=shop, input={"message": "x"})
        with pytest.raises(QueueUnavailable):
            await offline.enqueue("echo", shop=shop, input={"message": "x"}, delay=5)
    finally:
        await dead.aclose()
    assert await _rows(database) == 0


async def test_enqueued_jobs_run_and_idempotency_keys_hold(
    client: JobsClient, database: Database, spawn: Spawn, env: dict[str, str]
) -> None:
    await make_shop(database)
    shop = "test-shop.myshopify.com"
    first = await client.enqueue("echo", shop=shop, input={"message": "hi"}, idempotency_key="k1")
    again = await client.enqueue("echo", shop=shop, input={"message": "hi"}, idempotency_key="k1")
    assert first.created and not again.created and again.id == first.id
    written = await client.enqueue(  # the domain as a merchant may type it: the same shop
        "echo",
        shop=" https://Test-Shop.myshopify.com/",
        input={"message": "hi"},
        idempotency_key="k1",
    )
    assert written.id == first.id
    with pytest.raises(ShopNotInstalled):
        await client.enqueue("echo", shop="test-shop", input={"message": "hi"})
    assert first.status == "pending" and first.run_at is None
    start_worker(spawn, env)
    job = await wait_for_status(database, first.id, {"completed"})
    assert job.result == {"message": "hi"} and job.source == "app"
    assert await _rows(database) == 1


async def test_a_delayed_job_waits_until_due_and_can_be_cancelled(
    client: JobsClient, database: Database, redis: ArqRedis, spawn: Spawn, env: dict[str, str]
) -> None:
    await make_shop(database)
    shop = "test-shop.myshopify.com"
    far = await client.enqueue("echo", shop=shop, input={"message": "far"}, delay=3600)
    soon = await client.enqueue("echo", shop=shop, input={"message": "soon"}, delay=1.5)
    assert far.run_at is not None and soon.run_at is not None
    # The queue entry's score is the due time.
    assert await queued_score(redis, str(far.id)) >= far.run_at.timestamp() * 1000
    start_worker(spawn, env)
    now = await client.enqueue("echo", shop=shop, input={"message": "now"})
    await wait_for_status(database, now.id, {"completed"})
    waiting = await store.get_job(database, far.id)
    assert waiting.status == "pending" and waiting.run_at == far.run_at and waiting.attempts == 0

    ran = await wait_for_status(database, soon.id, {"completed"})
    assert ran.started_at >= soon.run_at  # never early

    assert await client.cancel(far.id)
    cancelled = await store.get_job(database, far.id)
    assert (cancelled.status, cancelled.error_message) == ("failed", "Cancelled")
    assert not await client.cancel(far.id)  # final now
    assert not await client.cancel(uuid.uuid4())


async def test_cancelling_a_running_job_stops_its_handler(
    client: JobsClient, database: Database, spawn: Spawn, env: dict[str, str]
) -> None:
    await make_shop(database)
    shop = "test-shop.myshopify.com"
    worker = start_worker(spawn, env, job_lease_seconds=30)
    # An hour-long run: only the cancel can end it within the wait below.
    long = await client.enqueue("echo", shop=shop, input={"message": "x", "sleep_ms": 3_600_000})
    await wait_for_status(database, long.id, {"processing"})
    assert await client.cancel(long.id)
    job = await wait_for_status(database, long.id, {"failed"})
    assert job.error_message == "Cancelled"
    # The handler was stopped by the cancel message (not a lease renewal: 30 s away), the
    # worker goes on, and the stopped run recorded nothing over the cancel.
    for _ in range(100):
        if "cancelled: stopping its handler" in worker.output:
            break
        await asyncio.sleep(0.1)
    assert f"job {long.id} cancelled: stopping its handler" in worker.output
    after = await client.enqueue("echo", shop=shop, input={"message": "after"})
    await wait_for_status(database, after.id, {"completed"})
    final = await store.get_job(database, long.id)
    assert (final.status, final.error_message, final.lease_owner) == ("failed", "Cancelled", None)


async def test_an_int_beyond_64_bits_is_invalid_input(
    client: JobsClient, database: Database
) -> None:
    """pydantic's `int` takes any Python int, but JSON encoding (orjson) stops at 64 bits:
    before, the app's call got orjson's bare TypeError instead of InvalidInput."""
    await make_shop(database)
    with pytest.raises(InvalidInput) as invalid:
        await client.enqueue(
            "customers_data_request",
            shop="test-shop.myshopify.com",
            input={"customer_id": "1", "orders_requested": [2**64]},
        )
    assert invalid.value.details == [
        {"field": "input", "message": "Integer exceeds 64-bit range", "type": "int_too_big"}
    ]
    assert await _rows(database) == 0
