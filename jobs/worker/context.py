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
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from databases import Database

from jobs.types import CompletionWrite
from service import store
from service.shopify.admin import AdminClient, ShopAdmin
from service.shopify.bulk import JobLink

logger = logging.getLogger("shopjobs.worker")

PROGRESS_INTERVAL_SECONDS = 0.25


@dataclass
class RunContext:
    job_id: str
    job_type: str
    shop: str
    attempt: int
    run: int
    database: Database
    owner: str
    resources: dict[str, Any] = field(default_factory=dict)
    completion_writes: list[CompletionWrite] = field(default_factory=list)
    _last_write: float = 0.0
    _last_message: str | None = None
    _admin: ShopAdmin | None = None

    @property
    def admin(self) -> ShopAdmin:
        """The shop's Admin GraphQL API, through the process's shared client.

        One per run, so the shop's token is read from Postgres once, not once per query.
        """
        if self._admin is None:
            client: AdminClient = self.resources["admin"]
            self._admin = client.admin_for(
                self.shop, JobLink(UUID(self.job_id), self.report_progress)
            )
        return self._admin

    def on_completion(self, write: CompletionWrite) -> None:
        """Commit `write` together with this job's completion, or not at all."""
        self.completion_writes.append(write)

    async def report_progress(self, percent: int, message: str | None = None) -> None:
        percent = max(0, min(100, int(percent)))
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
