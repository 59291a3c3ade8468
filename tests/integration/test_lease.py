"""Lease renewal (jobs/worker/lease.py) against the real Postgres and Redis: a held lease is
stretched in both while the job runs; a lease another worker took over stops the run; one
renewal statement serves every job of the process."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from databases import Database

from jobs.worker import lease
from service import store
from tests.support.faults import wait_until
from tests.support.jobs import add_job, make_shop

# Renewed every second. Renewals are counted as they are seen, never timed: a slow machine
# only makes a test wait longer, and a lease left to lapse is waited out by Postgres' clock.
LEASE_SECONDS = 3.0
RENEWAL_SECONDS = LEASE_SECONDS / 3
RenewedValue = Callable[[], Awaitable[Any]]


def leases(database: Database, redis: ArqRedis, owner: str) -> lease.Leases:
    return lease.Leases(database, redis, owner, LEASE_SECONDS)


async def claimed_job(database: Database, redis: ArqRedis, owner: str) -> uuid.UUID:
    """A job claimed by `owner` for one lease, in Postgres and in Redis, as a worker holds it."""
    job_id = await add_job(database, redis, await make_shop(database), {"message": "x"})
    claims, _ = await store.claim_jobs(database, [job_id], owner, LEASE_SECONDS)
    assert [c.id for c in claims] == [job_id]
    await redis.set(in_progress_key_prefix + str(job_id), b"1", px=int(LEASE_SECONDS * 1000))
    return job_id


async def lease_left(database: Database, job_id: uuid.UUID) -> float:
    return float(
        await database.fetch_val(
            "SELECT extract(epoch FROM lease_expires_at - now()) FROM jobs WHERE id = :id",
            {"id": job_id},
        )
    )


async def lease_expiry(database: Database, job_id: uuid.UUID) -> datetime:
    return await database.fetch_val(
        "SELECT lease_expires_at FROM jobs WHERE id = :id", {"id": job_id}
    )


async def postgres_is_past(database: Database, moment: datetime) -> bool:
    return bool(await database.fetch_val("SELECT now() > :moment", {"moment": moment}))


async def renewals(read: RenewedValue, count: int, what: str, timeout: float = 60) -> None:
    """Until `read` (a lease's expiry, or a key's time to live) has gone up `count` times: each
    rise is one renewal, whenever it comes. The timeout only stops a test that would hang."""
    last = await read()
    seen = 0

    async def rose() -> bool:
        nonlocal last, seen
        value = await read()
        seen += value > last
        last = value
        return seen >= count

    await wait_until(rose, timeout, f"{count} renewals of {what}")


async def test_a_held_lease_outlives_itself_in_postgres_and_redis(
    database: Database, redis: ArqRedis
) -> None:
    job_id = await claimed_job(database, redis, "worker-a")
    claimed_until = await lease_expiry(database, job_id)
    key = in_progress_key_prefix + str(job_id)
    with leases(database, redis, "worker-a").held(str(job_id)):
        await asyncio.gather(
            renewals(partial(lease_expiry, database, job_id), 3, "the Postgres lease"),
            renewals(partial(redis.pttl, key), 3, "the in-progress key"),
        )
        # Three renewals, a third of a lease apart: the claim's own lease is over by now, and
        # both stores still hold the job for about one more.
        assert await postgres_is_past(database, claimed_until)
        assert 0 < await lease_left(database, job_id) <= LEASE_SECONDS
        assert 0 < await redis.pttl(key) <= LEASE_SECONDS * 1000
    job = await store.get_job(database, job_id)
    assert job is not None and (job.status, job.lease_owner) == ("processing", "worker-a")


async def test_renewal_stops_when_the_run_ends(database: Database, redis: ArqRedis) -> None:
    job_id = await claimed_job(database, redis, "worker-a")
    with leases(database, redis, "worker-a").held(str(job_id)):
        await renewals(partial(lease_expiry, database, job_id), 1, "the Postgres lease")
    ended_at = await lease_expiry(database, job_id)
    # Wait out the lease and one renewal more, by Postgres' clock: renewals still running would
    # have moved it four times.
    await wait_until(
        partial(postgres_is_past, database, ended_at + timedelta(seconds=RENEWAL_SECONDS)),
        60,
        "the lease's end",
    )
    assert await lease_expiry(database, job_id) == ended_at
    assert await lease_left(database, job_id) < 0
    assert not await redis.exists(in_progress_key_prefix + str(job_id))


async def test_a_lease_taken_over_by_another_worker_cancels_the_run(
    database: Database, redis: ArqRedis, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = await claimed_job(database, redis, "worker-a")

    async def run() -> None:
        with leases(database, redis, "worker-a").held(str(job_id)):
            await asyncio.sleep(30)

    caplog.set_level(logging.WARNING, "shopjobs.worker")
    running = asyncio.create_task(run())
    await asyncio.sleep(0.05)
    # worker-a stalled past its lease; worker-b's claim recovers the job.
    await database.execute(
        "UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = :id",
        {"id": job_id},
    )
    claims, _ = await store.claim_jobs(database, [job_id], "worker-b", 30)
    assert [(c.id, c.recovered) for c in claims] == [(job_id, True)]
    done, _ = await asyncio.wait({running}, timeout=60)  # the next renewal finds it out
    assert running in done and running.cancelled()
    assert f"job {job_id}: lease lost to another worker" in caplog.text
    job = await store.get_job(database, job_id)
    assert job is not None and job.lease_owner == "worker-b"
    assert await lease_left(database, job_id) > 20  # worker-a's renewals did not touch it


async def test_in_progress_keeps_the_redis_key_while_an_outcome_is_written(
    database: Database, redis: ArqRedis
) -> None:
    job_id = await claimed_job(database, redis, "worker-a")
    key = in_progress_key_prefix + str(job_id)
    with leases(database, redis, "worker-a").in_progress(str(job_id)):
        # Three renewals, a third of a lease apart: unrenewed, the key would be gone by now.
        await renewals(partial(redis.pttl, key), 3, "the in-progress key")
        assert 0 < await redis.pttl(key) <= LEASE_SECONDS * 1000


async def test_one_renewer_keeps_every_job_and_a_lost_lease_stops_only_its_run(
    database: Database, redis: ArqRedis
) -> None:
    """Two runs of one process share its renewer: both leases are stretched; when another
    worker takes one job over, that run is cancelled and the other goes on, still renewed."""
    kept = await claimed_job(database, redis, "worker-a")
    lost = await claimed_job(database, redis, "worker-a")
    shared = leases(database, redis, "worker-a")

    async def run(job_id: uuid.UUID) -> None:
        with shared.held(str(job_id)):
            await asyncio.sleep(60)

    runs = {job_id: asyncio.create_task(run(job_id)) for job_id in (kept, lost)}
    try:
        await asyncio.gather(
            renewals(partial(lease_expiry, database, kept), 1, "the first lease"),
            renewals(partial(lease_expiry, database, lost), 1, "the second lease"),
        )
        await database.execute(
            "UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = :id",
            {"id": lost},
        )
        claims, _ = await store.claim_jobs(database, [lost], "worker-b", 30)
        assert [c.id for c in claims] == [lost]
        done, _ = await asyncio.wait({runs[lost]}, timeout=60)
        assert runs[lost] in done and runs[lost].cancelled()
        await renewals(partial(lease_expiry, database, kept), 1, "the first lease, after")
        assert not runs[kept].done()
    finally:
        for task in runs.values():
            task.cancel()
        await asyncio.gather(*runs.values(), return_exceptions=True)
        await shared.close()
