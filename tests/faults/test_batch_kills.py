"""Fault suite: SIGKILL lands on a batch parent half-way through its `enqueue_batch` calls, and
on a batch's follow-up while it runs. After a restart, every child exists once and runs to
completion once, the parent ends once with the right counts, and the follow-up exists and
completes once. The kills are made to land by the handlers themselves (their first run waits
for ever at a known point: tests/support/batch_jobs.py), whatever the machine's speed."""

from __future__ import annotations

import asyncio
import re
import signal
import uuid
from collections import Counter

import pytest
from arq.connections import ArqRedis
from arq.constants import job_key_prefix
from databases import Database

from service import store
from service.core.settings import Settings
from service.jobs_client import JobsClient
from tests.support.batch_jobs import batch_jobs_command, job_types
from tests.support.faults import wait_until
from tests.support.jobs import make_shop, wait_for_status
from tests.support.net import free_port
from tests.support.processes import Process, Spawn, start_worker
from tests.support.queue_entries import drop_entry, queue_entries

SHOP = "test-shop.myshopify.com"
COMPLETED_LINE = re.compile(r"job ([0-9a-f-]{36}) type=(\S+) shop=\S+ completed in")


@pytest.fixture
def client(settings: Settings, database: Database, redis: ArqRedis) -> JobsClient:
    return JobsClient(database, redis, job_types(settings))


def _worker(spawn: Spawn, env: dict[str, str]) -> Process:
    return start_worker(
        spawn,
        {**env, "WORKER_HEALTH_PORT": str(free_port())},
        wrap=batch_jobs_command,
        worker_concurrency=4,
        job_lease_seconds=2,
        reconcile_after_seconds=1,
        reconcile_interval_seconds=1,
    )


async def _holder(database: Database, job_id: uuid.UUID, workers: list[Process]) -> Process:
    """The worker process whose lease holds `job_id` (its owner names the pid)."""
    owner = await database.fetch_val("SELECT lease_owner FROM jobs WHERE id = :id", {"id": job_id})
    assert owner, f"job {job_id} is not held"
    pid = int(owner.split(":")[1])
    return next(w for w in workers if w.popen.pid == pid)


def _completions(workers: list[Process]) -> Counter[str]:
    """How many runs each job id completed, from every worker's log (the killed ones too)."""
    return Counter(m.group(1) for w in workers for m in COMPLETED_LINE.finditer(w.output))


async def _nothing_left(database: Database, redis: ArqRedis) -> None:
    unfinished = await database.fetch_all(
        "SELECT id, type, status FROM jobs WHERE status NOT IN ('completed', 'failed') LIMIT 5"
    )
    assert not unfinished, [tuple(r._mapping.values()) for r in unfinished]
    try:
        await wait_until(lambda: _queue_empty(redis), 30, "every queue entry finished")
    except AssertionError:
        left = await _job_entries(redis)
        rows = await database.fetch_all(
            "SELECT id, type, status, attempts, parent_id IS NULL AS top FROM jobs"
            " WHERE id::text = ANY(:ids)",
            {"ids": list(left)[:20]},
        )
        raise AssertionError(
            f"{len(left)} queue entries left: {left[:5]} "
            f"{[tuple(r._mapping.values()) for r in rows]}"
        ) from None


async def _job_entries(redis: ArqRedis) -> list[str]:
    """The queue's entries for jobs (arq's cron ticks, queued ahead, left out)."""
    return [key for key in await queue_entries(redis) if not key.startswith("cron:")]


async def _queue_empty(redis: ArqRedis) -> bool:
    return not await _job_entries(redis)


async def test_a_parent_killed_half_way_through_its_batch_adds_each_child_once(
    client: JobsClient, database: Database, redis: ArqRedis, spawn: Spawn, env: dict[str, str]
) -> None:
    await make_shop(database)
    children, pages, stall_after = 3000, 6, 3
    parent = await client.enqueue(
        "fan_out",
        shop=SHOP,
        input={
            "children": children,
            "pages": pages,
            "stall_after": stall_after,
            "sleep_ms": 5,
            "fail": [7, 2999],
        },
    )
    workers = [_worker(spawn, env) for _ in range(2)]
    per_page = children // pages

    async def stalled() -> bool:
        return (await store.batch_counts(database, parent.id))["total"] == stall_after * per_page

    await wait_until(stalled, 60, "the parent's first run added its first pages")
    victim = await _holder(database, parent.id, workers)
    victim.signal(signal.SIGKILL)
    await asyncio.to_thread(victim.wait, 10)
    workers.append(_worker(spawn, env))

    job = await wait_for_status(database, parent.id, {"completed", "failed"}, timeout=240)
    assert (job.status, job.attempts) == ("completed", 2)
    assert job.result == {"completed": children - 2, "failed": 2, "result": {"pages": pages}}
    counts = await store.batch_counts(database, parent.id)
    assert (counts["total"], counts["completed"], counts["failed"]) == (children, children - 2, 2)
    keys = await database.fetch_val(
        "SELECT count(DISTINCT idempotency_key) FROM jobs WHERE parent_id = :p", {"p": parent.id}
    )
    assert keys == children
    follow_ups = await database.fetch_all("SELECT id FROM jobs WHERE type = 'batch_done'")
    assert len(follow_ups) == 1
    follow_up = await wait_for_status(database, follow_ups[0]._mapping["id"], {"completed"})
    assert follow_up.result == {
        "parent_id": str(parent.id),
        "completed": children - 2,
        "failed": 2,
    }
    await _nothing_left(database, redis)
    runs = _completions(workers)
    twice = {job_id: n for job_id, n in runs.items() if n > 1}
    assert not twice, f"runs completed more than once: {twice}"
    assert runs[str(follow_up.id)] == 1


async def test_children_written_but_not_queued_when_the_parent_died_are_queued_by_its_next_run(
    client: JobsClient, database: Database, redis: ArqRedis, spawn: Spawn, env: dict[str, str]
) -> None:
    """A kill (or a shutdown's cancel) between a chunk's INSERT and its Redis pipeline leaves
    children written but never queued. The parent's next run finds them written already; it
    must queue them, not leave them to the reconciler (held off here: RECONCILE_AFTER_SECONDS
    is an hour), which made the whole batch wait RECONCILE_AFTER_SECONDS and more."""
    await make_shop(database)
    children, pages = 400, 4
    parent = await client.enqueue(
        "fan_out",
        shop=SHOP,
        input={"children": children, "pages": pages, "stall_after": 2, "sleep_ms": 50},
    )
    held_off = {**env, "RECONCILE_AFTER_SECONDS": "3600"}
    first = start_worker(spawn, held_off, wrap=batch_jobs_command, worker_concurrency=2)

    async def stalled() -> bool:
        return (await store.batch_counts(database, parent.id))["total"] == 2 * children // pages

    await wait_until(stalled, 60, "the parent's first run added its first pages")
    first.signal(signal.SIGKILL)
    await asyncio.to_thread(first.wait, 10)
    # As if the kill had landed between the second page's INSERT and its Redis pipeline.
    unqueued = await database.fetch_all(
        "SELECT id FROM jobs WHERE parent_id = :p AND status = 'pending'"
        " AND idempotency_key LIKE :page",
        {"p": parent.id, "page": f"batch:{parent.id}:1__"},  # children 100 to 199
    )
    assert unqueued
    for row in unqueued:
        await drop_entry(redis, str(row._mapping["id"]))
        await redis.delete(job_key_prefix + str(row._mapping["id"]))
    second = start_worker(spawn, held_off, wrap=batch_jobs_command, worker_concurrency=8)

    job = await wait_for_status(database, parent.id, {"completed", "failed"}, timeout=60)
    assert (job.status, job.result["completed"]) == ("completed", children)
    # The batch's end queues its follow-up as the parent completes: wait for it, or it may
    # still be pending below on a slow machine.
    follow_ups = await database.fetch_all("SELECT id FROM jobs WHERE type = 'batch_done'")
    assert len(follow_ups) == 1
    await wait_for_status(database, follow_ups[0]._mapping["id"], {"completed"})
    await _nothing_left(database, redis)
    twice = {k: n for k, n in _completions([first, second]).items() if n > 1}
    assert not twice, twice


async def test_a_follow_up_killed_while_it_runs_completes_once(
    client: JobsClient, database: Database, redis: ArqRedis, spawn: Spawn, env: dict[str, str]
) -> None:
    await make_shop(database)
    parent = await client.enqueue(
        "fan_out", shop=SHOP, input={"children": 20, "follow_up_type": "stalling_done"}
    )
    workers = [_worker(spawn, env) for _ in range(2)]

    async def follow_up_running() -> bool:
        return bool(
            await database.fetch_val(
                "SELECT count(*) FROM jobs WHERE type = 'stalling_done' AND status = 'processing'"
                " AND lease_owner IS NOT NULL"
            )
        )

    await wait_until(follow_up_running, 60, "the follow-up runs")
    follow_up_id = await database.fetch_val("SELECT id FROM jobs WHERE type = 'stalling_done'")
    victim = await _holder(database, follow_up_id, workers)
    victim.signal(signal.SIGKILL)
    await asyncio.to_thread(victim.wait, 10)
    workers.append(_worker(spawn, env))

    follow_up = await wait_for_status(database, follow_up_id, {"completed", "failed"}, timeout=60)
    assert (follow_up.status, follow_up.attempts) == ("completed", 2)
    assert follow_up.result == {"parent_id": str(parent.id), "completed": 20, "failed": 0}
    job = await store.get_job(database, parent.id)
    assert (job.status, job.result["completed"]) == ("completed", 20)
    assert await database.fetch_val("SELECT count(*) FROM jobs WHERE type = 'stalling_done'") == 1
    await _nothing_left(database, redis)
    assert _completions(workers)[str(follow_up_id)] == 1
