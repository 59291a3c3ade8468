"""The worker's Prometheus metrics, served at GET /metrics on its health port.

One `WorkerMetrics` per worker process (on its Runtime), with a registry of its own: nothing is
registered at import, so tests may build any number of them. The runner reports what happens
to each run through the small methods below; the queue depth is read from Redis on each
scrape, since no worker event marks it changing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from redis.asyncio import Redis

from service import queue
from service.core.metrics import process_registry
from service.core.states import RunOutcome

logger = logging.getLogger("shopjobs.worker")

RUN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
DEPTH_TIMEOUT_SECONDS = 1.0

# Why a run was put back in the queue without running (`deferred`):
RATE_LIMIT = "rate_limit"  # the global start rate was used up
LEASE_HELD = "lease_held"  # another live worker holds the job
ROW_LOCKED = "row_locked"  # its row was locked by a writer about to commit (a wake, a cancel)
DATABASE_DOWN = "database_unavailable"  # the claim could not reach Postgres


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = process_registry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        self.started = Counter(
            "shopjobs_jobs_started", "Runs started (claims won), by type.", ["type"], registry=r
        )
        self.completed = Counter(
            "shopjobs_jobs_completed", "Jobs completed, by type.", ["type"], registry=r
        )
        self.failed = Counter(
            "shopjobs_jobs_failed",
            "Jobs failed for good (attempts used up, non-retryable error, abandoned), by type.",
            ["type"],
            registry=r,
        )
        self.retried = Counter(
            "shopjobs_jobs_retried",
            "Failed attempts followed by a scheduled retry, by type.",
            ["type"],
            registry=r,
        )
        self.skipped = Counter(
            "shopjobs_jobs_skipped",
            "Queue entries whose job was already final (completed, failed, cancelled) or "
            "deleted, by type.",
            ["type"],
            registry=r,
        )
        self.lease_recoveries = Counter(
            "shopjobs_lease_recoveries",
            "Claims of a processing job whose lease had expired (its worker died), by type.",
            ["type"],
            registry=r,
        )
        self.deferrals = Counter(
            "shopjobs_job_deferrals",
            "Runs put back in the queue without starting, by type and reason "
            "(rate_limit, lease_held, database_unavailable).",
            ["type", "reason"],
            registry=r,
        )
        self.run_seconds = Histogram(
            "shopjobs_job_run_seconds",
            "Time a run took, by type and outcome "
            "(completed, failed, retried, interrupted, lease_lost, suspended, waiting).",
            ["type", "outcome"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.abandoned = Counter(
            "shopjobs_runs_abandoned",
            "Runs whose handler did not stop within JOB_ABANDON_GRACE_SECONDS of being cancelled "
            "(at its timeout, or at shutdown): left behind, their jobs decided without them.",
            ["type"],
            registry=r,
        )
        self.abandoned_running = Gauge(
            "shopjobs_abandoned_runs_running",
            "Abandoned runs still going in this process (/healthz is 503 past "
            "WORKER_MAX_ABANDONED_RUNS).",
            registry=r,
        )
        self.loop_lag = Gauge(
            "shopjobs_event_loop_lag_seconds",
            "How late the event loop last ran a timer: a handler blocking the loop delays every "
            "other run and the lease renewals.",
            registry=r,
        )
        self.running = Gauge(
            "shopjobs_jobs_running", "Jobs this worker process is running now.", registry=r
        )
        self.queue_depth = Gauge(
            "shopjobs_queue_depth",
            "Entries in the queue (arq's and every shop's): due, running, deferred (retries, "
            "backoff) and arq's next cron ticks; read at scrape (NaN: Redis down).",
            registry=r,
        )
        self.queue_due = Gauge(
            "shopjobs_queue_due",
            "Entries in the queue (arq's and every shop's) that are due now, running ones "
            "included: the backlog; read at scrape (NaN: Redis down).",
            registry=r,
        )

    def run_abandoned(self, job_type: str, still_going: int) -> None:
        self.abandoned.labels(job_type).inc()
        self.abandoned_running.set(still_going)

    def deferred(self, job_type: str, reason: str) -> None:
        self.deferrals.labels(job_type, reason).inc()

    def skipped_final(self, job_type: str) -> None:
        self.skipped.labels(job_type).inc()

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once: labels() validates and locks on every
        call, a tenth of a no-op job's worker time when called per run."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def run_started(self, job_type: str, recovered: bool) -> None:
        self._child(self.started, job_type).inc()
        if recovered:
            self.lease_recoveries.labels(job_type).inc()
        self.running.inc()

    def run_ended(self, job_type: str, outcome: RunOutcome, seconds: float) -> None:
        """One run's end. completed, failed, retried count the job too; abandoned (failed at
        its claim, without running: it kept killing its workers) counts as failed."""
        self.running.dec()
        if outcome != RunOutcome.ABANDONED:
            self._child(self.run_seconds, job_type, str(outcome)).observe(seconds)
        counter = {
            RunOutcome.COMPLETED: self.completed,
            RunOutcome.FAILED: self.failed,
            RunOutcome.ABANDONED: self.failed,
            RunOutcome.RETRIED: self.retried,
        }.get(outcome)
        if counter is not None:
            self._child(counter, job_type).inc()

    async def read_queue_depth(self, redis: Redis) -> None:
        depth: float
        due: float
        try:
            depth, due = await asyncio.wait_for(queue.depth(redis), DEPTH_TIMEOUT_SECONDS)
        except Exception as exc:  # Redis down: say "unknown" rather than a stale number
            logger.debug("queue depth unavailable: %r", exc)
            depth = due = float("nan")
        self.queue_depth.set(depth)
        self.queue_due.set(due)


def routes(metrics: WorkerMetrics, redis: Redis) -> list[web.RouteDef]:
    """GET /metrics for the worker's health server."""

    async def scrape(request: web.Request) -> web.Response:
        await metrics.read_queue_depth(redis)
        response = web.Response(body=generate_latest(metrics.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return [web.get("/metrics", scrape)]


def run_totals(metrics: WorkerMetrics) -> dict[str, int]:
    """This process's jobs so far, all types together: completed, failed, retried (what the
    shutdown line reports; arq's own counts see only its cron runs)."""

    def total(counter: Counter) -> int:
        return int(
            sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))
        )

    return {
        "completed": total(metrics.completed),
        "failed": total(metrics.failed),
        "retried": total(metrics.retried),
    }
