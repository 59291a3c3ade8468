"""What `arq jobs.WorkerSettings` is: arq's settings class, built from our settings.

arq builds its settings before the event loop exists; everything asynchronous (Postgres, the
health server, the Runtime, the maintenance crons) is built here in `on_startup` and closed in
`on_shutdown`. The worker class that runs with them is jobs/worker/process.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from typing import Any

from arq import cron
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Function, func
from databases import Database
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobs.registry import app_loggers, job_types
from jobs.types import JobType
from jobs.worker import bulk_poller, health, looplag, maintenance, metrics, schedules
from jobs.worker.lease import Leases
from jobs.worker.process import STARTUP_RETRY_SECONDS, install
from jobs.worker.ratelimit import RateLimiter
from jobs.worker.resources import close_resources, open_resources
from jobs.worker.runtime import Runtime, key_caps, type_caps
from service import queue, store
from service.core import tracing
from service.core.db import DatabaseTlsError, create_database
from service.core.group_commit import GroupCommit
from service.core.logs import adopt, configure_logging
from service.core.settings import Settings, load_settings
from service.jobs_client import JobsClient

logger = logging.getLogger("shopjobs.worker")

POLL_DELAY_SECONDS = 0.1
# Attempts are counted in Postgres; arq's own count also grows with every deferral, so its
# limit must never be the one that stops a job.
ARQ_MAX_TRIES = 1_000_000


def worker_redis_settings(url: str) -> RedisSettings:
    settings = queue.redis_settings(url)
    settings.retry = RedisRetry(ExponentialBackoff(cap=2.0, base=0.05), retries=-1)
    settings.retry_on_error = [RedisConnectionError, RedisTimeoutError, OSError]
    settings.conn_retries = 1_000_000
    settings.conn_retry_delay = 1
    return settings


def arq_function(job_type: JobType, settings: Settings) -> Function:
    async def run(ctx: dict[str, Any], job_id: str, shop: str | None = None) -> None:
        raise RuntimeError(
            "job types run through ShopjobsWorker (jobs/worker/runner.py), not arq's run_job"
        )

    run.__qualname__ = run.__name__ = job_type.name
    # arq's own timeout only backs ours up (jobs/worker/runner.py times out first and retries).
    timeout = (job_type.timeout_seconds or settings.job_timeout_seconds) + 60
    return func(run, name=job_type.name, timeout=timeout, max_tries=ARQ_MAX_TRIES, keep_result=0)


async def _connect(database: Database) -> None:
    while True:
        try:
            await database.connect()
            return
        except DatabaseTlsError as exc:  # configuration, not an outage: retrying cannot help
            logger.critical("%s", exc)
            raise SystemExit(2) from None
        except Exception as exc:  # Postgres not up yet: wait for it rather than exit
            logger.warning("postgres unavailable at start (%s), retrying", exc)
            await asyncio.sleep(STARTUP_RETRY_SECONDS)


def build_worker_settings(settings: Settings, types: dict[str, JobType] | None = None) -> type:
    """arq's WorkerSettings for `types` (by default the deployment's, jobs/registry.py).

    arq builds them before the event loop and its Redis pool exist: everything asynchronous
    (Postgres, the health server, the Runtime) is built in `on_startup`, and each piece, once
    built, registers its closing on one exit stack, which `on_shutdown` unwinds in reverse: what
    a startup cut short (a signal while Postgres is down) had built is closed, nothing more.
    """
    configure_logging(settings.log_format, also=app_loggers(settings))
    tracing.configure("shopjobs-worker")  # off unless OTEL_* asks (docs/operations.md)
    types = job_types(settings) if types is None else types
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    worker_metrics = metrics.WorkerMetrics()
    # Handlers that did not stop when cancelled (jobs/worker/abandon.py), shared with
    # the Runtime built at start-up.
    abandoned: set[asyncio.Task[Any]] = set()
    closing = contextlib.AsyncExitStack()

    async def on_startup(ctx: dict[str, Any]) -> None:
        if settings.log_format == "json":
            adopt("arq")  # arq's CLI configured its logger after importing these settings
        redis: ArqRedis = ctx["redis"]
        health_redis = queue.connect(settings.redis_url, timeout=1.0)
        closing.push_async_callback(health_redis.aclose)
        database = create_database(
            settings.database_url, min_size=1, max_size=max(4, settings.worker_concurrency + 2)
        )

        async def check_postgres() -> None:
            await database.fetch_val("SELECT 1")

        async def check_redis() -> None:
            await health_redis.ping()

        async def check_abandoned_runs() -> None:
            # Abandoned runs hold memory, connections, perhaps threads, for ever: past the limit
            # only a restart gets them back. The worker then ends itself (jobs/worker/abandon.py,
            # process.py); this 503 covers the seconds until it has.
            stuck = len(abandoned)
            if stuck > settings.worker_max_abandoned_runs:
                raise RuntimeError(
                    f"{stuck} abandoned runs still going, over WORKER_MAX_ABANDONED_RUNS="
                    f"{settings.worker_max_abandoned_runs}: restart this process"
                )

        health_state = ctx["health_state"] = health.HealthState(
            checks={
                "postgres": health.Check(check_postgres, "postgres unreachable"),
                "redis": health.Check(check_redis, "redis unreachable"),
                "abandoned_runs": health.Check(
                    check_abandoned_runs, "too many abandoned runs: restart this process"
                ),
            },
            extra_routes=metrics.routes(worker_metrics, health_redis),
        )
        health_runner = await health.start(
            health_state, settings.worker_health_port, settings.worker_health_host
        )
        closing.push_async_callback(health_runner.cleanup)
        logger.info(
            "health server on [%s]:%d", settings.worker_health_host, settings.worker_health_port
        )
        await _connect(database)
        closing.push_async_callback(database.disconnect)
        # Tokens an earlier version stored in clear, or under a key no longer first.
        encrypted = await store.encrypt_stored_tokens(database, settings.token_cipher)
        if encrypted:
            logger.info("encrypted the stored tokens of %d shops", encrypted)
        resources = await open_resources(settings, database, redis)
        closing.push_async_callback(close_resources, resources)
        leases = Leases(database, redis, owner, settings.job_lease_seconds)
        closing.push_async_callback(leases.close)
        ctx["runtime"] = Runtime(
            settings=settings,
            types=types,
            owner=owner,
            database=database,
            redis=redis,
            limiter=RateLimiter(redis, settings.rate_limit_max, settings.rate_limit_window_seconds),
            queue=queue.Taker(
                redis,
                shop_cap=settings.shop_concurrency_limit,
                type_caps=type_caps(types),
                key_caps=key_caps(types),
            ),
            completions=GroupCommit(lambda done: store.complete_jobs(database, done)),
            resources=resources,
            metrics=worker_metrics,
            leases=leases,
            abandoned=abandoned,
            jobs=JobsClient(database, redis, types),
        )
        if settings.queue_fairness == "fifo":
            logger.warning(
                "QUEUE_FAIRNESS=fifo is retired and ignored: jobs are taken round-robin by shop "
                "(a shop alone still uses every slot); docs/fairness.md"
            )
        lag_watch = asyncio.create_task(looplag.watch(worker_metrics, settings.job_lease_seconds))
        closing.callback(lag_watch.cancel)
        polls = asyncio.create_task(bulk_poller.watch(resources.admin))
        closing.callback(polls.cancel)
        logger.info(
            "worker %s ready: types=%s concurrency=%d",
            owner,
            ",".join(types) or "-",
            settings.worker_concurrency,
        )

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        await closing.aclose()
        tracing.flush()
        logger.info("worker %s stopped", owner)

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
                cron(
                    schedules.schedules,
                    second=set(range(0, 60, schedules.SCHEDULE_SECONDS)),
                    run_at_startup=True,
                    max_tries=1,
                ),
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
            "on_startup": on_startup,
            "on_shutdown": on_shutdown,
        },
    )


def worker_settings_from_environment() -> type:
    """What `arq jobs.WorkerSettings` resolves to: settings read, our Worker installed."""
    settings = load_settings()
    install()
    return build_worker_settings(settings)
