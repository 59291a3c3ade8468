"""Starting jobs from the app's own code: `await jobs.enqueue(type, shop=..., input=...)`.

One client serves a route, a webhook handler, a handler (ctx.enqueue) and the CLI; it is the
app proxy's path (service/intake.py: row first, then queue, no orphan row, idempotency key
enforced by Postgres) with checks a caller gets as exceptions, not HTTP answers:

    UnknownJobType     no enabled job type of that name
    InvalidInput       the type's model refused the input (`details`: pydantic's field errors)
    ShopNotInstalled   no such shop, or it uninstalled the app
    QueueUnavailable   Redis did not take the job; its row has been deleted again

Postgres being down raises the database's own error (as for the proxy, nothing is left).

The web builds one in its lifespan (`web_state(request).jobs`); the worker builds one for its
handlers (`ctx.enqueue`); anywhere else, the app opens one from its settings with
`async with jobs.open_client(settings) as client:` (jobs/client.py), which builds the
database, the Redis pool and the job types itself and closes them on exit. App authors import
all of it from `jobs`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
from arq.connections import ArqRedis
from databases import Database
from pydantic import BaseModel

from jobs.types import Debounce, EnqueuedJob, JobType, JobView
from service import job_views, queue, store, wakes
from service.core import cancel
from service.core.states import JobStatus
from service.intake import (
    ENQUEUE_TIMEOUT_SECONDS,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    Intake,
    InvalidJobInput,
    NotQueued,
    ObserveEnqueue,
    QueueOutcome,
    Source,
    queue_entry,
    queue_priority,
    validate_input,
)
from service.shopify import shop_domain
from service.store.sql import to_json

logger = logging.getLogger("shopjobs.jobs")

# Children of a batch are written and queued this many at a time: one INSERT and one Redis
# pipeline per chunk.
CHILD_CHUNK = 1_000
# A delay longer than this is surely a unit mistake (milliseconds for seconds, say).
MAX_DELAY_SECONDS = 366 * 86_400
MAX_EVENT_NAME_LENGTH = 200  # as ctx.wait_for_event's (jobs/worker/waits.py)


class EnqueueError(Exception):
    """Why a job was not created; every subclass leaves no row behind."""


class UnknownJobType(EnqueueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"Unknown job type {name[:200]!r}")
        self.name = name


class InvalidInput(EnqueueError):
    """`details`: one `{field, message, type}` per problem, as the proxy answers them."""

    def __init__(self, message: str, details: list[dict[str, str]]) -> None:
        super().__init__(f"{message}: {details}")
        self.message = message
        self.details = details


class ShopNotInstalled(EnqueueError):
    def __init__(self, shop: str) -> None:
        super().__init__(f"Shop {shop[:300]!r} is not installed")
        self.shop = shop


class QueueUnavailable(EnqueueError):
    def __init__(self) -> None:
        super().__init__("The queue (Redis) did not take the job; nothing was created")


def _details(exc: InvalidJobInput) -> list[dict[str, str]]:
    """The refusal as `{field, message, type}` items (no `type` when pydantic did not refuse)."""
    return [
        {"field": ".".join(p.path), "message": p.message, **({"type": p.type} if p.type else {})}
        for p in exc.problems
    ]


def due_time(delay: float | timedelta | None, run_at: datetime | None) -> datetime | None:
    """When a job asked for with `delay` (seconds) or `run_at` is due; None: now."""
    if delay is not None and run_at is not None:
        raise ValueError("give delay or run_at, not both")
    if isinstance(delay, timedelta):
        delay = delay.total_seconds()
    if delay is not None:
        if not 0 <= delay <= MAX_DELAY_SECONDS:
            raise ValueError(f"delay must be between 0 and {MAX_DELAY_SECONDS} seconds")
        return datetime.fromtimestamp(time.time() + delay, UTC) if delay > 0 else None
    if run_at is not None and run_at.tzinfo is None:
        raise ValueError("run_at must be timezone-aware")
    if run_at is not None and run_at.timestamp() <= time.time():
        return None  # already due: queued for now
    if run_at is not None and run_at.timestamp() > time.time() + MAX_DELAY_SECONDS:
        raise ValueError(f"run_at must be within {MAX_DELAY_SECONDS} seconds from now")
    return run_at


class JobsClient:
    def __init__(
        self,
        database: Database,
        redis: ArqRedis,
        job_types: dict[str, JobType],
        *,
        intake: Intake | None = None,
        observe: ObserveEnqueue | None = None,
    ) -> None:
        self.database = database
        self.redis = redis
        self.job_types = job_types
        self.intake = intake or Intake(database, redis, observe or _ignore)

    def job_type(self, name: str) -> JobType:
        job_type = self.job_types.get(name)
        if job_type is None:
            raise UnknownJobType(name)
        return job_type

    def validate(
        self, job_type: JobType, job_input: BaseModel | dict[str, Any] | None
    ) -> dict[str, Any]:
        """The input as the type's model accepts it, JSON-ready (service/intake.py's
        validate_input, as for the proxy and webhooks); InvalidInput otherwise."""
        if isinstance(job_input, BaseModel):
            job_input = job_input.model_dump(mode="json", exclude_unset=True)
        try:
            return validate_input(job_type, job_input or {})
        except InvalidJobInput as exc:
            raise InvalidInput("Invalid input", _details(exc)) from None

    async def installed_shop(self, domain: str) -> store.Shop:
        """The installed shop of `domain`, written as a merchant might (`Cool-Shop.myshopify.com`,
        `https://...`); ShopNotInstalled for anything else, malformed domains included."""
        try:
            normalized = shop_domain.normalize(domain)
        except ValueError:
            raise ShopNotInstalled(domain) from None
        shop = await store.get_shop(self.database, normalized)
        if shop is None or not shop.installed:
            raise ShopNotInstalled(domain)
        return shop

    async def enqueue(
        self,
        job_type: str,
        *,
        shop: str,
        input: BaseModel | dict[str, Any] | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        idempotency_key: str | None = None,
        source: Source = Source.APP,
        parent_id: UUID | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
        debounce: Debounce | None = None,
        staff_user_id: str | None = None,
    ) -> EnqueuedJob:
        """Create a job of `job_type` for `shop`, due now, after `delay` seconds, or at
        `run_at`; with `idempotency_key`, a second call returns the first call's job.

        `priority` (0 to 9, higher first within the shop) overrides the type's. `unique_key`:
        while a job of this type and shop with that key is pending, it is returned (`created`
        False) instead of a new one. `debounce` (its key a string): calls with the same key
        within `debounce.seconds` of each other become one job, run with the last call's input
        (docs/starting-jobs.md#debounce); a call that joined a pending job returns it
        (`created` False, `run_at` its new due time)."""
        kind = self.job_type(job_type)
        data = self.validate(kind, input)
        _check_key("idempotency_key", idempotency_key)
        _check_key("unique_key", unique_key)
        spec = None
        if debounce is not None:
            if not isinstance(debounce.key, str):
                raise InvalidInput(
                    "Invalid debounce",
                    [
                        {
                            "field": "debounce.key",
                            "message": "a string (a function only on WebhookJob)",
                        }
                    ],
                )
            _check_key("debounce.key", debounce.key)
            if unique_key is not None or delay is not None or run_at is not None:
                raise InvalidInput(
                    "Invalid debounce",
                    [{"field": "debounce", "message": "not with unique_key, delay or run_at"}],
                )
            spec = store.DebounceSpec(debounce.key, debounce.seconds, debounce.max_wait)
        try:
            due = due_time(delay, run_at)
        except ValueError as exc:
            raise InvalidInput("Invalid time", [{"field": "delay", "message": str(exc)}]) from None
        found = await self.installed_shop(shop)
        try:
            submitted = await self.intake.submit(
                kind,
                shop=found,
                job_input=data,
                source=source,
                idempotency_key=idempotency_key,
                run_at=due,
                parent_id=parent_id,
                priority=priority,
                unique_key=unique_key,
                debounce=spec,
                staff_user_id=staff_user_id,
            )
        except NotQueued:
            raise QueueUnavailable() from None
        existing = submitted.existing
        if existing is not None:
            return EnqueuedJob(existing.id, existing.status, existing.run_at, created=False)
        if spec is not None:  # due when the debounce's quiet time is over
            due = datetime.fromtimestamp(time.time() + spec.seconds, UTC)
        return EnqueuedJob(submitted.job_id, JobStatus.PENDING, due)

    async def enqueue_children(
        self,
        parent_id: UUID,
        shop: store.Shop,
        job_type: str,
        inputs: Sequence[BaseModel | dict[str, Any]],
        first_index: int = 0,
    ) -> int:
        """Create a batch's children (the parent is already marked, store.start_batch), in
        chunks of CHILD_CHUNK: one INSERT and one Redis pipeline each. Every input is validated
        first (InvalidInput names `inputs[i].field`), so a bad one creates none. Children an
        earlier run of the parent created already are not created again (their keys are
        `batch:{parent}:{index}`), but those still pending are queued again: that run may have
        died between a chunk's INSERT and its pipeline. Returns how many were created.

        If Redis refuses a chunk, QueueUnavailable is raised and its rows stay: they belong to
        their parent's batch, and the reconciler queues them (RECONCILE_AFTER_SECONDS). If the
        parent is no longer `processing` (cancelled meanwhile), RuntimeError: no child is
        written after a cancel.
        """
        kind = self.job_type(job_type)
        encoded: list[str] = []
        for index, item in enumerate(inputs):
            try:
                encoded.append(to_json(self.validate(kind, item)))
            except InvalidInput as exc:
                details = [{**d, "field": f"inputs[{index}]." + d["field"]} for d in exc.details]
                raise InvalidInput(exc.message, details) from None
        created = 0
        for start in range(0, len(encoded), CHILD_CHUNK):
            written = await store.insert_children(
                self.database,
                parent_id,
                shop.id,
                kind.name,
                encoded[start : start + CHILD_CHUNK],
                first_index + start,
            )
            if written is None:
                raise RuntimeError(f"job {parent_id} is no longer running: no children added")
            inserted, earlier = written
            created += len(inserted)
            ids = inserted + earlier
            if not ids:
                continue
            try:
                await asyncio.wait_for(
                    queue.enqueue_many(
                        self.redis, await self._entries(kind, ids, shop.domain, Source.JOB)
                    ),
                    ENQUEUE_TIMEOUT_SECONDS * 5,
                )
            except Exception as exc:
                logger.warning("batch %s: %d children not queued: %r", parent_id, len(ids), exc)
                raise QueueUnavailable() from None
        return created

    async def get(self, job_id: UUID) -> JobView | None:
        """The job as the app reads it (with a batch parent's children counted); None if it
        does not exist (or was pruned)."""
        listed = await store.get_listed_job(self.database, job_id)
        if listed is None:
            return None
        job = listed.job
        # The view every reader shows (service/job_views.py): a batch parent's progress from
        # its children, and why a job waits.
        shown = await job_views.show(self.database, self.redis, job, listed.shop)
        return JobView(
            id=job.id,
            type=job.type,
            shop=listed.shop,
            status=job.status,
            progress=shown.progress,
            progress_message=job.progress_message,
            input=job.input,
            result=job.result,
            error=job.error_message,
            error_public=job.error_public,
            attempts=job.attempts,
            retry_count=job.retry_count,
            source=job.source,
            idempotency_key=job.idempotency_key,
            run_at=job.run_at,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            parent_id=job.parent_id,
            children=shown.batch,
            waiting=shown.waiting,
            paused=listed.paused,
        )

    async def retry(self, job_id: UUID, source: Source = Source.APP) -> QueueOutcome | None:
        """Start a failed job over (pending, its attempts from zero) and queue it again; None
        if it is not failed (or unknown). The one retry of the dashboard, the merchant API and
        the app.

        The outcome says how queuing went: DUPLICATE is fine (its entry is still queued and will
        run it); on ERROR the row is pending all the same, and the reconciler queues it.
        """
        reset = await store.retry_job(self.database, job_id)
        if reset is None:
            return None
        job_type, shop = reset
        [entry] = await self._entries(job_type, [job_id], shop, source)
        outcome = await self.intake.put(entry, source)
        if outcome is QueueOutcome.ERROR:
            logger.warning("job %s retried but not queued; the reconciler will queue it", job_id)
        return outcome

    async def retry_failed(self, job_type: str, source: Source = Source.APP) -> int:
        """Start every failed (not cancelled) job of a type over, as `retry` does one; how
        many."""
        return await self.retry_matching(store.FlowFilter(job_type=job_type), source)

    async def retry_matching(
        self, filters: store.FlowFilter, source: Source = Source.APP, *, by: str = "app"
    ) -> int:
        """Start every failed (not cancelled) job matching `filters` over, as `retry` does
        one, BATCH_SIZE per statement, each batch queued again before the next; how many.
        Logged with the filter and the count (`by`: who asked)."""
        total = 0
        while True:
            jobs = await store.retry_matching(self.database, filters)
            for job_id, name, shop in jobs:
                [entry] = await self._entries(name, [job_id], shop, source)
                await self.intake.put(entry, source)
            total += len(jobs)
            if len(jobs) < store.BATCH_SIZE:
                break
        logger.info("%s retried %d job(s) matching %s", by, total, filters.describe())
        return total

    async def cancel_matching(self, filters: store.FlowFilter, *, by: str = "app") -> int:
        """Cancel every waiting job (pending, retrying, suspended) matching `filters`, as
        `cancel` does one (a batch's children with it), BATCH_SIZE per transaction; how many.
        Logged with the filter and the count (`by`: who asked)."""
        total = 0
        for _ in range(100_000):  # bounded: each round cancels what it found, or they changed
            ids = await store.matching_to_cancel(self.database, filters)
            if not ids:
                break
            cancelled, running = await store.cancel_jobs(self.database, ids)
            total += cancelled
            if running:
                try:
                    await cancel.request_stop(self.redis, running)
                except Exception as exc:
                    logger.warning("%d cancelled job(s) not told to stop: %r", len(running), exc)
            if len(ids) < store.BATCH_SIZE:
                break
        logger.info("%s cancelled %d job(s) matching %s", by, total, filters.describe())
        return total

    async def pause_shop(self, shop: str) -> None:
        """Pause a shop's work: its due jobs stay pending (running ones finish), its status
        reads say `paused`, until `resume_shop`. Recorded in Postgres, then in the queue's
        paused set (ShopNotInstalled: no such shop)."""
        domain = await self._known_shop(shop)
        await store.pause_shop(self.database, domain, True)
        await queue.pause_shop(self.redis, domain)
        logger.info("shop %s paused", domain)

    async def resume_shop(self, shop: str) -> None:
        """Put a paused shop's jobs back in the rotation."""
        domain = await self._known_shop(shop)
        await store.pause_shop(self.database, domain, False)
        await queue.resume_shop(self.redis, domain)
        logger.info("shop %s resumed", domain)

    async def _known_shop(self, domain: str) -> str:
        """The normalized domain of a shop the app knows (installed or not)."""
        try:
            normalized = shop_domain.normalize(domain)
        except ValueError:
            raise ShopNotInstalled(domain) from None
        if await store.get_shop(self.database, normalized) is None:
            raise ShopNotInstalled(domain)
        return normalized

    async def _entries(
        self, job_type: JobType | str, ids: Sequence[UUID], shop: str, source: Source
    ) -> list[queue.Entry]:
        """The queue entries of jobs already written: their type's priority and, for a type
        with a concurrency key, each one's key (read back from its stored input)."""
        kind = job_type if isinstance(job_type, JobType) else self.job_types.get(job_type)
        if kind is None:  # a type no longer registered: the worker fails it when taken
            return [queue.Entry(str(job_type), str(job_id), shop) for job_id in ids]
        if kind.concurrency_key is None:
            priority = queue_priority(kind, source)
            return [queue.Entry(kind.name, str(job_id), shop, priority) for job_id in ids]
        inputs = await store.inputs_of(self.database, list(ids))
        return [queue_entry(kind, job_id, shop, inputs.get(job_id, {}), source) for job_id in ids]

    async def send_event(self, shop: str, name: str, payload: Any = None) -> int:
        """Send event `name` to the shop's jobs: every job of the shop waiting for it
        (`ctx.wait_for_event(name)`) runs again at once and receives `payload` (JSON), and so
        does one that starts waiting later (a job gets the first such event sent after it was
        created). How many waiting jobs were woken."""
        if not isinstance(name, str) or not 0 < len(name) <= MAX_EVENT_NAME_LENGTH:
            raise ValueError(f"an event name is 1 to {MAX_EVENT_NAME_LENGTH} characters")
        try:
            payload_json = orjson.dumps(payload).decode()
        except TypeError as exc:
            raise ValueError(f"an event's payload must be JSON: {exc}") from None
        installed = await self.installed_shop(shop)
        await store.send_event(self.database, installed.id, name, payload_json)
        return await wakes.wake_event(self.database, self.redis, installed.id, name)

    async def cancel(self, job_id: UUID) -> bool:
        """Cancel a job that is not final, running or not, with its batch's unfinished
        children: they end failed "Cancelled". False if it is final or unknown.

        A running handler is cancelled at its next await; if Redis cannot carry the request,
        its worker notices at its next lease renewal (jobs/worker/lease.py).
        """
        running = await store.cancel_job(self.database, job_id)
        if running is None:
            return False
        try:
            await cancel.request_stop(self.redis, running)
        except Exception as exc:  # the cancel holds in Postgres; the lease renewal stops the run
            logger.warning("job %s cancelled, but its worker was not told: %r", job_id, exc)
        return True


def _check_key(field: str, key: str | None) -> None:
    """An idempotency, unique or debounce key: 1 to 255 printable characters."""
    if key is not None and not (
        isinstance(key, str) and 0 < len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH and key.isprintable()
    ):
        raise InvalidInput(
            f"Invalid {field.replace('_', ' ')}",
            [
                {
                    "field": field,
                    "message": f"1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable characters",
                }
            ],
        )


def _ignore(source: Source, outcome: QueueOutcome, seconds: float) -> None:
    """No metrics: a client outside the web (the CLI, a script)."""
