"""A run's spans (service/core/tracing.py): its queue wait and the run itself, in the trace
of the request that created the job.

The trace context comes from the job row (jobs.trace_context), read at each run, because the
run that continues a job may be in another process, after a retry's backoff or a day-long
wait. Nothing is read or made while traces are off.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from jobs.types import JobType
from jobs.worker.runtime import Runtime
from service import store
from service.core import tracing
from service.core.states import RunOutcome

if TYPE_CHECKING:
    from opentelemetry.trace import Span

logger = logging.getLogger("shopjobs.worker")

# Outcomes whose span is marked an error: the job's end was a failure.
FAILED = frozenset({RunOutcome.FAILED, RunOutcome.ABANDONED})


@asynccontextmanager
async def run_span(
    runtime: Runtime, job_type: JobType, claim: store.Claim
) -> AsyncIterator[Span | None]:
    """`run <type>` around one run (None when traces are off); before the first run, the
    `queue wait <type>` span from the row's creation to now."""
    if not tracing.enabled():
        yield None
        return
    try:
        parent = await store.trace_context_of(runtime.database, claim.id)
    except Exception as exc:  # a trace is not worth a run: go on in a trace of its own
        logger.debug("job %s: trace context not read: %r", claim.id, exc)
        parent = None
    attributes = {"shopjobs.job.id": str(claim.id), "shopjobs.job.type": job_type.name,
                  "shopjobs.shop": claim.shop}  # fmt: skip
    if claim.attempts == 1 and not claim.resumed and claim.created_at is not None:
        now = datetime.now(UTC)
        tracing.interval(f"queue wait {job_type.name}", claim.created_at, now, attributes,
                         parent=parent)  # fmt: skip
    with tracing.span(
        f"run {job_type.name}",
        {**attributes, "shopjobs.attempt": claim.retry_count + 1, "shopjobs.run": claim.attempts,
         "shopjobs.resumed": claim.resumed or "", "shopjobs.recovered": claim.recovered},
        parent=parent,
        kind="CONSUMER",
    ) as current:  # fmt: skip
        yield current


def end(current: Span | None, outcome: RunOutcome) -> None:
    """Name the run's outcome on its span (`suspended` for a run that waits)."""
    tracing.set_outcome(current, str(outcome), outcome in FAILED)
