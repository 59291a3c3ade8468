"""Asking workers to stop running jobs: the cancel channel on Redis.

A cancel is decided in Postgres first (the row becomes failed "Cancelled", service/store), so
it holds whatever happens to this message; the message only makes the worker running the job
stop its handler at once (jobs/worker/process.py listens) instead of at its next lease renewal,
which notices too that the row is no longer its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from redis.asyncio import Redis

CANCEL_CHANNEL = "shopjobs:cancel"


async def request_stop(redis: Redis, job_ids: Iterable[UUID]) -> None:
    """Tell every worker to stop the handlers of `job_ids` (a worker not running one ignores it)."""
    ids = [str(job_id) for job_id in job_ids]
    if not ids:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.publish(CANCEL_CHANNEL, job_id)
        await pipe.execute()
