"""Running jobs: admit, claim, run the handler, record the outcome, finish the queue entry.

The worker loop (jobs/worker/process.py) takes due jobs off the queue in batches and hands
them here.
Every outcome is decided here, by the project's own attempt count (`retry_count` in Postgres,
not arq's `job_try`, which also counts crash re-runs and deferrals):

- admit: a start over the rate limit is deferred without using an attempt (a shop already at
  its cap was skipped before it was even taken: the take holds the cap, service/queue/take.py);
- claim: one Postgres statement claims the batch (jobs/…store.claim_jobs), so a job runs only
  if it is pending, retrying, or processing under an expired lease;
- execute: the handler runs under a renewed lease and a timeout (jobs/worker/abandon.py); its
  outcome is written to Postgres (completions in group commits, failures as the retry policy
  decides: jobs/worker/outcomes.py) before the queue entry is finished.

What a run shares with the others is the process's Runtime (jobs/worker/runtime.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from pydantic import ValidationError
from redis.exceptions import RedisError

from jobs.types import JobType
from jobs.worker import flow, traces
from jobs.worker.abandon import call
from jobs.worker.context import RunContext
from jobs.worker.metrics import DATABASE_DOWN, LEASE_HELD, RATE_LIMIT, ROW_LOCKED
from jobs.worker.mirror import persist_shielded
from jobs.worker.outcomes import (
    HandlerNotAsync,
    InvalidStoredInput,
    ResultNotRecorded,
    await_children,
    end_batches,
    failed,
    record,
)
from jobs.worker.ratelimit import type_scope
from jobs.worker.results import encode_result
from jobs.worker.runtime import Incoming, Runtime
from jobs.worker.suspend import suspended
from service import store
from service.core import logs, tracing
from service.core.states import UNINSTALLED_MESSAGE, ClaimResult, RunOutcome
from service.core.waits import Suspend
from service.queue import Finish, done, give_back, later, pending

if TYPE_CHECKING:
    from opentelemetry.trace import Span

logger = logging.getLogger("shopjobs.worker")

DB_UNAVAILABLE_DEFER_SECONDS = 1.0
ROW_LOCKED_DEFER_SECONDS = 0.1  # a wake's or a cancel's transaction: committed in moments
# A job whose worker keeps dying under it (it crashes the process, say) is failed after this
# many starts beyond its attempts, instead of taking workers down forever.
EXTRA_STARTS_ALLOWED = 3
# Outcomes after which a batch child is final: its parent's batch may be over.
CHILD_ENDS = frozenset({RunOutcome.COMPLETED, RunOutcome.FAILED, RunOutcome.ABANDONED})


def _jitter(seconds: float) -> float:
    return seconds + random.uniform(0, min(0.2, seconds * 0.1 + 0.01))


def _refusal(
    claim: store.Claim, max_attempts: int, max_age_seconds: float
) -> tuple[str, RunOutcome] | None:
    """Why a claimed job fails without running (its message, public, and the outcome counted),
    or None: it keeps killing its workers, its shop uninstalled the app meanwhile, or it is
    older than JOB_MAX_AGE_SECONDS."""
    if claim.attempts > max_attempts + EXTRA_STARTS_ALLOWED:
        return f"Abandoned: started {claim.attempts - 1} times without finishing", (
            RunOutcome.ABANDONED
        )
    if claim.shop_uninstalled:  # slipped past the uninstall's failing of the shop's jobs
        return UNINSTALLED_MESSAGE, RunOutcome.FAILED
    age = _age_seconds(claim)
    if age > max_age_seconds:
        message = f"Too old: {age:.0f}s since it was created, over JOB_MAX_AGE_SECONDS"
        return f"{message} ({max_age_seconds:g})", RunOutcome.FAILED
    return None


def _age_seconds(claim: store.Claim) -> float:
    if claim.created_at is None:
        return 0.0
    return (datetime.now(UTC) - claim.created_at).total_seconds()


def _is_job_id(job_id: str) -> bool:
    try:
        UUID(job_id)
    except ValueError:
        return False
    return True


async def _admit(runtime: Runtime, incoming: Incoming) -> Finish | None:
    """None if the job may be claimed now; else when to look at it again (no attempt used).

    The global limit and the type's own (`JobType.rate_limit`, per shop with `per_shop`) are
    checked together (jobs/worker/ratelimit.py). A job held back by its type's limit says so,
    and until when, in its progress_message (the claim clears it)."""
    job_id = incoming.taken.job_id
    own = incoming.job_type.rate_limit
    extra: tuple[tuple[str, int, float], ...] = ()
    if own is not None:
        shop = incoming.log_fields()["shop"] if own.per_shop else None
        extra = ((type_scope(incoming.job_type.name, shop), own.max, own.per_seconds),)
    wait = await runtime.limiter.acquire(extra=extra)
    if wait:
        if logger.isEnabledFor(logging.DEBUG):  # log_fields() decodes the payload
            logger.debug(
                "job %s rate limited, deferred %.2fs", job_id, wait, extra=incoming.log_fields()
            )
        runtime.metrics.deferred(incoming.job_type.name, RATE_LIMIT)
        delay = _jitter(wait)
        if own is not None and _is_job_id(job_id):
            until = datetime.fromtimestamp(time.time() + delay, UTC)
            try:
                await store.note_rate_limited(runtime.database, UUID(job_id), until)
            except Exception as exc:  # advisory: the deferral holds without it
                logger.warning("job %s: rate limit not noted (%r)", job_id, exc)
        # Readers show why it waits, and until when (service/job_views.py).
        with contextlib.suppress(RedisError, OSError):  # only what readers are told
            await pending.mark_deferred(runtime.redis, job_id, RATE_LIMIT, delay)
        return later(job_id, delay)
    return None


async def _claim(
    runtime: Runtime, admitted: list[Incoming]
) -> tuple[list[tuple[Incoming, store.Claim]], list[Finish]]:
    settings = runtime.settings
    by_id = {UUID(i.taken.job_id): i for i in admitted}
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
            finishes.append(done(key))
        elif state == ClaimResult.BUSY:
            # Its row was locked for a moment (a wake, a cancel): claim it again shortly.
            runtime.metrics.deferred(job_type, ROW_LOCKED)
            finishes.append(later(key, ROW_LOCKED_DEFER_SECONDS))
        else:
            # Held: keep the queue entry; if its holder dies, this entry runs it after the lease.
            runtime.metrics.deferred(job_type, LEASE_HELD)
            finishes.append(later(key, settings.job_lease_seconds))
    return claimed, finishes


async def start_runs(
    runtime: Runtime, incoming: list[Incoming]
) -> list[tuple[str, Coroutine[Any, Any, None]]]:
    """Admit and claim the jobs of one take; finish what will not run; return a run per
    claimed job."""
    finishes: list[Finish] = []
    admitted: list[Incoming] = []
    for item in incoming:
        if not _is_job_id(item.taken.job_id):
            # Not an entry the web or the reconciler wrote (they queue job ids): it can never
            # be claimed, and its claim would fail the whole take's claim, every time, forever.
            logger.error("queue entry %.80r dropped: not a job id", item.taken.job_id)
            finishes.append(done(item.taken.job_id))
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
    await asyncio.gather(*(runtime.queue.finish(f) for f in finishes))
    return [(str(claim.id), execute(runtime, item.job_type, claim)) for item, claim in claimed]


async def execute(runtime: Runtime, job_type: JobType, claim: store.Claim) -> None:
    if not tracing.enabled():  # no span to open: not even an empty context manager per run
        await _execute(runtime, job_type, claim, None)
        return
    async with traces.run_span(runtime, job_type, claim) as traced:
        await _execute(runtime, job_type, claim, traced)


async def _execute(
    runtime: Runtime, job_type: JobType, claim: store.Claim, traced: Span | None
) -> None:
    runtime.metrics.run_started(job_type.name, claim.recovered)
    started = time.monotonic()
    outcome = RunOutcome.INTERRUPTED  # unless the run says otherwise: shutdown cancelled it
    try:
        # Every line logged during the run, by whatever code, carries the job's fields.
        with logs.bind(job_id=str(claim.id), type=job_type.name, shop=claim.shop):
            outcome, finish = await _run(runtime, job_type, claim)
            await flow.after_run(runtime, job_type, claim, outcome)
            if claim.parent_id is not None and outcome in CHILD_ENDS:
                await end_batches(runtime, [claim.parent_id])
    except asyncio.CancelledError:
        await asyncio.shield(runtime.queue.finish(give_back(str(claim.id))))
        raise
    finally:
        runtime.metrics.run_ended(job_type.name, outcome, time.monotonic() - started)
        traces.end(traced, outcome)
    await runtime.queue.finish(finish)


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

    refusal = _refusal(claim, max_attempts, settings.job_max_age_seconds)
    if refusal is not None:  # failed before its handler runs: retrying cannot help
        message, outcome = refusal
        await record(
            runtime,
            job_id,
            f"{tag} fail",
            lambda: store.fail_job(database, claim.id, owner, failures, message, public=True),
        )
        logger.error("%s failed: %s", tag, message)
        return outcome, done(job_id)

    attempt = failures + 1
    if claim.resumed:
        logger.info("%s resumed after waiting for %s", tag, claim.resumed)
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
        wait_timeout_seconds=settings.job_wait_timeout_seconds,
        result_max_bytes=settings.job_result_max_bytes,
    )
    started = time.monotonic()
    try:
        with runtime.leases.held(job_id):
            try:
                data = job_type.parse_stored_input(claim.input)
            except ValidationError as exc:
                raise InvalidStoredInput(f"Invalid input: {exc.errors(include_url=False)}") from exc
            handler_run = job_type.handler(context, data)
            if not inspect.isawaitable(handler_run):
                raise HandlerNotAsync(
                    f"The handler of {job_type.name} returned a {type(handler_run).__name__}, "
                    "not an awaitable: declare it `async def`"
                )
            result = await call(runtime, job_id, job_type.name, handler_run, timeout)
            encoded = encode_result(result, settings.job_result_max_bytes).decode()
    except asyncio.CancelledError:
        await persist_shielded(
            f"{tag} release", lambda: store.release_job(database, claim.id, owner)
        )
        logger.info(
            "%s interrupted after %.2fs, given back to the queue", tag, time.monotonic() - started
        )
        raise
    except Suspend as wait:
        return await suspended(runtime, job_type, claim, wait)
    except Exception as exc:
        return await failed(runtime, job_type, claim, exc, timeout)

    if context.batch is not None:
        return await await_children(runtime, job_type, claim, context, encoded, started)
    completions = runtime.completions
    flow.before_completion(job_type, claim, context, encoded)  # its Flow trigger's job, if any
    try:
        if context.completion_writes:
            # Writes to commit with the completion get a transaction of their own
            # (store.complete_job) rather than a share of the group commit, whose one statement
            # completes many jobs.
            writes = context.completion_writes
            written = await record(
                runtime,
                job_id,
                f"{tag} complete",
                lambda: store.complete_job(database, claim.id, owner, encoded, writes),
            )
        else:
            written = await record(
                runtime,
                job_id,
                f"{tag} complete",
                lambda: completions.submit((claim.id, owner, encoded)),
            )
    except Exception as exc:  # Postgres refused this result (not unavailable): retrying won't do
        refused = ResultNotRecorded(f"Result could not be recorded: {exc}")
        return await failed(runtime, job_type, claim, refused, timeout)
    elapsed = time.monotonic() - started
    if written:
        logger.info("%s completed in %.3fs", tag, elapsed)
        return RunOutcome.COMPLETED, done(job_id)
    logger.warning("%s finished in %.3fs but its lease was lost; result not recorded", tag, elapsed)
    return RunOutcome.LEASE_LOST, done(job_id)
