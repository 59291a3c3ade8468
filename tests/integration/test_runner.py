"""The runner's branches (jobs/worker/runner.py), each run for real: entries taken off the real
Redis queue, claimed in the real Postgres, run with a real Runtime, as the worker loop does
(jobs/worker/process.py), minus the loop. What each branch leaves is read back from both."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix
from databases import Database
from pydantic import BaseModel

from jobs.builtin.echo import JOB_TYPE as ECHO
from jobs.types import JobContext, JobType
from jobs.worker.lease import Leases
from jobs.worker.metrics import WorkerMetrics
from jobs.worker.ratelimit import RateLimiter
from jobs.worker.resources import Resources
from jobs.worker.results import MAX_ERROR_CHARS
from jobs.worker.runner import EXTRA_STARTS_ALLOWED, start_runs
from jobs.worker.runtime import Incoming, Runtime
from service import queue, store
from service.core.group_commit import GroupCommit
from service.core.settings import Settings
from service.jobs_client import JobsClient
from service.shopify.admin import AdminClient
from tests.support.jobs import add_job, make_shop, wait_for_status
from tests.support.queue_entries import queued_score

OWNER = "runner-test-worker"


@pytest.fixture
async def runtime(
    settings: Settings, database: Database, redis: ArqRedis
) -> AsyncIterator[Runtime]:
    """What the worker builds at start-up (jobs/worker/startup.py: on_startup)."""
    yield Runtime(
        settings=settings,
        types={ECHO.name: ECHO},
        owner=OWNER,
        database=database,
        redis=redis,
        limiter=RateLimiter(redis, settings.rate_limit_max, settings.rate_limit_window_seconds),
        queue=queue.Taker(redis),
        completions=GroupCommit(lambda done: store.complete_jobs(database, done)),
        resources=Resources(admin=AdminClient(settings, database, redis)),
        metrics=WorkerMetrics(),
        leases=Leases(database, redis, OWNER, settings.job_lease_seconds),
    )


async def run_due(runtime: Runtime, job_type: JobType = ECHO, ahead: float = 0) -> list[str]:
    """Take what is due (`ahead` seconds from now, to skip a backoff), start what was taken, and
    run every claimed job to its end; the ids of the jobs that ran."""
    lease_ms = int(runtime.settings.job_lease_seconds * 1000)
    now_ms = int((time.time() + ahead) * 1000)
    taken = await runtime.queue.take(10, lease_ms, now_ms, 100)
    runs = await start_runs(runtime, [Incoming(t, job_type) for t in taken])
    for _, run in runs:
        await run
    return [job_id for job_id, _ in runs]


def outcomes(runtime: Runtime, job_type: str = "echo") -> dict[str, int]:
    """How many runs ended in each way, as the worker's metrics counted them."""
    counted = {}
    for outcome in ("completed", "failed", "retried", "interrupted", "lease_lost"):
        value = runtime.metrics.registry.get_sample_value(
            "shopjobs_job_run_seconds_count", {"type": job_type, "outcome": outcome}
        )
        if value:
            counted[outcome] = int(value)
    return counted


async def queued_at(redis: ArqRedis, job_id: uuid.UUID) -> float | None:
    """When the job's queue entry is due, in seconds from now (None: not queued)."""
    score = await queued_score(redis, str(job_id))
    return None if score is None else score / 1000 - time.time()


async def assert_dropped(redis: ArqRedis, job_id: uuid.UUID) -> None:
    """Finished for good: no queue entry, no payload, no in-progress key."""
    assert await queued_at(redis, job_id) is None
    assert not await redis.exists(job_key_prefix + str(job_id))
    assert not await redis.exists(in_progress_key_prefix + str(job_id))


async def job(database: Database, job_id: uuid.UUID) -> store.Job:
    found = await store.get_job(database, job_id)
    assert found is not None
    return found


async def test_a_job_that_succeeds_is_completed_and_dropped_from_the_queue(
    runtime: Runtime, database: Database, redis: ArqRedis
) -> None:
    job_id = await add_job(database, redis, await make_shop(database), {"message": "done"})
    assert await run_due(runtime) == [str(job_id)]
    done = await job(database, job_id)
    assert (done.status, done.result, done.attempts, done.retry_count) == (
        "completed",
        {"message": "done"},
        1,
        0,
    )
    assert done.lease_owner is None and done.finished_at is not None
    await assert_dropped(redis, job_id)
    assert outcomes(runtime) == {"completed": 1}


async def test_a_failed_attempt_is_retried_with_backoff(
    runtime: Runtime, database: Database, redis: ArqRedis
) -> None:
    backoff = 5.0  # long enough that "not due yet" holds however slow the machine
    slow = dataclasses.replace(ECHO, backoff_seconds=backoff)
    job_id = await add_job(
        database, redis, await make_shop(database), {"message": "x", "fail_times": 2}
    )
    await run_due(runtime, slow)
    first = await job(database, job_id)
    assert (first.status, first.retry_count, first.attempts) == ("retrying", 1, 1)
    assert first.error_message == "echo: planned failure 1 of 2" and first.lease_owner is None
    assert 0 < (await queued_at(redis, job_id) or 0) <= backoff
    assert not await redis.exists(in_progress_key_prefix + str(job_id))
    assert await run_due(runtime, slow) == []  # not due yet

    await run_due(runtime, slow, ahead=backoff)
    second = await job(database, job_id)
    assert (second.status, second.retry_count) == ("retrying", 2)
    assert backoff < (await queued_at(redis, job_id) or 0) <= 2 * backoff  # doubled

    await run_due(runtime, slow, ahead=2 * backoff)
    third = await job(database, job_id)
    assert (third.status, third.retry_count, third.attempts) == ("completed", 2, 3)
    assert outcomes(runtime) == {"retried": 2, "completed": 1}


async def test_the_last_allowed_failure_fails_the_job(
    runtime: Runtime, database: Database, redis: ArqRedis
) -> None:
    twice = dataclasses.replace(ECHO, max_attempts=2, backoff_seconds=0.05)
    job_id = await add_job(
        database, redis, await make_shop(database), {"message": "x", "fail_times": 5}
    )
    await run_due(runtime, twice)
    await run_due(runtime, twice, ahead=1)
    failed = await job(database, job_id)
    assert (failed.status, failed.retry_count, failed.attempts) == ("failed", 2, 2)
    assert failed.error_message == "echo: planned failure 2 of 5" and failed.result is None
    await assert_dropped(redis, job_id)
    assert outcomes(runtime) == {"retried": 1, "failed": 1}


async def test_a_non_retryable_error_fails_the_job_at_once(
    runtime: Runtime, database: Database, redis: ArqRedis
) -> None:
    job_id = await add_job(
        database, redis, await make_shop(database), {"message": "x", "fail_permanently": True}
    )
    await run_due(runtime)
    failed = await job(database, job_id)
    assert (failed.status, failed.retry_count, failed.attempts) == ("failed", 1, 1)
    assert failed.error_message == "echo: asked to fail permanently"
    await assert_dropped(redis, job_id)
    assert outcomes(runtime) == {"failed": 1}


async def test_invalid_input_fails_the_job_at_once(
    runtime: Runtime, database: Database, redis: ArqRedis
) -> None:
    job_id = await add_job(database, redis, await make_shop(database), {"message": 7})
    await run_due(runtime)
    failed = await job(database, job_id)
    assert failed.status == "failed" and (failed.error_message or "").startswith("Invalid input")
    assert outcomes(runtime) == {"failed": 1}


async def test_a_timeout_is_a_failed_attempt(
    runtime: Runtime, database: Database, redis: ArqRedis
) -> None:
    quick = dataclasses.replace(ECHO, timeout_seconds=0.3)
    job_id = await add_job(
        database, redis, await make_shop(database), {"message": "x", "sleep_ms": 5000}
    )
    begun = time.monotonic()
    await run_due(runtime, quick)
    assert time.monotonic() - begun < 2
    timed_out = await job(database, job_id)
    assert (timed_out.status, timed_out.retry_count) == ("retrying", 1)
    assert timed_out.error_message == "Timed out after 0.3s"
    assert outcomes(runtime) == {"retried": 1}


async def test_a_rate_limited_start_is_deferred_without_using_an_attempt(
    runtime: Runtime, database: Database, redis: ArqRedis
) -> None:
    runtime = dataclasses.replace(runtime, limiter=RateLimiter(redis, limit=1, window_seconds=60))
    shop = await make_shop(database)
    jobs = {str(await add_job(database, redis, shop, {"message": m})) for m in ("a", "b")}
    # Either may start: two entries queued in the same millisecond tie, and the tie is broken
    # by id, not by the order they were added in.
    ran = await run_due(runtime)
    assert len(ran) == 1 and set(ran) < jobs
    second = uuid.UUID((jobs - set(ran)).pop())
    deferred = await job(database, second)
    assert (deferred.status, deferred.attempts, deferred.retry_count) == ("pending", 0, 0)
    assert deferred.started_at is None
    assert 55 < (await queued_at(redis, second) or 0) <= 60.3  # when the window has room
    assert not await redis.exists(in_progress_key_prefix + str(second))
    deferrals = runtime.metrics.registry.get_sample_value(
        "shopjobs_job_deferrals_total", {"type": "echo", "reason": "rate_limit"}
    )
    assert deferrals == 1
    assert outcomes(runtime) == {"completed": 1}


class StealInput(BaseModel):
    pass


async def steal_lease(ctx: JobContext, data: StealInput) -> dict[str, Any]:
    """Another worker takes the job over while this run is still going (this one stalled)."""
    await ctx.database.execute(
        "UPDATE jobs SET lease_owner = 'another-worker' WHERE id = :id",
        {"id": uuid.UUID(ctx.job_id)},
    )
    return {"written": "never"}


async def test_a_run_that_lost_its_lease_records_nothing(
    runtime: Runtime, database: Database, redis: ArqRedis
) -> None:
    stolen = JobType(name="steal", input_model=StealInput, handler=steal_lease)
    job_id = await add_job(database, redis, await make_shop(database), {}, job_type="steal")
    await run_due(runtime, stolen)
    taken_over = await job(database, job_id)
    assert (taken_over.status, taken_over.lease_owner) == ("processing", "another-worker")
    assert taken_over.result is None
    await assert_dropped(redis, job_id)  # finished with the run: the job is the new holder's
    assert outcomes(runtime, "steal") == {"lease_lost": 1}


async def test_a_job_that_keeps_killing_its_workers_is_abandoned(
    runtime: Runtime, database: Database, redis: ArqRedis
) -> None:
    job_id = await add_job(database, redis, await make_shop(database), {"message": "x"})
    starts = runtime.settings.job_max_attempts + EXTRA_STARTS_ALLOWED
    await database.execute(
        "UPDATE jobs SET attempts = :n WHERE id = :id", {"n": starts, "id": job_id}
    )
    await run_due(runtime)
    abandoned = await job(database, job_id)
    assert abandoned.status == "failed" and abandoned.result is None
    assert abandoned.error_message == f"Abandoned: started {starts} times without finishing"
    await assert_dropped(redis, job_id)
    assert (
        runtime.metrics.registry.get_sample_value("shopjobs_jobs_failed_total", {"type": "echo"})
        == 1
    )


async def test_an_interrupted_run_gives_its_job_back(
    runtime: Runtime, database: Database, redis: ArqRedis
) -> None:
    job_id = await add_job(
        database, redis, await make_shop(database), {"message": "x", "sleep_ms": 10_000}
    )
    running = asyncio.create_task(run_due(runtime))
    await wait_for_status(database, job_id, {"processing"})
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    given_back = await job(database, job_id)
    assert (given_back.status, given_back.lease_owner, given_back.retry_count) == (
        "retrying",
        None,
        0,
    )
    assert not await redis.exists(in_progress_key_prefix + str(job_id))
    assert await queued_at(redis, job_id) is not None  # due again, for any worker
    assert outcomes(runtime) == {"interrupted": 1}


class Empty(BaseModel):
    pass


class Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("no message")


class OwnBase(BaseException):
    """A library's BaseException subclass (gevent's Timeout, say): not an Exception."""


async def raises_unprintable(ctx: JobContext, data: Empty) -> None:
    raise Unprintable


async def raises_own_base(ctx: JobContext, data: Empty) -> None:
    raise OwnBase("deep")


async def raises_cancelled(ctx: JobContext, data: Empty) -> None:
    """A future of a shared client, cancelled by someone else, awaited by this handler."""
    raise asyncio.CancelledError


SYNC_CALLS: list[str] = []


def written_sync(ctx: JobContext, data: Empty) -> dict[str, Any]:
    """`def`, not `async def`: an easy slip."""
    SYNC_CALLS.append(ctx.job_id)
    return {"done": True}


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (raises_unprintable, "Unprintable (its message could not be read)"),
        (raises_own_base, "The handler raised OwnBase: deep"),
        (raises_cancelled, "The handler raised CancelledError without being cancelled"),
    ],
)
async def test_an_odd_exception_fails_the_attempt_like_any_other(
    runtime: Runtime, database: Database, redis: ArqRedis, handler: Any, message: str
) -> None:
    """Before: the first two escaped the runner, leaving the job `processing` under a dead
    run's lease (to crash again until "Abandoned"); the third was taken for a shutdown and
    given back with its start taken back, for ever."""
    odd = JobType(name="odd", input_model=Empty, handler=handler, max_attempts=2)
    job_id = await add_job(database, redis, await make_shop(database), {}, job_type="odd")
    await run_due(runtime, odd)
    first = await job(database, job_id)
    assert (first.status, first.retry_count, first.attempts) == ("retrying", 1, 1)
    assert first.error_message == message and first.lease_owner is None
    await run_due(runtime, odd, ahead=1)
    failed = await job(database, job_id)
    assert (failed.status, failed.retry_count, failed.error_message) == ("failed", 2, message)
    assert outcomes(runtime, "odd") == {"retried": 1, "failed": 1}


async def test_a_handler_that_is_not_async_fails_at_once_saying_so(
    runtime: Runtime, database: Database, redis: ArqRedis
) -> None:
    """Before: it ran, returned a dict, and `call` refused it with asyncio's "An asyncio.Future,
    a coroutine or an awaitable is required"; retried, it ran (with its effects) every attempt."""
    sync = JobType(name="sync", input_model=Empty, handler=written_sync, max_attempts=3)
    job_id = await add_job(database, redis, await make_shop(database), {}, job_type="sync")
    await run_due(runtime, sync)
    failed = await job(database, job_id)
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert failed.error_message == (
        "The handler of sync returned a dict, not an awaitable: declare it `async def`"
    )
    assert failed.shown_error == "The job failed"  # the developer's bug
    assert SYNC_CALLS == [str(job_id)]
    await assert_dropped(redis, job_id)


async def cancelled_between_pages(ctx: JobContext, data: Empty) -> dict[str, Any]:
    """A parent cancelled while it adds pages of children, its stop message not yet there (in
    flight, or lost: then only its next lease renewal stops it, JOB_LEASE_SECONDS / 3 on)."""
    await ctx.enqueue_batch("echo", [{"message": "page 1"}])
    await store.cancel_job(ctx.database, uuid.UUID(ctx.job_id))
    await ctx.enqueue_batch("echo", [{"message": "page 2"}])
    return {"pages": 2}


async def test_a_cancelled_parent_adds_no_children(
    runtime: Runtime, database: Database, redis: ArqRedis
) -> None:
    """Before: the second page's children were written and queued after the cancel, and ran,
    though "cancelling a batch parent cancels its unfinished children"."""
    parent_type = JobType(name="pages", input_model=Empty, handler=cancelled_between_pages)
    types = {ECHO.name: ECHO, parent_type.name: parent_type}
    runtime = dataclasses.replace(runtime, types=types, jobs=JobsClient(database, redis, types))
    parent = await add_job(database, redis, await make_shop(database), {}, job_type="pages")
    await run_due(runtime, parent_type)
    cancelled = await job(database, parent)
    assert (cancelled.status, cancelled.error_message) == ("failed", "Cancelled")
    children = await database.fetch_all(
        "SELECT input->>'message' AS m, status FROM jobs WHERE parent_id = :p", {"p": parent}
    )
    assert [(c._mapping["m"], c._mapping["status"]) for c in children] == [("page 1", "failed")]
    assert await run_due(runtime) == []  # nothing of the batch left to run


async def reports_raw_text(ctx: JobContext, data: Empty) -> dict[str, Any]:
    """Progress messages built from a third party's text: a NUL byte, a huge dump."""
    seen = {}
    for name, message in (("nul", "importing bad\x00title"), ("huge", "x" * 1_000_000)):
        await ctx.report_progress(50, message)
        seen[name] = await ctx.database.fetch_val(
            "SELECT progress_message FROM jobs WHERE id = :id", {"id": uuid.UUID(ctx.job_id)}
        )
    return seen


async def test_a_progress_message_is_stored_as_error_texts_are(
    runtime: Runtime, database: Database, redis: ArqRedis
) -> None:
    """Before: a NUL made Postgres refuse every report (only a warning in the log), and a
    megabyte was stored as is, and sent to the storefront on every status poll."""
    progress = JobType(name="progress", input_model=Empty, handler=reports_raw_text)
    job_id = await add_job(database, redis, await make_shop(database), {}, job_type="progress")
    await run_due(runtime, progress)
    done = await job(database, job_id)
    assert done.status == "completed"
    assert done.result["nul"] == "importing bad\ufffdtitle"
    assert len(done.result["huge"]) == MAX_ERROR_CHARS and done.result["huge"].endswith("(cut)")


class NarrowFollowUpInput(BaseModel):
    report_id: str  # not what a batch's end gives: parent_id, completed, failed


async def never_runs(ctx: JobContext, data: NarrowFollowUpInput) -> dict[str, Any]:
    raise AssertionError("the follow-up of a batch that never started")


async def fans_out_to_a_narrow_follow_up(ctx: JobContext, data: Empty) -> dict[str, Any]:
    await ctx.enqueue_batch("echo", [{"message": "child"}], on_complete="narrow_follow_up")
    return {}


async def test_a_follow_up_that_refuses_the_batch_end_fails_the_parent_at_once(
    runtime: Runtime, database: Database, redis: ArqRedis
) -> None:
    """Before: the children ran, and the mistake showed only after the last one, as a failed
    follow-up; now the parent fails at once, naming the follow-up, and writes no child."""
    follow_up = JobType(
        name="narrow_follow_up", input_model=NarrowFollowUpInput, handler=never_runs
    )
    parent_type = JobType(
        name="narrow_parent", input_model=Empty, handler=fans_out_to_a_narrow_follow_up
    )
    types = {ECHO.name: ECHO, parent_type.name: parent_type, follow_up.name: follow_up}
    runtime = dataclasses.replace(runtime, types=types, jobs=JobsClient(database, redis, types))
    parent = await add_job(database, redis, await make_shop(database), {}, job_type="narrow_parent")
    await run_due(runtime, parent_type)
    failed = await job(database, parent)
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert failed.error_message.startswith("The follow-up narrow_follow_up refuses the input")
    assert "report_id" in failed.error_message
    assert failed.shown_error == "The job failed"
    children = await database.fetch_val(
        "SELECT count(*) FROM jobs WHERE parent_id = :p", {"p": parent}
    )
    assert children == 0


async def enqueues_a_misspelt_type(ctx: JobContext, data: Empty) -> dict[str, Any]:
    await ctx.enqueue("ecko", {"message": "typo"})
    return {}


async def enqueues_an_input_it_built_wrong(ctx: JobContext, data: Empty) -> dict[str, Any]:
    await ctx.enqueue("echo", {"message": 42})
    return {}


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (enqueues_a_misspelt_type, "Unknown job type 'ecko'"),
        (enqueues_an_input_it_built_wrong, "Invalid input: "),
    ],
)
async def test_a_refused_ctx_enqueue_fails_the_job_at_once(
    runtime: Runtime, database: Database, redis: ArqRedis, handler: Any, expected: str
) -> None:
    """Before: retried up to max_attempts, though the next attempt builds the same call."""
    spawner = JobType(name="spawner", input_model=Empty, handler=handler, max_attempts=3)
    types = {ECHO.name: ECHO, spawner.name: spawner}
    runtime = dataclasses.replace(runtime, types=types, jobs=JobsClient(database, redis, types))
    job_id = await add_job(database, redis, await make_shop(database), {}, job_type="spawner")
    await run_due(runtime, spawner)
    failed = await job(database, job_id)
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert failed.error_message.startswith(expected)
    assert failed.shown_error == "The job failed"
