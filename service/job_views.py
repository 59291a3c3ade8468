"""One job view for every reader: the storefront (/proxy/status), the merchant API (/api/jobs),
the dashboard and JobsClient.get show a job's status, progress, batch counts and why it waits
from here, so that they never disagree (docs/your-app.md, "What the merchant and the
storefront see of a job").

- `progress`: a batch parent's, while it is not final, is its finished children's share (its
  own row says 0 until its children are done); any other job's is what its handler reported.
- `batch`: a batch parent's children by status, with `total`; None for any other job.
- `waiting`: `{"for", "until"}` (ISO or null) when something holds the job back: a wait of its
  handler (service/core/waits.py), a paused shop, the global rate limiter, a type's or key's
  cap, the shop's cap (service/queue/), or a later due time. None otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from databases import Database
from redis.asyncio import Redis
from redis.exceptions import RedisError

from service import store
from service.core.states import FINAL_STATUSES, JobStatus
from service.queue import pending

logger = logging.getLogger("shopjobs.views")


@dataclass(frozen=True)
class Shown:
    """What every reader shows of a job besides its row's own fields."""

    progress: int
    batch: dict[str, int] | None
    waiting: dict[str, str | None] | None


def batch_progress(job: store.Job, counts: dict[str, int] | None) -> int:
    if counts is None or job.status in FINAL_STATUSES or not counts["total"]:
        return job.progress
    done = counts[JobStatus.COMPLETED] + counts[JobStatus.FAILED]
    return done * 100 // counts["total"]


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


async def why_waiting(
    redis: Redis, job: store.Job, shop: str | None, now: datetime | None = None
) -> dict[str, str | None] | None:
    """Why `job` is not running now, and until when; None when nothing holds it back (or it
    runs, or is final). Redis unreachable: what the row says (a wait, a due time) only."""
    if job.waiting is not None:
        return job.waiting  # a suspended job's own wait
    if job.status not in (JobStatus.PENDING, JobStatus.RETRYING):
        return None
    now = now or datetime.now(UTC)
    try:
        held = await pending.why_held(redis, str(job.id), shop)
    except (RedisError, OSError) as exc:
        logger.debug("why_waiting: redis: %r", exc)
        held = None
    due_later = job.run_at is not None and job.run_at > now
    if held is not None and not (due_later and held[0] in ("concurrency_cap", "shop_cap")):
        reason, seconds = held
        until = None if seconds is None else now + timedelta(seconds=seconds)
        return {"for": reason, "until": _iso(until)}
    if due_later and job.run_at is not None:
        reason = "retry" if job.status == JobStatus.RETRYING else "delayed"
        return {"for": reason, "until": _iso(job.run_at)}
    return None


async def show(database: Database, redis: Redis, job: store.Job, shop: str | None) -> Shown:
    """The view of one job (`shop`: its domain)."""
    counts = None if job.batch is None else await store.batch_counts(database, job.id)
    return Shown(
        progress=batch_progress(job, counts),
        batch=counts,
        waiting=await why_waiting(redis, job, shop),
    )


async def show_many(
    database: Database, redis: Redis, jobs: list[tuple[store.Job, str | None]]
) -> list[Shown]:
    """The views of a page of jobs, in order."""
    return [await show(database, redis, job, shop) for job, shop in jobs]


def as_json(shown: Shown) -> dict[str, Any]:
    """The view's fields in the web's JSON answers."""
    return {"progress": shown.progress, "batch": shown.batch, "waiting": shown.waiting}
