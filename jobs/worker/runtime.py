"""What every run of a worker process shares (Runtime), and a job taken off the queue (Incoming).

The worker process builds one Runtime at start-up (jobs/worker/startup.py), fully, before it
takes its first job; the runner (jobs/worker/runner.py), the handler calls
(jobs/worker/abandon.py) and the outcome writes (jobs/worker/outcomes.py) all read it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from arq.connections import ArqRedis
from databases import Database

from jobs.types import JobType
from jobs.worker.lease import Leases
from jobs.worker.metrics import WorkerMetrics
from jobs.worker.ratelimit import RateLimiter
from jobs.worker.resources import Resources
from service import queue
from service.core.group_commit import GroupCommit
from service.core.settings import Settings
from service.jobs_client import JobsClient
from service.queue import Taken, Taker


@dataclass(frozen=True)
class Runtime:
    """What a worker process builds at start-up (jobs/worker/startup.py), fully, before it
    takes its first job; every run shares it."""

    settings: Settings
    types: dict[str, JobType]
    owner: str
    database: Database
    redis: ArqRedis
    limiter: RateLimiter
    queue: Taker  # takes and finishes this process's jobs (service/queue/take.py)
    completions: GroupCommit[tuple[UUID, str, str], bool]
    resources: Resources
    metrics: WorkerMetrics
    leases: Leases  # renews the running jobs' leases, all together (jobs/worker/lease.py)
    # Handlers that did not stop when cancelled at their timeout, still going: their jobs have
    # been given up on and their slots freed (jobs/worker/abandon.py); too many end the process.
    abandoned: set[asyncio.Task[Any]] = field(default_factory=set)
    # A future per running handler, by job id, set when the job is cancelled (a message on
    # service/core/cancel.py's channel): jobs/worker/abandon.py `call` then stops the handler.
    stop_requests: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    # How handlers start jobs (ctx.enqueue, ctx.enqueue_batch); None: they cannot.
    jobs: JobsClient | None = None
    # Set when more than WORKER_MAX_ABANDONED_RUNS abandoned runs are still going: the worker
    # then stops as on SIGTERM and exits with EXIT_WEDGED (jobs/worker/process.py), so the
    # platform, which restarts a process that exits, gets their memory and connections back.
    wedged: asyncio.Event = field(default_factory=asyncio.Event)

    def request_stop(self, job_id: str) -> bool:
        """Stop the handler of a cancelled job if this process runs it; False if it does not."""
        request = self.stop_requests.get(job_id)
        if request is None or request.done():
            return False
        request.set_result(None)
        return True


@dataclass(frozen=True)
class Incoming:
    """A job taken off the queue, with its type."""

    taken: Taken
    job_type: JobType

    def log_fields(self) -> dict[str, Any]:
        """job_id, type and shop (as the enqueuer named it), for lines logged before a claim."""
        try:
            shop = queue.deserialize(self.taken.payload or b"{}")["a"][1]
        except Exception:  # an entry without a shop (enqueued by hand, say)
            shop = None
        return {"job_id": self.taken.job_id, "type": self.job_type.name, "shop": shop}


def type_caps(types: Mapping[str, JobType]) -> dict[str, int]:
    """Each capped type's cap on its running jobs (JobType.concurrency), held at the take."""
    return {name: t.concurrency for name, t in types.items() if t.concurrency > 0}


def key_caps(types: Mapping[str, JobType]) -> dict[str, int]:
    """The per-key cap of each type that names what its jobs work on (concurrency_key)."""
    return {name: t.key_concurrency for name, t in types.items() if t.concurrency_key is not None}
