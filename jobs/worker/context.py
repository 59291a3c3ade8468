"""The context a handler runs with: who it is, which attempt, and how to report progress.

Progress writes are throttled (at most one per PROGRESS_INTERVAL_SECONDS, except 100% and a
changed message), so a handler may report as often as it likes without flooding Postgres.

`on_completion` is how a handler makes a write to the app's own database exactly-once: the
write is committed in the transaction that marks the job completed, so it happens if and only
if the completion does. Anything else a handler does (an Admin API call, say) happens at least
once: a run killed after it and before its completion is recorded runs again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from databases import Database
from pydantic import BaseModel

from jobs.types import CompletionWrite, Debounce, EnqueuedJob, NonRetryableError
from jobs.worker import waits
from jobs.worker.resources import Resources
from jobs.worker.results import storable_error
from service import store
from service.intake import Source
from service.jobs_client import InvalidInput, JobsClient
from service.shopify.admin import ShopAdmin
from service.shopify.bulk import JobLink

logger = logging.getLogger("shopjobs.worker")

PROGRESS_INTERVAL_SECONDS = 0.25


class FollowUpRefused(NonRetryableError):
    """A batch's `on_complete` type whose input model refuses what the batch's end writes:
    the app's bug, said when the batch starts (retrying cannot help)."""


@dataclass
class RunContext:
    job_id: str
    job_type: str
    shop: str
    attempt: int
    run: int
    database: Database
    owner: str
    resources: Resources | None = None  # None: a context whose handler cannot reach Shopify
    jobs: JobsClient | None = None  # how a handler starts jobs (None: a context without one)
    completion_writes: list[CompletionWrite] = field(default_factory=list)
    # The spec of the batch this run started (store.start_batch), None if it started none.
    batch: dict[str, Any] | None = None
    # The default limit of one wait (JOB_WAIT_TIMEOUT_SECONDS) and the size cap of a recorded
    # step (JOB_RESULT_MAX_BYTES), from the worker's settings.
    wait_timeout_seconds: float = 86_400
    result_max_bytes: int = 1_048_576
    _records: waits.Records | None = None
    _next_child: int = 0
    _last_write: float = 0.0
    _last_message: str | None = None
    _admin: ShopAdmin | None = None

    @property
    def admin(self) -> ShopAdmin:
        """The shop's Admin GraphQL API, through the process's shared client.

        One per run, so the shop's token is read from Postgres once, not once per query.
        """
        if self._admin is None:
            if self.resources is None:
                raise RuntimeError("this context has no Admin API client")
            self._admin = self.resources.admin.admin_for(
                self.shop, JobLink(UUID(self.job_id), self.report_progress, owner=self.owner)
            )
        return self._admin

    def _client(self) -> JobsClient:
        if self.jobs is None:
            raise RuntimeError("this context cannot start jobs")
        return self.jobs

    async def enqueue(
        self,
        job_type: str,
        input: BaseModel | dict[str, Any] | None = None,
        *,
        shop: str | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        idempotency_key: str | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
        debounce: Debounce | None = None,
    ) -> EnqueuedJob:
        """Start a job (for this job's shop unless `shop` is given), as JobsClient.enqueue."""
        return await self._client().enqueue(
            job_type,
            shop=shop or self.shop,
            input=input,
            delay=delay,
            run_at=run_at,
            idempotency_key=idempotency_key,
            unique_key=unique_key,
            debounce=debounce,
            source=Source.JOB,
            priority=priority,
        )

    async def enqueue_batch(
        self,
        job_type: str,
        inputs: Sequence[BaseModel | dict[str, Any]],
        *,
        on_complete: str | None = None,
        fail_parent_on_child_failure: bool = False,
    ) -> int:
        """Add children to this job's batch (store/batches.py): this job ends when they all
        have. Every call of one run must ask for the same `on_complete` and failure rule."""
        client = self._client()
        client.job_type(job_type)  # UnknownJobType before anything is written
        if on_complete is not None:
            # Its input is written by the batch's end: a model that refuses it is said now,
            # not found when the follow-up fails after the last child.
            follow_up = {"parent_id": self.job_id, "completed": 0, "failed": 0}
            try:
                client.validate(client.job_type(on_complete), follow_up)
            except InvalidInput as exc:
                raise FollowUpRefused(
                    f"The follow-up {on_complete} refuses the input a batch's end gives it "
                    f"(parent_id, completed, failed): {exc.details}"
                ) from None
        spec = {"on_complete": on_complete, "fail_on_child_failure": fail_parent_on_child_failure}
        if self.batch is None:
            if not await store.start_batch(self.database, UUID(self.job_id), self.owner, spec):
                raise RuntimeError(f"job {self.job_id} is no longer held by this run")
            self.batch = spec
        elif self.batch != spec:
            raise ValueError("a job has one batch: every call must give the same options")
        shop = await client.installed_shop(self.shop)
        first = self._next_child
        self._next_child += len(inputs)
        return await client.enqueue_children(UUID(self.job_id), shop, job_type, inputs, first)

    def _steps(self) -> waits.Records:
        if self._records is None:
            self._records = waits.Records(
                self.database, self.job_id, self.owner, self.result_max_bytes
            )
        return self._records

    async def step(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run `fn()` once per job and record its JSON result; later runs get the record."""
        return await waits.step(self._steps(), name, fn)

    async def sleep(
        self,
        name: str,
        seconds: float | timedelta | None = None,
        *,
        until: datetime | None = None,
        limit: float | None = None,
    ) -> None:
        """Wait `seconds` (or until a time) without holding a worker slot: the job suspends
        and runs again from the start when the time comes; this call then returns."""
        await waits.sleep(self._steps(), name, seconds, until, limit or self.wait_timeout_seconds)

    async def wait_for_event(self, name: str, timeout: float | timedelta | None = None) -> Any:
        """The payload of event `name` sent to this job's shop (JobsClient.send_event), waiting
        for it without a slot; past `timeout` the job fails, naming the event."""
        seconds = self.wait_timeout_seconds if timeout is None else waits.seconds_of(timeout)
        return await waits.wait_for_event(self._steps(), name, seconds)

    async def send_event(self, name: str, payload: Any = None, *, shop: str | None = None) -> int:
        """Send event `name` to a shop's jobs (this job's shop unless `shop` is given)."""
        return await self._client().send_event(shop or self.shop, name, payload)

    def on_completion(self, write: CompletionWrite) -> None:
        """Commit `write` together with this job's completion, or not at all."""
        self.completion_writes.append(write)

    async def report_progress(self, percent: int, message: str | None = None) -> None:
        percent = max(0, min(100, int(percent)))
        if message is not None:  # often a third party's text: NUL refused, a dump served
            message = storable_error(message)
        now = time.monotonic()
        due = now - self._last_write >= PROGRESS_INTERVAL_SECONDS
        if not (due or percent == 100 or message != self._last_message):
            return
        self._last_write, self._last_message = now, message
        try:
            await store.record_progress(
                self.database, UUID(self.job_id), self.owner, percent, message
            )
        except Exception as exc:
            # Progress is advisory: Postgres blinking must not fail the run (and use up one of
            # its attempts). The next report, or the completion, writes the state again.
            self._last_write = 0.0
            logger.warning(
                "job %s: progress not recorded (%s: %s)", self.job_id, exc.__class__.__name__, exc
            )
