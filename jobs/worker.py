"""The worker process: `arq jobs.WorkerSettings`, built from settings.

arq's CLI instantiates `arq.worker.Worker`; `install()` points that name at `ShopjobsWorker`,
a small subclass that closes arq's gaps we cannot close from hooks:

- claims are leases: arq's in-progress key lasts JOB_LEASE_SECONDS (renewed while a job runs,
  see jobs/lease.py), not the largest job_timeout + 10 s;
- a signal first turns the health endpoint to `shutting_down`, then stops taking jobs, waits
  WORKER_SHUTDOWN_GRACE_SECONDS for running ones and gives the rest back (jobs/runner.py);
- the Redis client retries forever with capped backoff, so a Redis restart pauses the worker
  instead of ending it.

Status mirroring happens inside the job function (jobs/runner.py), not in arq's
on_job_start/on_job_end hooks: those get no outcome, run after a decision is made, and kill the
worker if they raise. One function that claims, runs and records, in order, cannot get out of
step with itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from signal import Signals
from typing import Any

import arq.worker
from arq import cron
from arq.connections import RedisSettings, create_pool
from arq.worker import Function, func
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobs import health, maintenance
from jobs.ratelimit import RateLimiter
from jobs.registry import job_types
from jobs.resources import close_resources, open_resources
from jobs.runner import Runtime, run_job
from jobs.types import JobType
from service import queue
from service.db import create_database
from service.logs import configure_logging
from service.settings import Settings

logger = logging.getLogger("shopjobs.worker")

POLL_DELAY_SECONDS = 0.05
# Attempts are counted in Postgres; arq's own count also grows with every deferral, so its
# limit must never be the one that stops a job.
ARQ_MAX_TRIES = 1_000_000
STARTUP_RETRY_SECONDS = 1.0


class ShopjobsWorker(arq.worker.Worker):
    # No __init__ here: arq's CLI filters WorkerSettings by the signature of `Worker.__init__`.

    async def main(self) -> None:
        """arq's main loop, except that a freed slot wakes it at once.

        arq polls every `poll_delay` and starts at most the free slots on each poll, so a
        worker whose jobs are short, or deferred (rate limit, shop cap), idles between polls.
        """
        runtime: Runtime = self.ctx["runtime"]
        self.in_progress_timeout_s = runtime.settings.job_lease_seconds
        if self.burst:
            await super().main()
            return
        self._wake = asyncio.Event()
        if self._pool is None:
            self._pool = await create_pool(
                self.redis_settings,
                job_deserializer=self.job_deserializer,
                job_serializer=self.job_serializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )
        logger.info("starting worker for %s", ", ".join(self.functions))
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        while True:
            await self._poll_iteration()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_delay_s)
            self._wake.clear()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """Never start a second run of a job this process is still running.

        arq would, once the in-progress key lapses while the first run is still writing its
        outcome (Postgres down), and the two runs would then finish the queue entry twice.
        """
        await super().start_jobs([j for j in job_ids if j.decode() not in self.tasks])

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        wake = getattr(self, "_wake", None)
        if wake is not None:
            wake.set()

    def _begin_shutdown(self, signum: Signals) -> None:
        state: health.HealthState | None = self.ctx.get("health_state")
        if state is not None:
            state.shutting_down = True
        logger.info(
            "%s received: no new jobs; running ones get %ss to finish",
            Signals(signum).name,
            self._job_completion_wait,
        )

    def handle_sig(self, signum: Signals) -> None:
        self._begin_shutdown(signum)
        super().handle_sig(signum)

    def handle_sig_wait_for_completion(self, signum: Signals) -> None:
        self._begin_shutdown(signum)
        super().handle_sig_wait_for_completion(signum)


def install() -> None:
    """Make `arq jobs.WorkerSettings` build a ShopjobsWorker instead of arq's stock Worker."""
    arq.worker.Worker = ShopjobsWorker  # type: ignore[misc]


def worker_redis_settings(url: str) -> RedisSettings:
    settings = queue.redis_settings(url)
    settings.retry = RedisRetry(ExponentialBackoff(cap=2.0, base=0.05), retries=-1)
    settings.retry_on_error = [RedisConnectionError, RedisTimeoutError, OSError]
    settings.conn_retries = 1_000_000
    settings.conn_retry_delay = 1
    return settings


def arq_function(job_type: JobType, settings: Settings) -> Function:
    async def run(ctx: dict[str, Any], job_id: str, shop: str | None = None) -> None:
        await run_job(ctx["runtime"], job_type, job_id, shop)

    run.__qualname__ = run.__name__ = job_type.name
    # arq's own timeout only backs ours up (jobs/runner.py times out first and retries).
    timeout = (job_type.timeout_seconds or settings.job_timeout_seconds) + 60
    return func(run, name=job_type.name, timeout=timeout, max_tries=ARQ_MAX_TRIES, keep_result=0)


async def _connect_database(runtime: Runtime) -> None:
    database = create_database(
        runtime.settings.database_url,
        min_size=1,
        max_size=max(4, runtime.settings.worker_concurrency + 2),
    )
    while True:
        try:
            await database.connect()
            break
        except Exception as exc:  # Postgres not up yet: wait for it rather than exit
            logger.warning("postgres unavailable at start (%s), retrying", exc)
            await asyncio.sleep(STARTUP_RETRY_SECONDS)
    runtime.database = database


def build_worker_settings(settings: Settings) -> type:
    configure_logging()
    types = job_types(settings)
    runtime = Runtime(
        settings=settings,
        types=types,
        owner=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}",
    )
    health_redis = queue.connect(settings.redis_url, timeout=1.0)

    async def check_postgres() -> None:
        assert runtime.database is not None
        await runtime.database.fetch_val("SELECT 1")

    async def check_redis() -> None:
        await health_redis.ping()

    health_state = health.HealthState(checks={"postgres": check_postgres, "redis": check_redis})

    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx["health_runner"] = await health.start(health_state, settings.worker_health_port)
        logger.info("health server on :%d", settings.worker_health_port)
        await _connect_database(runtime)
        runtime.redis = ctx["redis"]
        runtime.limiter = RateLimiter(
            ctx["redis"], settings.rate_limit_max, settings.rate_limit_window_seconds
        )
        runtime.resources = await open_resources(settings, runtime.database, ctx["redis"])
        logger.info(
            "worker %s ready: types=%s concurrency=%d",
            runtime.owner,
            ",".join(types) or "-",
            settings.worker_concurrency,
        )

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        await close_resources(runtime.resources)
        if runtime.database is not None:
            await runtime.database.disconnect()
        await ctx["health_runner"].cleanup()
        await health_redis.aclose()
        logger.info("worker %s stopped", runtime.owner)

    reconcile_seconds = set(range(0, 60, settings.reconcile_interval_seconds))
    return type(
        "WorkerSettings",
        (),
        {
            "functions": [arq_function(t, settings) for t in types.values()],
            "cron_jobs": [
                cron(
                    maintenance.reconcile,
                    second=reconcile_seconds,
                    run_at_startup=True,
                    max_tries=1,
                ),
                cron(maintenance.retention, second={30}, max_tries=1),
            ],
            "redis_settings": worker_redis_settings(settings.redis_url),
            "queue_name": queue.QUEUE_NAME,
            "job_serializer": queue.serialize,
            "job_deserializer": queue.deserialize,
            "max_jobs": settings.worker_concurrency,
            "poll_delay": POLL_DELAY_SECONDS,
            "keep_result": 0,
            "max_tries": ARQ_MAX_TRIES,
            "job_completion_wait": settings.worker_shutdown_grace_seconds,
            "ctx": {"runtime": runtime, "health_state": health_state},
            "on_startup": on_startup,
            "on_shutdown": on_shutdown,
        },
    )
