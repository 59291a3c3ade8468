"""Waiting without a slot (issue 24, docs/waits.md), against real worker processes.

A suspended job holds no worker slot: with one worker at concurrency 1, another shop's job
runs while it waits. Sleeps and event waits resume; a wait's own timeout fails the job naming
the wait; a handler killed between steps resumes without running a recorded step again; a
FLUSHALL while jobs wait loses none of them. Timing bounds here are generous on purpose: what
is asserted is the order of events (the short job ran while the long one waited), never speed.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

from arq.connections import ArqRedis
from databases import Database

from service import store
from service.jobs_client import JobsClient
from tests.support.jobs import add_job, make_shop, wait_for_status
from tests.support.processes import start_worker
from tests.support.wait_jobs import wait_jobs_command


async def wait_until_waiting(database: Database, job_id: uuid.UUID, timeout: float = 60) -> str:
    """Until the job is suspended (processing, no lease, a wait): what it waits for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = await database.fetch_one(
            "SELECT status, lease_owner, wait_for FROM jobs WHERE id = :id", {"id": job_id}
        )
        assert row is not None
        if row["status"] == "processing" and row["wait_for"] and row["lease_owner"] is None:
            return str(row["wait_for"])
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} never waited")


async def test_a_waiting_job_holds_no_slot(env, spawn, database: Database, redis: ArqRedis) -> None:
    sleepy = await make_shop(database, "sleepy.myshopify.com")
    busy = await make_shop(database, "busy.myshopify.com")
    start_worker(spawn, env, wrap=wait_jobs_command, worker_concurrency=1)
    napping = await add_job(database, redis, sleepy, {"seconds": 8}, "napper")
    assert await wait_until_waiting(database, napping) == "sleep"
    quick = await add_job(database, redis, busy, {"message": "while it sleeps"})
    done = await wait_for_status(database, quick, {"completed"}, timeout=30)
    nap = await store.get_job(database, napping)
    assert nap is not None and nap.status == "processing"  # still asleep: the slot was free
    assert nap.waiting is not None and nap.waiting["for"] == "sleep" and nap.waiting["until"]
    assert done.finished_at is not None and nap.wait_until is not None
    assert done.finished_at < nap.wait_until
    woke = await wait_for_status(database, napping, {"completed"}, timeout=60)
    assert woke.result == {"slept": 8, "run": 1}  # resumed: the run after a wait is no new start
    assert woke.attempts == 1  # a wait is not an attempt
    assert woke.finished_at is not None and woke.finished_at >= nap.wait_until


async def test_an_event_wakes_its_waiting_job(env, spawn, database: Database, redis) -> None:
    shop = await make_shop(database)
    other = await make_shop(database, "other-shop.myshopify.com")
    start_worker(spawn, env, wrap=wait_jobs_command)
    waiting = await add_job(database, redis, shop, {"name": "approved", "timeout": 600}, "listener")
    elsewhere = await add_job(
        database, redis, other, {"name": "approved", "timeout": 600}, "listener"
    )
    assert await wait_until_waiting(database, waiting) == "event"
    assert await wait_until_waiting(database, elsewhere) == "event"
    client = JobsClient(database, redis, {})
    assert await client.send_event(shop.domain, "approved", {"by": "merchant"}) == 1
    job = await wait_for_status(database, waiting, {"completed"}, timeout=30)
    assert job.result == {"payload": {"by": "merchant"}}
    # The other shop's job waits on: an event belongs to one shop.
    untouched = await store.get_job(database, elsewhere)
    assert untouched is not None and untouched.status == "processing" and untouched.waiting


async def test_an_event_sent_before_the_wait_is_not_missed(env, spawn, database, redis) -> None:
    shop = await make_shop(database)
    job_id = await add_job(database, redis, shop, {"name": "early", "timeout": 600}, "listener")
    client = JobsClient(database, redis, {})
    assert await client.send_event(shop.domain, "early", [1, 2, 3]) == 0  # nobody waits yet
    start_worker(spawn, env, wrap=wait_jobs_command)
    job = await wait_for_status(database, job_id, {"completed"}, timeout=30)
    assert job.result == {"payload": [1, 2, 3]}


async def test_a_wait_past_its_timeout_fails_naming_it(env, spawn, database, redis) -> None:
    shop = await make_shop(database)
    start_worker(spawn, env, wrap=wait_jobs_command)
    job_id = await add_job(database, redis, shop, {"name": "never", "timeout": 1}, "listener")
    job = await wait_for_status(database, job_id, {"failed"}, timeout=60)
    assert job.error_message is not None and "Timed out waiting for event 'never'" in (
        job.error_message
    )
    assert job.error_public


async def test_a_handler_killed_between_steps_repeats_no_recorded_step(
    env, spawn, database: Database, redis, tmp_path: Path
) -> None:
    shop = await make_shop(database)
    log = tmp_path / "steps.log"
    first = start_worker(spawn, env, wrap=wait_jobs_command, job_lease_seconds=1)
    job_id = await add_job(
        database, redis, shop, {"log": str(log), "stall_after_second": True}, "three_steps"
    )
    deadline = time.monotonic() + 60
    while not (log.exists() and "two" in log.read_text()):
        assert time.monotonic() < deadline, "the second step never ran"
        await asyncio.sleep(0.02)
    first.signal(signal.SIGKILL)
    first.wait(10)
    start_worker(spawn, env, wrap=wait_jobs_command, job_lease_seconds=1)
    job = await wait_for_status(database, job_id, {"completed"}, timeout=60)
    assert job.result == {"steps": ["ONE", "TWO", "THREE"]}
    lines = log.read_text().split()
    ran = Counter(lines[0::2])
    assert ran == {"one": 1, "two": 1, "three": 1}  # the second run skipped what was recorded
    assert lines[-1] == "2"  # the third step ran in the second run
    steps = await store.steps_of(database, job_id)
    assert steps == {"step:one": "ONE", "step:two": "TWO", "step:three": "THREE"}


async def test_flushall_while_jobs_wait_loses_none(env, spawn, database, redis) -> None:
    shop = await make_shop(database)
    start_worker(
        spawn,
        env,
        wrap=wait_jobs_command,
        worker_concurrency=4,
        reconcile_after_seconds=1,
        reconcile_interval_seconds=1,
    )
    ids = [await add_job(database, redis, shop, {"seconds": 3}, "napper") for _ in range(6)]
    for job_id in ids:
        assert await wait_until_waiting(database, job_id) == "sleep"
    await redis.flushall()  # every waiting job's queue entry is gone
    for job_id in ids:
        job = await wait_for_status(database, job_id, {"completed"}, timeout=90)
        assert job.result is not None and job.result["slept"] == 3


async def test_every_reader_shows_the_wait_and_cancel_ends_it(env, spawn, database, redis) -> None:
    shop = await make_shop(database)
    start_worker(spawn, env, wrap=wait_jobs_command)
    job_id = await add_job(database, redis, shop, {"seconds": 600}, "napper")
    assert await wait_until_waiting(database, job_id) == "sleep"
    client = JobsClient(database, redis, {})
    view = await client.get(job_id)
    assert view is not None and view.status == "processing"
    assert view.waiting is not None and view.waiting["for"] == "sleep"
    assert view.waiting["until"] is not None  # an ISO time, about ten minutes on
    assert await client.cancel(job_id)
    cancelled = await client.get(job_id)
    assert cancelled is not None and cancelled.status == "failed" and cancelled.waiting is None
    assert cancelled.error == "Cancelled"


async def test_a_job_older_than_its_maximum_age_fails_at_its_next_run(
    env, spawn, database, redis
) -> None:
    shop = await make_shop(database)
    start_worker(spawn, env, wrap=wait_jobs_command, job_max_age_seconds=2)
    job_id = await add_job(database, redis, shop, {"seconds": 3}, "napper")
    job = await wait_for_status(database, job_id, {"failed"}, timeout=60)
    assert job.error_message is not None and "JOB_MAX_AGE_SECONDS" in job.error_message
