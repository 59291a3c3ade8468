"""Lease renewal (jobs/worker/lease.py) against the real Postgres and Redis: a held lease is
stretched in both while the job runs; a lease another worker took over stops the run."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from databases import Database

from jobs.worker import lease
from service import store
from tests.support.jobs import add_job, make_shop

LEASE_SECONDS = 0.6  # renewed every 0.2 s


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


async def test_a_held_lease_outlives_itself_in_postgres_and_redis(
    database: Database, redis: ArqRedis
) -> None:
    job_id = await claimed_job(database, redis, "worker-a")
    async with lease.held(database, redis, str(job_id), "worker-a", LEASE_SECONDS):
        await asyncio.sleep(LEASE_SECONDS * 2.5)  # unrenewed, both would have lapsed by now
        assert 0 < await lease_left(database, job_id) <= LEASE_SECONDS
        assert await redis.pttl(in_progress_key_prefix + str(job_id)) > 0
    job = await store.get_job(database, job_id)
    assert job is not None and (job.status, job.lease_owner) == ("processing", "worker-a")


async def test_renewal_stops_when_the_run_ends(database: Database, redis: ArqRedis) -> None:
    job_id = await claimed_job(database, redis, "worker-a")
    async with lease.held(database, redis, str(job_id), "worker-a", LEASE_SECONDS):
        await asyncio.sleep(0.01)
    await asyncio.sleep(LEASE_SECONDS * 1.5)
    assert await lease_left(database, job_id) < 0
    assert not await redis.exists(in_progress_key_prefix + str(job_id))


async def test_a_lease_taken_over_by_another_worker_cancels_the_run(
    database: Database, redis: ArqRedis, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = await claimed_job(database, redis, "worker-a")

    async def run() -> None:
        async with lease.held(database, redis, str(job_id), "worker-a", LEASE_SECONDS):
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
    done, _ = await asyncio.wait({running}, timeout=LEASE_SECONDS * 2)
    assert running in done and running.cancelled()
    assert f"job {job_id}: lease lost to another worker" in caplog.text
    job = await store.get_job(database, job_id)
    assert job is not None and job.lease_owner == "worker-b"
    assert await lease_left(database, job_id) > 20  # worker-a's renewals did not touch it


async def test_in_progress_keeps_the_redis_key_while_an_outcome_is_written(
    database: Database, redis: ArqRedis
) -> None:
    job_id = await claimed_job(database, redis, "worker-a")
    async with lease.in_progress(redis, str(job_id), LEASE_SECONDS):
        await asyncio.sleep(LEASE_SECONDS * 2.5)
        assert await redis.pttl(in_progress_key_prefix + str(job_id)) > 0
