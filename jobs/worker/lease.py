"""Keeping claims alive while jobs run: one renewer per worker process, for all its jobs.

A claim is a lease, not a lock: it expires JOB_LEASE_SECONDS after its last renewal. While a
job runs, its lease is renewed in Postgres about every third of the lease, and arq's
in-progress key in Redis is stretched to match, so a worker that dies (SIGKILL, OOM, lost
machine) lets its job run again within one lease, not after arq's job_timeout + 10 s. If a
renewal finds that another worker holds the job now (this one stalled past its lease), the run
is cancelled rather than finishing a job someone else is running.

One loop renews every job of the process that is due, in one Postgres statement and one Redis
pipeline, instead of a task and a timer per job: a job that ends within a third of its lease
(most do) costs two dict writes. The loop runs only while something is held.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from uuid import UUID

from arq.constants import in_progress_key_prefix
from databases import Database
from redis.asyncio import Redis

from service import store

logger = logging.getLogger("shopjobs.worker")
REDIS_TIMEOUT_SECONDS = 1.0


@dataclass
class _Held:
    run: asyncio.Task[object] | None  # the run to cancel if its lease is lost (None: key only)
    renewed: float  # monotonic time of the claim or the last renewal


class Leases:
    """The leases of one worker process's running jobs (`held`), and the in-progress keys of
    runs whose outcome is being written (`in_progress`), renewed together."""

    def __init__(self, database: Database, redis: Redis, owner: str, lease_seconds: float):
        self.database = database
        self.redis = redis
        self.owner = owner
        self.lease_seconds = lease_seconds
        self._runs: dict[str, _Held] = {}
        self._keys: dict[str, _Held] = {}
        self._loop: asyncio.Task[None] | None = None

    @contextmanager
    def held(self, job_id: str) -> Iterator[None]:
        """Renew the job's lease in Postgres and its key in Redis while the block runs; the
        block's task is cancelled if another worker has taken the job over."""
        self._runs[job_id] = _Held(asyncio.current_task(), time.monotonic())
        self._start()
        try:
            yield
        finally:
            self._runs.pop(job_id, None)

    @contextmanager
    def in_progress(self, job_id: str) -> Iterator[None]:
        """Keep arq's in-progress key alive while a finished run's outcome is being written.

        The job is still that run's until its outcome is in Postgres (which may take a while:
        a restart). Were the key to lapse, any worker would take the job from the queue again
        and, its Postgres lease having run out meanwhile, run it a second time.
        """
        self._keys[job_id] = _Held(None, time.monotonic())
        self._start()
        try:
            yield
        finally:
            self._keys.pop(job_id, None)

    async def close(self) -> None:
        """Stop renewing (the worker is shutting down: what still runs is given up on)."""
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)

    def _start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.create_task(self._renew_while_held())

    async def _renew_while_held(self) -> None:
        # Looked at every sixth of the lease, each renewed a third of a lease after the last:
        # never more than half a lease between two renewals.
        try:
            while self._runs or self._keys:
                await asyncio.sleep(self.lease_seconds / 6)
                await self.renew_due()
        finally:
            self._loop = None

    async def renew_due(self) -> None:
        """Renew what was claimed or renewed a third of a lease ago or more."""
        since = time.monotonic() - self.lease_seconds / 3
        runs = [job_id for job_id, h in self._runs.items() if h.renewed <= since]
        keys = [job_id for job_id, h in self._keys.items() if h.renewed <= since]
        if not runs and not keys:
            return
        now = time.monotonic()
        for job_id in runs:
            self._runs[job_id].renewed = now
        for job_id in keys:
            self._keys[job_id].renewed = now
        # Each store is renewed on its own: one being down must not let the other lapse.
        await self._renew_keys(sorted(set(runs) | set(keys)))
        if runs:
            await self._renew_leases(runs)

    async def _renew_keys(self, job_ids: list[str]) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.pexpire(in_progress_key_prefix + job_id, int(self.lease_seconds * 1000))
                await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT_SECONDS)
        except Exception as exc:
            logger.warning("in-progress keys of %d job(s) not renewed: %r", len(job_ids), exc)

    async def _renew_leases(self, job_ids: list[str]) -> None:
        try:
            kept = await store.renew_leases(
                self.database, [UUID(j) for j in job_ids], self.owner, self.lease_seconds
            )
        except Exception as exc:  # Postgres down: keep working, the leases may lapse
            logger.warning("leases of %d job(s) not renewed: %r", len(job_ids), exc)
            return
        for job_id in job_ids:
            if UUID(job_id) in kept:
                continue
            held = self._runs.pop(job_id, None)
            if held is not None and held.run is not None:
                logger.warning("job %s: lease lost to another worker, stopping this run", job_id)
                held.run.cancel()
