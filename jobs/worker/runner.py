"""Running jobs: admit, claim, run the handler, mirror the outcome, finish the queue entry.

The worker loop (jobs/worker/process.py) takes due jobs off the queue in batches and hands
them here.
Every outcome is decided here, by the project's own attempt count (`retry_count` in Postgres,
not arq's `job_try`, which also counts crash re-runs and deferrals):

- admit: a start over the rate limit is deferred without using an attempt (a shop already at
  its cap in this process was pushed back before it was even taken, jobs/worker/claims.py);
- claim: one Postgres statement claims the batch (jobs/…store.claim_jobs), so a job runs only
  if it is pending, retrying, or processing under an expired lease;
- execute: the handler runs under a renewed lease and a timeout; its outcome is written to
  Postgres (completions in group commits) before the queue entry is finished.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

from arq.connections import ArqRedis
from databases import Database
from pydantic import ValidationError

from jobs.types import JobType, NonRetryableError
from jobs.worker import lease, retry
from jobs.worker.claims import Finish, QueueClaims, Taken
from jobs.worker.context import RunContext
from jobs.worker.metrics import DATABASE_DOWN, LEASE_HELD, RATE_LIMIT, SHOP_CAP, WorkerMetrics
from jobs.worker.mirror import persist, persist_shielded
from jobs.worker.ratelimit import RateLimiter
from jobs.worker.results import UnstorableResult, encode_result, storable_error
from service import store
from service.core import logs, queue
from service.core.batch import GroupCommit
from service.core.settings import Settings
from service.core.states import CANCELLED_MESSAGE, ClaimResult, QueueFinish, RunOutcome
from service.jobs_client import JobsClient

logger = logging.getLogger("shopjobs.worker")

T = TypeVar("T")

DB_UNAVAILABLE_DEFER_SECONDS = 1.0
SHOP_BUSY_DEFER_SECONDS = 0.5
# A job whose worker keeps dying under it (it crashes the process, say) is failed after this
# many starts beyond its attempts, instead of taking workers down forever.
EXTRA_STARTS_ALLOWED = 3
# Outcomes after which a batch child is final: its parent's batch may be over.
CHILD_ENDS = frozenset({RunOutcome.COMPLETED, RunOutcome.FAILED, RunOutcome.ABANDONED})


@dataclass(frozen=True)
class Runtime:
    """What a worker process builds at start-up (jobs/worker/process.py), fully, before it
    takes its first job; every run shares it."""

    settings: Settings
    types: dict[str, JobType]
    owner: str
    database: Database
    redis: ArqRedis
    limiter: RateLimiter
    claims: QueueClaims
    completions: GroupCommit[tuple[UUID, str, str], bool]
    resources: dict[str, Any]
    metrics: WorkerMetrics
    # Jobs of each shop running in this process: a job of a shop already at its cap here is
    # pushed back when taken (jobs/worker/claims.py); the claim enforces the cap across workers.
    running_by_shop: Counter[str] = field(default_factory=Counter)
    # Handlers that did not stop when cancelled at their timeout, still going: their jobs have
    # been given up on and their slots freed (see `_call`); /healthz counts them.
    abandoned: set[asyncio.Task[Any]] = field(default_factory=set)
    # A future per running handler, by job id, set when the job is cancelled (a message on
    # service/core/cancel.py's channel): `_call` then stops the handler.
    stop_requests: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    # How handlers start jobs (ctx.enqueue, ctx.enqueue_batch); None: they cannot.
    jobs: JobsClient | None = None

    def request_stop(self, job_id: str) -> bool:
        """Stop the handler of a cancelled job if this process runs it; False if it does not."""
        request = self.stop_requests.get(job_id)
        if request is None or request.done():
            return False
        request.set_result(None)
        return True


class JobCancelled(NonRetryableError):
    """The job was cancelled while it ran (dashboard, JobsClient.cancel); its row already
    says failed CANCELLED_MESSAGE."""

    def __init__(self) -> None:
        super().__init__(CANCELLED_MESSAGE)


class RunAbandoned(TimeoutError):
    """A run past its timeout that did not stop when cancelled: it is left behind."""


class InvalidStoredInput(NonRetryableError):
    """A row's input no longer fits its type's model (the model changed since it was queued)."""


class ResultNotRecorded(NonRetryableError):
    """Postgres refused a run's result (not unavailable: refused), so retrying cannot help."""


# Failures that end a job at once but whose text is about the app's code or its database, for
# its developer: the storefront and the merchant see the generic message (_is_public).
_PRIVATE_FAILURES = (UnstorableResult, InvalidStoredInput, ResultNotRecorded)


def _is_public(error: BaseException) -> bool:
    """Whether a failure's message may be shown to the storefront and the merchant
    (jobs.error_public): a handler's NonRetryableError, whose text its author wrote for them,
    and what the worker says itself (cancelled, timed out). An unexpected exception's text can
    hold anything (a driver's error with host names, a customer's data, a stack's innards):
    only the dashboard and the logs show it."""
    if isinstance(error, _PRIVATE_FAILURES):
        return False
    return isinstance(error, (NonRetryableError, TimeoutError))


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


def _ms_from_now(seconds: float) -> int:
    return int((time.time() + seconds) * 1000)


def _jitter(seconds: float) -> float:
    return seconds + random.uniform(0, min(0.2, seconds * 0.1 + 0.01))


def _is_job_id(job_id: str) -> bool:
    try:
        UUID(job_id)
    except ValueError:
        return False
    return True


def later(job_id: str, seconds: float) -> Finish:
    """Finish a queue entry by putting it back, due `seconds` from now."""
    return Finish(job_id, QueueFinish.LATER, _ms_from_now(seconds))


def _describe(error: BaseException, timeout: float) -> str:
    if isinstance(error, RunAbandoned):
        return str(error)
    if isinstance(error, TimeoutError):
        return f"Timed out after {timeout:g}s"
    return storable_error(str(error) or error.__class__.__name__)


async def _call(
    runtime: Runtime,
    job_id: str,
    job_type: str,
    handler: Coroutine[Any, Any, Any],
    timeout: float,
) -> Any:
    """Run a handler under its timeout, in a task of its own so that it can be left behind.

    A cancel of the job (Runtime.request_stop) cancels the handler at its next await and
    raises JobCancelled, whether or not the handler stops within the grace.

    A handler that swallows its cancellation (or keeps awaiting in a `finally`) would otherwise
    hold its slot, its lease and its job for ever, and shutdown would wait on it. At the
    timeout, and when the run itself is cancelled (shutdown, lease lost), the handler is
    cancelled and given JOB_ABANDON_GRACE_SECONDS to stop; past that it is abandoned: this
    returns (RunAbandoned at the timeout) and the job's outcome is decided without it.
    """
    task: asyncio.Task[Any] = asyncio.ensure_future(handler)
    stop = runtime.stop_requests[job_id] = asyncio.get_running_loop().create_future()
    try:
        await asyncio.wait({task, stop}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        await _stop(runtime, job_type, task)
        raise
    finally:
        runtime.stop_requests.pop(job_id, None)
    if stop.done() and not task.done():
        await _stop(runtime, job_type, task)
        raise JobCancelled
    if task.done():
        return task.result()
    if await _stop(runtime, job_type, task):
        raise TimeoutError
    grace = runtime.settings.job_abandon_grace_seconds
    raise RunAbandoned(
        f"Timed out after {timeout:g}s and did not stop within {grace:g}s of being "
        "cancelled: abandoned"
    )


async def _stop(runtime: Runtime, job_type: str, task: asyncio.Task[Any]) -> bool:
    """Cancel a handler's task; True if it stops within the grace, else it is abandoned."""
    task.cancel()
    grace = runtime.settings.job_abandon_grace_seconds
    try:
        await asyncio.wait({task}, timeout=grace)
    finally:
        if not task.done():
            runtime.abandoned.add(task)
            task.add_done_callback(lambda t: _abandoned_ended(runtime, t))
            runtime.metrics.run_abandoned(job_type, len(runtime.abandoned))
            logger.error(
                "run abandoned: its handler did not stop within %gs of being cancelled "
                "(%d abandoned run(s) still going in this process)",
                grace,
                len(runtime.abandoned),
            )
    if task.done() and not task.cancelled():
        task.exception()  # retrieved: the outcome no longer depends on it
    return task.done()


def _abandoned_ended(runtime: Runtime, task: asyncio.Task[Any]) -> None:
    runtime.abandoned.discard(task)
    runtime.metrics.abandoned_running.set(len(runtime.abandoned))
    if not task.cancelled():
        task.exception()
    logger.warning("an abandoned run ended (%d still going)", len(runtime.abandoned))


async def _record(runtime: Runtime, job_id: str, what: str, write: Callable[[], Awaitable[T]]) -> T:
    """`persist` a run's outcome, keeping the job's in-progress key alive until it is written:
    until then the job is this run's, and no worker may take it off the queue again."""
    async with lease.in_progress(runtime.redis, job_id, runtime.settings.job_lease_seconds):
        return await persist(what, write)


async def _admit(runtime: Runtime, incoming: Incoming) -> Finish | None:
    """None if the job may be claimed now; else when to look at it again (no attempt used)."""
    job_id = incoming.taken.job_id
    wait = await runtime.limiter.acquire()
    if wait:
        if logger.isEnabledFor(logging.DEBUG):  # log_fields() decodes the payload
            logger.debug(
                "job %s rate limited, deferred %.2fs", job_id, wait, extra=incoming.log_fields()
            )
        runtime.metrics.deferred(incoming.job_type.name, RATE_LIMIT)
        return later(job_id, _jitter(wait))
    return None


async def _claim(
    runtime: Runtime, admitted: list[Incoming]
) -> tuple[list[tuple[Incoming, store.Claim]], list[Finish]]:
    settings = runtime.settings
    by_id = {UUID(i.taken.job_id): i for i in admitted}
    claimed: list[tuple[Incoming, store.Claim]] = []
    outcome: dict[UUID, str] = {}
    if settings.shop_concurrency_limit:
        for job_id, incoming in by_id.items():
            state, claim = await store.claim_job(
                runtime.database,
                job_id,
                runtime.owner,
                settings.job_lease_seconds,
                settings.shop_concurrency_limit,
            )
            if claim is not None:
                claimed.append((incoming, claim))
            else:
                outcome[job_id] = state
    else:
        claims, outcome = await store.claim_jobs(
            runtime.database, list(by_id), runtime.owner, settings.job_lease_seconds
        )
        claimed = [(by_id[c.id], c) for c in claims]
    finishes = []
    for job_id, state in outcome.items():
        key = str(job_id)
        incoming = by_id[job_id]
        job_type = incoming.job_type.name
        if state == ClaimResult.SKIP:
            fields = incoming.log_fields()
            logger.info(
                "job %s type=%s skipped: already final or deleted", key, job_type, extra=fields
            )
            runtime.metrics.skipped_final(job_type)
            finishes.append(Finish(key, QueueFinish.DONE))
        elif state == ClaimResult.HELD:
            # Keep the queue entry: if its holder dies, this entry runs it after the lease.
            runtime.metrics.deferred(job_type, LEASE_HELD)
            finishes.append(later(key, settings.job_lease_seconds))
        else:
            runtime.metrics.deferred(job_type, SHOP_CAP)
            finishes.append(later(key, _jitter(SHOP_BUSY_DEFER_SECONDS)))
    return claimed, finishes


async def start_batch(
    runtime: Runtime, incoming: list[Incoming]
) -> list[tuple[str, Coroutine[Any, Any, None]]]:
    """Admit and claim a batch; finish what will not run; return a run per claimed job."""
    finishes: list[Finish] = []
    admitted: list[Incoming] = []
    for item in incoming:
        if not _is_job_id(item.taken.job_id):
            # Not an entry the web or the reconciler wrote (they queue job ids): it can never
            # be claimed, and its claim would fail the whole batch, every time, forever.
            logger.error("queue entry %.80r dropped: not a job id", item.taken.job_id)
            finishes.append(Finish(item.taken.job_id, QueueFinish.DONE))
            continue
        deferred = await _admit(runtime, item)
        if deferred is None:
            admitted.append(item)
        else:
            finishes.append(deferred)
    claimed: list[tuple[Incoming, store.Claim]] = []
    if admitted:
        try:
            claimed, unclaimed = await _claim(runtime, admitted)
            finishes += unclaimed
        except Exception as exc:  # Postgres unreachable: no attempt used, try again shortly
            logger.warning("claim of %d job(s) failed (%s), deferred", len(admitted), exc)
            finishes += [later(i.taken.job_id, DB_UNAVAILABLE_DEFER_SECONDS) for i in admitted]
            for item in admitted:
                runtime.metrics.deferred(item.job_type.name, DATABASE_DOWN)
    await asyncio.gather(*(runtime.claims.finish(f) for f in finishes))
    return [(str(claim.id), execute(runtime, item.job_type, claim)) for item, claim in claimed]


async def execute(runtime: Runtime, job_type: JobType, claim: store.Claim) -> None:
    runtime.running_by_shop[claim.shop] += 1
    runtime.metrics.run_started(job_type.name, claim.recovered)
    started = time.monotonic()
    outcome = RunOutcome.INTERRUPTED  # unless the run says otherwise: shutdown cancelled it
    try:
        # Every line logged during the run, by whatever code, carries the job's fields.
        with logs.bind(job_id=str(claim.id), type=job_type.name, shop=claim.shop):
            outcome, finish = await _run(runtime, job_type, claim)
            if claim.parent_id is not None and outcome in CHILD_ENDS:
                await end_batches(runtime, [claim.parent_id])
    except asyncio.CancelledError:
        await asyncio.shield(runtime.claims.finish(Finish(str(claim.id), QueueFinish.GIVE_BACK)))
        raise
    finally:
        runtime.metrics.run_ended(job_type.name, outcome, time.monotonic() - started)
        runtime.running_by_shop[claim.shop] -= 1
        if runtime.running_by_shop[claim.shop] <= 0:
            del runtime.running_by_shop[claim.shop]
    await runtime.claims.finish(finish)


async def _run(
    runtime: Runtime, job_type: JobType, claim: store.Claim
) -> tuple[RunOutcome, Finish]:
    """Run a claimed job and record its outcome in Postgres: (outcome, how to finish its
    queue entry), the outcome one of completed, failed, retried, abandoned and lease_lost."""
    settings = runtime.settings
    database = runtime.database
    job_id = str(claim.id)
    owner = runtime.owner
    max_attempts = job_type.max_attempts or settings.job_max_attempts
    timeout = job_type.timeout_seconds or settings.job_timeout_seconds
    failures = claim.retry_count
    tag = f"job {job_id} type={job_type.name} shop={claim.shop}"

    if claim.attempts > max_attempts + EXTRA_STARTS_ALLOWED:
        message = f"Abandoned: started {claim.attempts - 1} times without finishing"
        await _record(
            runtime,
            job_id,
            f"{tag} fail",
            lambda: store.fail_job(database, claim.id, owner, failures, message, public=True),
        )
        logger.error("%s failed: %s", tag, message)
        return RunOutcome.ABANDONED, Finish(job_id, QueueFinish.DONE)

    attempt = failures + 1
    if claim.recovered:
        logger.warning("%s recovered from a dead worker's expired lease", tag)
    logger.info("%s started attempt=%d", tag, attempt, extra={"attempt": attempt})
    context = RunContext(
        job_id=job_id,
        job_type=job_type.name,
        shop=claim.shop,
        attempt=attempt,
        run=claim.attempts,
        database=database,
        owner=owner,
        resources=runtime.resources,
        jobs=runtime.jobs,
    )
    started = time.monotonic()
    try:
        async with lease.held(database, runtime.redis, job_id, owner, settings.job_lease_seconds):
            try:
                data = job_type.input_model.model_validate(claim.input)
            except ValidationError as exc:
                raise InvalidStoredInput(f"Invalid input: {exc.errors(include_url=False)}") from exc
            result = await _call(
                runtime, job_id, job_type.name, job_type.handler(context, data), timeout
            )
            encoded = encode_result(result, settings.job_result_max_bytes).decode()
    except asyncio.CancelledError:
        await persist_shielded(
            f"{tag} release", lambda: store.release_job(database, claim.id, owner)
        )
        logger.info(
            "%s interrupted after %.2fs, given back to the queue", tag, time.monotonic() - started
        )
        raise
    except Exception as exc:
        return await _failed(runtime, job_type, claim, exc, timeout)

    if context.batch is not None:
        return await _await_children(runtime, job_type, claim, context, encoded, started)
    completions = runtime.completions
    try:
        if context.completion_writes:
            # Writes to commit with the completion get a transaction of their own
            # (store.complete_job) rather than a share of the group commit, whose one statement
            # completes many jobs.
            writes = context.completion_writes
            written = await _record(
                runtime,
                job_id,
                f"{tag} complete",
                lambda: store.complete_job(database, claim.id, owner, encoded, writes),
            )
        else:
            written = await _record(
                runtime,
                job_id,
                f"{tag} complete",
                lambda: completions.submit((claim.id, owner, encoded)),
            )
    except Exception as exc:  # Postgres refused this result (not unavailable): retrying won't do
        refused = ResultNotRecorded(f"Result could not be recorded: {exc}")
        return await _failed(runtime, job_type, claim, refused, timeout)
    elapsed = time.monotonic() - started
    if written:
        logger.info("%s completed in %.3fs", tag, elapsed)
        return RunOutcome.COMPLETED, Finish(job_id, QueueFinish.DONE)
    logger.warning("%s finished in %.3fs but its lease was lost; result not recorded", tag, elapsed)
    return RunOutcome.LEASE_LOST, Finish(job_id, QueueFinish.DONE)


async def _await_children(
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
        written = await _record(
            runtime,
            job_id,
            f"{tag} await batch",
            lambda: store.await_children(
                runtime.database, claim.id, runtime.owner, encoded, writes
            ),
        )
    except Exception as exc:  # Postgres refused this result (not unavailable)
        refused = ResultNotRecorded(f"Result could not be recorded: {exc}")
        return await _failed(runtime, job_type, claim, refused, 0)
    if not written:
        logger.warning("%s: its lease was lost before it could wait for its batch", tag)
        return RunOutcome.LEASE_LOST, Finish(job_id, QueueFinish.DONE)
    logger.info("%s handler done in %.3fs; waiting for its batch", tag, time.monotonic() - started)
    await end_batches(runtime, [claim.id])
    return RunOutcome.WAITING, Finish(job_id, QueueFinish.DONE)


async def end_batches(runtime: Runtime, parent_ids: list[UUID] | None) -> int:
    """Make final the batches (of `parent_ids`, or any) whose children are all final, and queue
    their follow-ups. Never raises: the reconciler's tick looks again (a follow-up not queued is
    a pending row it queues)."""
    try:
        finished, follow_ups = await store.finish_batches(runtime.database, parent_ids)
        if follow_ups:
            await queue.enqueue_many(
                runtime.redis, [(f.type, str(f.id), f.shop) for f in follow_ups]
            )
    except Exception as exc:
        logger.warning("batches not ended now (the reconciler will): %r", exc)
        return 0
    if finished:
        logger.info("%d batch(es) ended, %d follow-up job(s) queued", finished, len(follow_ups))
    return int(finished)


async def _failed(
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
    message = _describe(exc, timeout)
    public = _is_public(exc)
    decision = retry.decide(exc, failures, max_attempts, backoff, job_type.non_retryable)
    try:
        if decision.retry:
            await _record(
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
        await _record(
            runtime,
            job_id,
            f"{tag} fail",
            lambda: store.fail_job(database, claim.id, owner, failures, message, public),
        )
    except Exception as refused:  # not even the failure can be written: leave it to the lease
        logger.error("%s: its outcome could not be recorded: %r", tag, refused)
        return RunOutcome.LEASE_LOST, Finish(job_id, QueueFinish.DONE)
    logger.error("%s failed after %d attempt(s): %s", tag, failures, message)
    return RunOutcome.FAILED, Finish(job_id, QueueFinish.DONE)
