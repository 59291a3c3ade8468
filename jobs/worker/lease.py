"""Keeping a claim alive while a job runs.

A claim is a lease, not a lock: it expires JOB_LEASE_SECONDS after its last renewal. While the
job runs, this renews it every third of the lease in Postgres, and stretches arq's in-progress
key in Redis to match, so a worker that dies (SIGKILL, OOM, lost machine) lets its job run
again within one lease, not after arq's job_timeout + 10 s. If the renewal finds that another
worker holds the job now (this one stalled past its lease), the run is cancelled rather than
finishing a job someone else is running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID

from arq.constants import in_progress_key_prefix
from databases import Database
from redis.asyncio import Redis

from service import store

logger = logging.getLogger("shopjobs.worker")
REDIS_TIMEOUT_SECONDS = 1.0


@asynccontextmanager
async def held(
    database: Database, redis: Redis, job_id: str, owner: str, lease_seconds: float
) -> AsyncIterator[None]:
    running = asyncio.current_task()
    assert running is not None

    async def renew() -> None:
        while True:
            await asyncio.sleep(lease_seconds / 3)
            # Each store is renewed on its own: one being down must not let the other lapse.
            await _renew_in_progress_key(redis, job_id, lease_seconds)
            try:
                still_ours = await store.renew_lease(database, UUID(job_id), owner, lease_seconds)
            except Exception as exc:  # Postgres down: keep working, the lease may lapse
                logger.warning("job %s: lease renewal failed: %s", job_id, exc)
                continue
            if not still_ours:
                logger.warning("job %s: lease lost to another worker, stopping this run", job_id)
                running.cancel()
                return

    keeper = asyncio.create_task(renew())
    try:
        yield
    finally:
        keeper.cancel()


async def _renew_in_progress_key(redis: Redis, job_id: str, lease_seconds: float) -> None:
    try:
        await asyncio.wait_for(
            redis.pexpire(in_progress_key_prefix + job_id, int(lease_seconds * 1000)),
            REDIS_TIMEOUT_SECONDS,
        )
    except Exception as exc:
        logger.warning("job %s: in-progress key renewal failed: %s", job_id, exc)


@asynccontextmanager
async def in_progress(redis: Redis, job_id: str, lease_seconds: float) -> AsyncIterator[None]:
    """Keep arq's in-progress key alive while a finished run's outcome is being written.

    The job is still that run's until its outcome is in Postgres (which may take a while: a
    restart). Were the key to lapse, any worker would take the job from the queue again and,
    its Postgres lease having run out meanwhile, run it a second time.
    """

    async def renew() -> None:
        while True:
            await asyncio.sleep(lease_seconds / 3)
            await _renew_in_progress_key(redis, job_id, lease_seconds)

    keeper = asyncio.create_task(renew())
    try:
        yield
    finally:
        keeper.cancel()
