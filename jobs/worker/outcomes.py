"""A run's outcome, written to Postgres: failed attempts (retried or final), a batch parent's
wait for its children, and the end of batches.

What the retry policy decides (jobs/worker/retry.py) is written here, with the message the job
keeps and whether the storefront and the merchant may read it (jobs.error_public). Every write
goes through `record`, which keeps the job's in-progress key alive until it lands: until then
the job is this run's, and no worker may take it off the queue again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar
from uuid import UUID

from jobs.types import JobType, NonRetryableError
from jobs.worker import retry
from jobs.worker.abandon import RunAbandoned
from jobs.worker.context import FollowUpRefused, RunContext
from jobs.worker.mirror import persist
from jobs.worker.results import UnstorableResult, error_text, storable_error
from jobs.worker.runtime import Runtime
from service import queue, store
from service.core.states import RunOutcome
from service.intake import Source, queue_entry
from service.jobs_client import InvalidInput, ShopNotInstalled, UnknownJobType
from service.queue import Entry, Finish, done, later

logger = logging.getLogger("shopjobs.worker")

T = TypeVar("T")


class InvalidStoredInput(NonRetryableError):
    """A row's input no longer fits its type's model (the model changed since it was queued)."""


class ResultNotRecorded(NonRetryableError):
    """Postgres refused a run's result (not unavailable: refused), so retrying cannot help."""


class HandlerNotAsync(NonRetryableError):
    """A type's handler returned something that cannot be awaited (a plain `def`): it has run
    already, on the event loop; retrying would only run it again, with its effects."""


# Failures that end a job at once but whose text is about the app's code or its database, for
# its developer: the storefront and the merchant see the generic message (is_public).
_PRIVATE_FAILURES = (
    UnstorableResult,
    InvalidStoredInput,
    ResultNotRecorded,
    HandlerNotAsync,
    FollowUpRefused,
)


# A handler's ctx.enqueue refused for a reason the next attempt would meet again (a type
# name, an input the handler built, a shop gone): the job fails at once. QueueUnavailable is
# left to retries. The handler may catch them first, to skip one bad child, say.
_REFUSED_ENQUEUES = (UnknownJobType, InvalidInput, ShopNotInstalled)


def is_public(error: BaseException) -> bool:
    """Whether a failure's message may be shown to the storefront and the merchant
    (jobs.error_public): a handler's NonRetryableError, whose text its author wrote for them,
    and what the worker says itself (cancelled, timed out). An unexpected exception's text can
    hold anything (a driver's error with host names, a customer's data, a stack's innards):
    only the dashboard and the logs show it."""
    if isinstance(error, _PRIVATE_FAILURES):
        return False
    return isinstance(error, (NonRetryableError, TimeoutError))


def describe(error: BaseException, timeout: float) -> str:
    """The message a failed attempt leaves in `error_message`."""
    if isinstance(error, RunAbandoned):
        return str(error)
    if isinstance(error, TimeoutError):
        return f"Timed out after {timeout:g}s"
    return storable_error(error_text(error))


async def record(runtime: Runtime, job_id: str, what: str, write: Callable[[], Awaitable[T]]) -> T:
    """`persist` a run's outcome, keeping the job's in-progress key alive until it is written:
    until then the job is this run's, and no worker may take it off the queue again."""
    with runtime.leases.in_progress(job_id):
        return await persist(what, write)


async def failed(
    runtime: Runtime, job_type: JobType, claim: store.Claim, exc: Exception, timeout: float
) -> tuple[RunOutcome, Finish]:
    """Record a failed attempt as the retry policy decides: retrying, or failed for good."""
    settings = runtime.settings
    database = runtime.database
    job_id = str(claim.id)
    owner = runtime.owner
    tag = f"job {job_id} type={job_type.name} shop={claim.shop}"
    max_attempts = job_type.max_attempts or settings.job_max_attempts
    backoff = (
        job_type.backoff_seconds
        if job_type.backoff_seconds is not None
        else settings.job_backoff_seconds
    )
    failures = claim.retry_count + 1
    message = describe(exc, timeout)
    public = is_public(exc)
    non_retryable = (*job_type.non_retryable, *_REFUSED_ENQUEUES)
    decision = retry.decide(exc, failures, max_attempts, backoff, non_retryable)
    try:
        if decision.retry:
            await record(
                runtime,
                job_id,
                f"{tag} retry",
                lambda: store.schedule_retry(
                    database, claim.id, owner, failures, message, decision.delay, public
                ),
            )
            logger.warning(
                "%s attempt %d failed, retry in %.2fs: %s", tag, failures, decision.delay, message
            )
            return RunOutcome.RETRIED, later(job_id, decision.delay)
        await record(
            runtime,
            job_id,
            f"{tag} fail",
            lambda: store.fail_job(database, claim.id, owner, failures, message, public),
        )
    except Exception as refused:  # not even the failure can be written: leave it to the lease
        logger.error("%s: its outcome could not be recorded: %r", tag, refused)
        return RunOutcome.LEASE_LOST, done(job_id)
    logger.error("%s failed after %d attempt(s): %s", tag, failures, message)
    return RunOutcome.FAILED, done(job_id)


async def await_children(
    runtime: Runtime,
    job_type: JobType,
    claim: store.Claim,
    context: RunContext,
    encoded: str,
    started: float,
) -> tuple[RunOutcome, Finish]:
    """A batch parent's handler returned: it waits, unheld, for its children (and may be done
    already, if they all were)."""
    job_id = str(claim.id)
    tag = f"job {job_id} type={job_type.name} shop={claim.shop}"
    writes = context.completion_writes
    try:
        written = await record(
            runtime,
            job_id,
            f"{tag} await batch",
            lambda: store.await_children(
                runtime.database, claim.id, runtime.owner, encoded, writes
            ),
        )
    except Exception as exc:  # Postgres refused this result (not unavailable)
        refused = ResultNotRecorded(f"Result could not be recorded: {exc}")
        return await failed(runtime, job_type, claim, refused, 0)
    if not written:
        logger.warning("%s: its lease was lost before it could wait for its batch", tag)
        return RunOutcome.LEASE_LOST, done(job_id)
    logger.info("%s handler done in %.3fs; waiting for its batch", tag, time.monotonic() - started)
    await end_batches(runtime, [claim.id])
    return RunOutcome.WAITING, done(job_id)


async def _follow_up_entries(runtime: Runtime, follow_ups: list[store.FollowUp]) -> list[Entry]:
    types = runtime.types
    keyed = [f.id for f in follow_ups if f.type in types and types[f.type].concurrency_key]
    inputs = await store.inputs_of(runtime.database, keyed) if keyed else {}
    return [
        queue_entry(types[f.type], f.id, f.shop, inputs.get(f.id, {}), Source.JOB)
        if f.type in types
        else Entry(f.type, str(f.id), f.shop)
        for f in follow_ups
    ]


async def end_batches(runtime: Runtime, parent_ids: list[UUID] | None) -> int:
    """Make final the batches (of `parent_ids`, or any) whose children are all final, and queue
    their follow-ups. Never raises: the reconciler's tick looks again (a follow-up not queued is
    a pending row it queues)."""
    try:
        finished, follow_ups = await store.finish_batches(runtime.database, parent_ids)
        if follow_ups:
            # A follow-up's input is what the batch's end wrote: its key, if its type has one,
            # is read back from its row like a retried job's (JobsClient._entries).
            await queue.enqueue_many(runtime.redis, await _follow_up_entries(runtime, follow_ups))
    except Exception as exc:
        logger.warning("batches not ended now (the reconciler will): %r", exc)
        return 0
    if finished:
        logger.info("%d batch(es) ended, %d follow-up job(s) queued", finished, len(follow_ups))
    return int(finished)
