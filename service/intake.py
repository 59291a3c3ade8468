"""Taking jobs in: the one path from a request to a job row and its queue entry.

The order per job is fixed: the row is written first, then the queue entry, and a row whose
queue entry failed is deleted again (`NotQueued`), so nothing is left in Postgres that no worker
will ever see. Every queue entry is put with the same timeout and timed by its source in the
`shopjobs_enqueue_duration_seconds` histogram.

Under load, many `POST /proxy/process` requests are in flight at once; each used to cost its
own INSERT and its own Redis call. Here concurrent requests share one INSERT of many rows and
one Redis pipeline (service/core/group_commit.py), and an idle system still writes each job at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid4

import orjson
from arq.connections import ArqRedis
from databases import Database
from pydantic import BaseModel, ValidationError

from jobs.types import JobType
from service import queue, store
from service.core import tracing
from service.core.db import UNAVAILABLE_ERRORS
from service.core.group_commit import GroupCommit
from service.queue import Entry

logger = logging.getLogger("shopjobs.intake")

# A queue that does not answer within this is treated as down: the caller hears of it quickly.
ENQUEUE_TIMEOUT_SECONDS = 1.0
# How long a refused creation keeps trying to delete a row it may have written after all.
FORGET_SECONDS = 2.0

NewRow = tuple[UUID, int, str, str, str | None, str | None, str, str | None]
# The longest Idempotency-Key, from the storefront, the merchant API or the app's own code
# (jobs.idempotency_key is text; the bound keeps its unique index's entries small).
MAX_IDEMPOTENCY_KEY_LENGTH = 255


@dataclass(frozen=True)
class InputProblem:
    """One reason a job's input was refused: where (`path`, from "input" down to the field),
    what, and pydantic's error type when pydantic found it."""

    path: tuple[str, ...]
    message: str
    type: str | None = None


class InvalidJobInput(Exception):
    """A job type's input model refused an input, or the input cannot be stored as jsonb.

    Each caller answers it its own way: the web with a 400 naming the fields, the webhook
    receiver with "invalid payload", JobsClient with InvalidInput.
    """

    def __init__(self, problems: list[InputProblem]) -> None:
        super().__init__("; ".join(f"{'.'.join(p.path)}: {p.message}" for p in problems))
        self.problems = problems


def validate_input(
    job_type: JobType, raw: Any, model: type[BaseModel] | None = None
) -> dict[str, Any]:
    """The input as `job_type`'s model (or the narrower `model` a caller must fit, such as the
    type's `proxy_input_model`) accepts it, JSON-ready (what is stored), or InvalidJobInput:
    the one check of every path that creates a job.

    Besides the model, the stored form must fit jsonb: no NUL character anywhere, and no
    integer beyond 64 bits (pydantic's int takes any; orjson, which writes the row, does not).
    """
    try:
        validated = (model or job_type.input_model).model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        raise InvalidJobInput(
            [
                InputProblem(("input", *(str(part) for part in e["loc"])), e["msg"], e["type"])
                for e in errors
            ]
        ) from None
    # What the caller gave, not every default: a default belongs to the release that runs
    # the job (the worker's model fills it in), and a stored default names a field that a
    # later release may drop or rename, which would fail the queued job after an upgrade
    # (docs/upgrading.md#job-inputs-across-releases).
    data: dict[str, Any] = validated.model_dump(mode="json", exclude_unset=True)
    if model is not None and model is not job_type.input_model:
        # A narrower model's own defaults (a smaller page for the storefront) are kept where
        # `input_model`'s would differ: the worker must run what this model allowed.
        chosen = validated.model_dump(mode="json")
        filled = job_type.input_model.model_validate(data).model_dump(mode="json")
        data.update({k: v for k, v in chosen.items() if k not in data and filled.get(k) != v})
    if not store.jsonb_safe(data):
        raise InvalidJobInput([InputProblem(("input",), "contains a NUL character")])
    try:
        orjson.dumps(data)
    except TypeError as exc:
        raise InvalidJobInput([InputProblem(("input",), str(exc), "int_too_big")]) from None
    return data


class Source(StrEnum):
    """Who asked for a job: the row's `source` column and the enqueue histogram's label."""

    PROXY = "proxy"
    WEBHOOK = "webhook"
    # The merchant API's /api/jobs, and the dashboard's retries (no new rows). The value, from
    # when that API was called "admin", is stored in jobs.source and labels a metric: kept.
    MERCHANT = "admin"
    APP = "app"  # the app's own code: a route, a webhook handler (service/jobs_client.py)
    JOB = "job"  # a handler, through ctx.enqueue
    CLI = "cli"  # python -m service jobs enqueue
    SCHEDULE = "schedule"  # a job type's cron schedule (jobs/worker/schedules.py)
    FLOW = "flow"  # a Shopify Flow action (service/web/flow.py)


# The priority of a job the merchant starts (the embedded app, the dashboard's retries), when
# its type sets none: above the default 0 of background work, so a pressed button does not
# wait behind the shop's nightly sync.
MERCHANT_PRIORITY = 5


def queue_priority(job_type: JobType, source: Source, priority: int | None = None) -> int:
    """A new job's priority: the enqueue's, else its type's, else by who asked."""
    if priority is not None:
        return queue.check_priority(priority)
    if job_type.priority is not None:
        return job_type.priority
    return MERCHANT_PRIORITY if source == Source.MERCHANT else 0


def concurrency_key(job_type: JobType, job_input: dict[str, Any]) -> str | None:
    """What the job works on, for its type's per-key cap (JobType.concurrency_key); None for a
    type without one. Computed from the validated input, as the handler will see it."""
    if job_type.concurrency_key is None:
        return None
    key = str(job_type.concurrency_key(job_type.input_model.model_validate(job_input)))
    return key.replace("|", "/")[:200]  # "|" separates the parts of a cap's name


def queue_entry(
    job_type: JobType,
    job_id: UUID,
    shop: str,
    job_input: dict[str, Any],
    source: Source,
    priority: int | None = None,
) -> Entry:
    """The queue entry of a job: its type, id, shop, priority and concurrency key."""
    return Entry(
        job_type.name,
        str(job_id),
        shop,
        queue_priority(job_type, source, priority),
        concurrency_key(job_type, job_input),
    )


class QueueOutcome(StrEnum):
    """How putting one entry on the queue went, as the enqueue histogram counts it."""

    QUEUED = "queued"
    DUPLICATE = "duplicate"  # an entry with this job id is already queued or running
    ERROR = "error"  # Redis down, slow or refusing


# (source, outcome, seconds) of one enqueue, for the process's metrics.
ObserveEnqueue = Callable[[Source, QueueOutcome, float], None]


class NotQueued(Exception):
    """The queue did not take a job whose row was written; the row has been deleted again."""

    def __init__(self, job_id: UUID) -> None:
        super().__init__(f"job {job_id} could not be queued")
        self.job_id = job_id


@dataclass(frozen=True)
class Submitted:
    """The job a submission stands for: the new one (queued), or the one that already held
    its idempotency key (`existing`, queued back when it was created)."""

    job_id: UUID
    existing: store.Job | None


class Intake:
    def __init__(
        self,
        database: Database,
        redis: ArqRedis,
        observe: ObserveEnqueue,
    ) -> None:
        self.database = database
        self.redis = redis
        self._observe = observe
        self._rows: GroupCommit[NewRow, bool] = GroupCommit(self._insert)
        # Each entry with the loop time its caller stops waiting at.
        self._queue: GroupCommit[tuple[Entry, float], bool] = GroupCommit(self._enqueue)

    async def submit(
        self,
        job_type: JobType,
        *,
        shop: store.Shop,
        job_input: dict[str, Any],
        source: Source,
        idempotency_key: str | None = None,
        customer_id: str | None = None,
        staff_user_id: str | None = None,
        run_at: datetime | None = None,
        parent_id: UUID | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
        debounce: store.DebounceSpec | None = None,
    ) -> Submitted:
        """Write a `pending` job and queue it; `job_input` is already validated, JSON-ready.

        With `run_at` (timezone-aware) the job waits until then: the row says when (`run_at`)
        and the queue entry's score is that time, so no worker takes it earlier. `parent_id`
        makes it a child of a batch (service/batches.py writes batches in bulk; this is for one).

        Raises NotQueued if the queue did not take it, and the database's own error if Postgres
        is unreachable (after deleting the row, which may have committed all the same).
        """
        wanted = uuid4()
        if not tracing.enabled():  # off: not even a context manager per job
            return await self._submit(
                wanted, job_type, shop=shop, job_input=job_input, source=source,
                idempotency_key=idempotency_key, customer_id=customer_id,
                staff_user_id=staff_user_id, run_at=run_at, parent_id=parent_id,
                priority=priority, unique_key=unique_key, debounce=debounce,
            )  # fmt: skip
        attributes = {"shopjobs.job.type": job_type.name, "shopjobs.shop": shop.domain,
                      "shopjobs.source": str(source)}  # fmt: skip
        with tracing.span(f"enqueue {job_type.name}", attributes, kind="PRODUCER") as traced:
            submitted = await self._submit(
                wanted, job_type, shop=shop, job_input=job_input, source=source,
                idempotency_key=idempotency_key, customer_id=customer_id,
                staff_user_id=staff_user_id, run_at=run_at, parent_id=parent_id,
                priority=priority, unique_key=unique_key, debounce=debounce,
            )  # fmt: skip
            if traced is not None:
                traced.set_attribute("shopjobs.job.id", str(submitted.job_id))
                traced.set_attribute("shopjobs.created", submitted.existing is None)
        return submitted

    async def _submit(
        self,
        wanted: UUID,
        job_type: JobType,
        *,
        shop: store.Shop,
        job_input: dict[str, Any],
        source: Source,
        idempotency_key: str | None,
        customer_id: str | None,
        staff_user_id: str | None,
        run_at: datetime | None,
        parent_id: UUID | None,
        priority: int | None,
        unique_key: str | None,
        debounce: store.DebounceSpec | None,
    ) -> Submitted:
        if unique_key is not None or debounce is not None:
            return await self._submit_keyed(
                job_type, shop=shop, job_input=job_input, source=source,
                idempotency_key=idempotency_key, customer_id=customer_id,
                staff_user_id=staff_user_id, run_at=run_at, parent_id=parent_id,
                unique_key=unique_key, debounce=debounce, job_id=wanted, priority=priority,
            )  # fmt: skip
        try:
            if run_at is None and parent_id is None:
                job_id, existing = await self._create(
                    shop_id=shop.id,
                    job_type=job_type.name,
                    job_input=job_input,
                    customer_id=customer_id,
                    idempotency_key=idempotency_key,
                    source=source,
                    job_id=wanted,
                    staff_user_id=staff_user_id,
                )
            else:  # rare: a statement of its own rather than a share of the group commit
                job, created = await store.create_job(
                    self.database, shop_id=shop.id, job_type=job_type.name, job_input=job_input,
                    customer_id=customer_id, idempotency_key=idempotency_key, source=source,
                    job_id=wanted, run_at=run_at, parent_id=parent_id,
                    staff_user_id=staff_user_id,
                )  # fmt: skip
                job_id, existing = job.id, None if created else job
        except UNAVAILABLE_ERRORS:
            await self._forget(wanted)
            raise
        if existing is not None:
            return Submitted(existing.id, existing)
        entry = queue_entry(job_type, job_id, shop.domain, job_input, source, priority)
        await self.queue(entry, source, run_at=run_at)
        return Submitted(job_id, None)

    async def _submit_keyed(
        self,
        job_type: JobType,
        *,
        shop: store.Shop,
        job_input: dict[str, Any],
        source: Source,
        idempotency_key: str | None,
        customer_id: str | None,
        staff_user_id: str | None,
        run_at: datetime | None,
        parent_id: UUID | None,
        unique_key: str | None,
        debounce: store.DebounceSpec | None,
        job_id: UUID,
        priority: int | None,
    ) -> Submitted:
        """`submit` for a job with a keep-one-pending key or a debounce (store/flow.py): the
        pending job that holds the key is returned (a debounce pushes its due time, in the
        queue too); else a new one is written and queued."""
        try:
            job, created = await store.create_keyed_job(
                self.database, shop_id=shop.id, job_type=job_type.name, job_input=job_input,
                source=source, customer_id=customer_id, idempotency_key=idempotency_key,
                staff_user_id=staff_user_id, run_at=run_at, parent_id=parent_id,
                unique_key=unique_key, debounce=debounce, job_id=job_id,
            )  # fmt: skip
        except UNAVAILABLE_ERRORS:
            await self._forget(job_id)
            raise
        entry = queue_entry(job_type, job.id, shop.domain, job_input, source, priority)
        if not created:
            if debounce is not None and job.id != job_id:
                await self.push(entry, job.run_at)
            return Submitted(job.id, job)
        await self.queue(entry, source, run_at=job.run_at)
        return Submitted(job.id, None)

    async def push(self, entry: Entry, run_at: datetime | None) -> None:
        """Move a debounced job's queue entry to its new due time. Never raises: if Redis does
        not answer, the row (pending, its new run_at) is what counts, and the entry, due at its
        earlier time, runs it then with the latest input (or the reconciler queues it)."""
        defer = 0.0 if run_at is None else max(0.0, run_at.timestamp() - time.time() + 0.002)
        try:
            await asyncio.wait_for(
                queue.reschedule(self.redis, entry.job_type, entry.job_id, shop=entry.shop,
                                 defer_seconds=defer, priority=entry.priority, key=entry.key),
                ENQUEUE_TIMEOUT_SECONDS,
            )  # fmt: skip
        except Exception as exc:
            logger.warning("debounced job %s not rescheduled: %r", entry.job_id, exc)

    async def queue(self, entry: Entry, source: Source, *, run_at: datetime | None = None) -> None:
        """Queue the job of a row just written; if the queue does not take it, delete the row
        and raise NotQueued.

        With traces on, the row first keeps the current trace context, so that its runs join
        the trace of the request (service/core/tracing.py)."""
        job_id = UUID(entry.job_id)
        trace_context = tracing.carrier()
        if trace_context is not None:
            try:
                await store.set_trace_context(self.database, job_id, trace_context)
            except Exception as exc:  # a trace is not worth refusing the job: runs start anew
                logger.warning("job %s: trace context not kept: %r", job_id, exc)
        if await self.put(entry, source, run_at=run_at) is not QueueOutcome.QUEUED:
            await store.delete_job(self.database, job_id)
            raise NotQueued(job_id)

    async def put(
        self, entry: Entry, source: Source, *, run_at: datetime | None = None
    ) -> QueueOutcome:
        """Put a job's entry on the queue (due at `run_at`, else now), timed; never raises (a
        failure is ERROR)."""
        started = time.perf_counter()
        outcome = QueueOutcome.ERROR
        try:
            if run_at is None:  # the group's write keeps the deadline (`_enqueue`)
                deadline = asyncio.get_running_loop().time() + ENQUEUE_TIMEOUT_SECONDS
                queued = await self._queue.submit((entry, deadline))
            else:
                # The score is whole milliseconds from a clock read again: 2 ms more, so the
                # entry is never due before `run_at`.
                async with asyncio.timeout(ENQUEUE_TIMEOUT_SECONDS):
                    queued = await queue.enqueue(
                        self.redis, entry.job_type, entry.job_id, shop=entry.shop,
                        defer_seconds=max(0.0, run_at.timestamp() - time.time() + 0.002),
                        priority=entry.priority, key=entry.key,
                    )  # fmt: skip
            outcome = QueueOutcome.QUEUED if queued else QueueOutcome.DUPLICATE
        except Exception as exc:  # Redis down, slow or refusing: the caller decides what it means
            logger.warning("job %s could not be queued: %r", entry.job_id, exc)
        finally:
            self._observe(source, outcome, time.perf_counter() - started)
        return outcome

    async def _create(
        self,
        *,
        shop_id: int,
        job_type: str,
        job_input: dict[str, Any],
        customer_id: str | None,
        idempotency_key: str | None,
        source: str,
        job_id: UUID,
        staff_user_id: str | None,
    ) -> tuple[UUID, store.Job | None]:
        """The id of the job for this request, and the job that already held its idempotency
        key (None: this call created the job)."""
        row = (job_id, shop_id, job_type, orjson.dumps(job_input).decode(), customer_id,
               idempotency_key, source, staff_user_id)  # fmt: skip
        if await self._rows.submit(row):
            return job_id, None
        job, created = await store.create_job(
            self.database, shop_id=shop_id, job_type=job_type, job_input=job_input,
            customer_id=customer_id, idempotency_key=idempotency_key, source=source,
            job_id=job_id, staff_user_id=staff_user_id,
        )  # fmt: skip
        return job.id, None if created else job

    async def _forget(self, job_id: UUID) -> None:
        """Delete a job whose INSERT failed, in case it committed all the same.

        A connection that dies just after the commit loses its answer: the caller is told 503,
        so the row must not stay behind for the reconciler to run. Tried for FORGET_SECONDS; if
        Postgres stays away that long, the row (if any) stays, and runs later.
        """
        delay, deadline = 0.02, time.monotonic() + FORGET_SECONDS
        while True:
            try:
                await store.delete_job(self.database, job_id)
                return
            except UNAVAILABLE_ERRORS as exc:
                if time.monotonic() + delay > deadline:
                    logger.warning("job %s may have been written before %r; kept", job_id, exc)
                    return
                await asyncio.sleep(delay)
                delay *= 2

    async def _insert(self, rows: list[NewRow]) -> list[bool]:
        inserted = await store.insert_jobs(self.database, rows)
        return [row[0] in inserted for row in rows]

    async def _enqueue(self, jobs: list[tuple[Entry, float]]) -> list[bool]:
        """Queue a group's entries, within the earliest of their callers' deadlines: one timer
        per group, not one per job, and no caller waits longer than ENQUEUE_TIMEOUT_SECONDS
        (the group before this one ended by an earlier deadline still). A timeout is an
        OSError: the whole group fails at once, never retried job by job."""
        async with asyncio.timeout_at(min(deadline for _, deadline in jobs)):
            return await queue.enqueue_many(self.redis, [entry for entry, _ in jobs])
