"""Batches of children against real worker processes (store/batches.py): the parent ends only
with its last child, with counts read from the rows; its follow-up runs once; a SIGKILLed
worker loses and double-counts nothing; cancelling a parent cancels its children."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import httpx
import pytest
from arq.connections import ArqRedis
from databases import Database

from service import store
from service.core.settings import Settings
from service.intake import Source
from service.jobs_client import JobsClient
from tests.support.batch_jobs import batch_jobs_command, job_types
from tests.support.jobs import make_shop, wait_for_status
from tests.support.net import free_port
from tests.support.processes import Spawn, start_worker
from tests.support.proxy import proxy_url

SHOP = "test-shop.myshopify.com"


@pytest.fixture
def client(settings: Settings, database: Database, redis: ArqRedis) -> JobsClient:
    return JobsClient(database, redis, job_types(settings))


async def _children(database: Database, parent: uuid.UUID) -> dict[str, int]:
    return await store.batch_counts(database, parent)


async def _status(app_client: httpx.AsyncClient, job_id: uuid.UUID) -> dict:
    answer = await app_client.get(proxy_url("", f"/proxy/status?jobId={job_id}", shop=SHOP))
    assert answer.status_code == 200, answer.text
    return answer.json()


async def _all_public(database: Database, parent_id: object) -> bool:
    """Whether every child of `parent_id` may show its error (jobs.error_public)."""
    return bool(
        await database.fetch_val(
            "SELECT bool_and(error_public) FROM jobs WHERE parent_id = :p", {"p": parent_id}
        )
    )


async def test_a_batch_of_500_ends_with_its_last_child_and_survives_a_killed_worker(
    client: JobsClient,
    database: Database,
    app_client: httpx.AsyncClient,
    spawn: Spawn,
    env: dict[str, str],
) -> None:
    await make_shop(database)
    failing = [3, 77, 411]
    # Started as the storefront starts a job: /proxy/status shows it and its children.
    parent = await client.enqueue(
        "fan_out",
        shop=SHOP,
        input={"children": 500, "pages": 3, "sleep_ms": 100, "fail": failing},
        source=Source.PROXY,
    )
    workers = [
        start_worker(
            spawn,
            {**env, "WORKER_HEALTH_PORT": str(free_port())},
            wrap=batch_jobs_command,
            worker_concurrency=10,
        )
        for _ in range(2)
    ]
    # Partial progress, and the parent unfinished while any child is: watched to the end.
    partial = None
    killed = False
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        job = await store.get_job(database, parent.id)
        counts = await _children(database, parent.id)
        final = counts["completed"] + counts["failed"]
        if counts["total"] and final < counts["total"]:
            assert job.status == "processing", (job.status, counts)
        if 50 <= counts["completed"] and final < 500 and not killed:
            partial = await _status(app_client, parent.id)
            workers[0].signal(signal.SIGKILL)  # children run on it: their leases must lapse
            killed = True
        if job.status in ("completed", "failed"):
            break
        await asyncio.sleep(0.05)
    assert killed, "the batch ended before the kill: make the children slower"
    assert partial["status"] == "processing" and partial["batch"]["total"] == 500
    done = partial["batch"]["completed"] + partial["batch"]["failed"]
    assert 50 <= done < 500 and partial["progress"] == done * 100 // 500

    job = await wait_for_status(database, parent.id, {"completed"}, timeout=5)
    assert job.result == {"completed": 497, "failed": 3, "result": {"pages": 3}}
    counts = await _children(database, parent.id)
    assert (counts["total"], counts["completed"], counts["failed"]) == (500, 497, 3)
    failed = await database.fetch_all(
        "SELECT input->>'message' AS m FROM jobs WHERE parent_id = :p AND status = 'failed'",
        {"p": parent.id},
    )
    assert sorted(r._mapping["m"] for r in failed) == sorted(f"child {n}" for n in failing)
    # The follow-up: exactly one, with the batch's counts.
    follow_ups = await database.fetch_all("SELECT id FROM jobs WHERE type = 'batch_done'")
    assert len(follow_ups) == 1
    follow_up = await wait_for_status(database, follow_ups[0]._mapping["id"], {"completed"})
    assert follow_up.idempotency_key == f"batch:{parent.id}"
    assert follow_up.result == {"parent_id": str(parent.id), "completed": 497, "failed": 3}
    final = await _status(app_client, parent.id)
    assert final["status"] == "completed" and final["batch"]["completed"] == 497


async def test_a_parent_that_asks_fails_when_a_child_fails(
    client: JobsClient, database: Database, spawn: Spawn, env: dict[str, str]
) -> None:
    await make_shop(database)
    parent = await client.enqueue(
        "fan_out",
        shop=SHOP,
        input={"children": 5, "fail": [1], "fail_parent": True, "follow_up": False},
    )
    start_worker(spawn, env, wrap=batch_jobs_command)
    job = await wait_for_status(database, parent.id, {"completed", "failed"})
    assert (job.status, job.error_message) == ("failed", "1 of 5 children failed")
    assert job.shown_error == "1 of 5 children failed"  # the worker's own words: public
    assert job.result == {"completed": 4, "failed": 1, "result": {"pages": 1}}
    assert await database.fetch_val("SELECT count(*) FROM jobs WHERE type = 'batch_done'") == 0


async def test_echo_fans_out_its_children(
    client: JobsClient, database: Database, spawn: Spawn, env: dict[str, str]
) -> None:
    await make_shop(database)
    parent = await client.enqueue("echo", shop=SHOP, input={"message": "hi", "children": 20})
    start_worker(spawn, env, worker_concurrency=10)
    job = await wait_for_status(database, parent.id, {"completed"})
    assert job.result == {"completed": 20, "failed": 0, "result": {"message": "hi"}}
    messages = await database.fetch_all(
        "SELECT input->>'message' AS m FROM jobs WHERE parent_id = :p", {"p": parent.id}
    )
    assert sorted(r._mapping["m"] for r in messages) == sorted(f"hi #{n}" for n in range(1, 21))


async def test_cancelling_a_parent_cancels_its_unfinished_children(
    client: JobsClient, database: Database, spawn: Spawn, env: dict[str, str]
) -> None:
    await make_shop(database)
    # Hour-long children: only the cancel ends them.
    parent = await client.enqueue(
        "fan_out", shop=SHOP, input={"children": 50, "sleep_ms": 3_600_000}
    )
    start_worker(spawn, env, wrap=batch_jobs_command, worker_concurrency=5, job_lease_seconds=30)
    for _ in range(600):
        if (await _children(database, parent.id))["processing"] >= 4:
            break
        await asyncio.sleep(0.05)
    assert await client.cancel(parent.id)
    job = await store.get_job(database, parent.id)
    assert (job.status, job.error_message) == ("failed", "Cancelled")
    counts = await _children(database, parent.id)
    assert (counts["total"], counts["failed"]) == (50, 50)
    rows = await database.fetch_all(
        "SELECT DISTINCT error_message FROM jobs WHERE parent_id = :p", {"p": parent.id}
    )
    assert [r._mapping["error_message"] for r in rows] == ["Cancelled"]
    assert (job.shown_error, await _all_public(database, parent.id)) == ("Cancelled", True)
    # The running children's handlers were stopped: the worker's slots take new work.
    after = await client.enqueue("echo", shop=SHOP, input={"message": "after"})
    await wait_for_status(database, after.id, {"completed"})
    assert await database.fetch_val("SELECT count(*) FROM jobs WHERE type = 'batch_done'") == 0
    job = await store.get_job(database, parent.id)
    assert job.status == "failed" and job.error_message == "Cancelled"


async def test_a_handler_starts_a_job_for_its_shop(
    client: JobsClient, database: Database, spawn: Spawn, env: dict[str, str]
) -> None:
    await make_shop(database)
    parent = await client.enqueue("spawn_one", shop=SHOP, input={"message": "from a handler"})
    start_worker(spawn, env, wrap=batch_jobs_command)
    job = await wait_for_status(database, parent.id, {"completed"})
    spawned = await wait_for_status(database, uuid.UUID(job.result["spawned"]), {"completed"})
    assert spawned.result == {"message": "from a handler"} and spawned.source == "job"
    assert spawned.shop_id == job.shop_id and spawned.idempotency_key == f"from:{parent.id}"
    assert spawned.parent_id is None  # a job it started, not a child of a batch
