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


def _queued(job: store.Job) -> bool:
    """Whether the queue may be holding the job back (and Redis is asked why)."""
    return job.waiting is None and job.status in (JobStatus.PENDING, JobStatus.RETRYING)


async def _held(
    redis: Redis, jobs: list[tuple[store.Job, str | None]]
) -> dict[Any, pending.Held | None]:
    asked = [(str(job.id), shop) for job, shop in jobs if _queued(job)]
    try:
        answers = await pending.why_held_many(redis, asked)
    except (RedisError, OSError) as exc:  # the row's own reasons still show
        logger.debug("why_waiting: redis: %r", exc)
        answers = [None] * len(asked)
    return {job_id: held for (job_id, _), held in zip(asked, answers, strict=True)}


def _waiting(
    job: store.Job, held: pending.Held | None, now: datetime
) -> dict[str, str | None] | None:
    if job.waiting is not None:
        return job.waiting  # a suspended job's own wait
    if job.status not in (JobStatus.PENDING, JobStatus.RETRYING):
        return None
    due_later = job.run_at is not None and job.run_at > now
    if held is not None and not (due_later and held[0] in ("concurrency_cap", "shop_cap")):
        reason, seconds = held
        until = None if seconds is None else now + timedelta(seconds=seconds)
        return {"for": reason, "until": _iso(until)}
    if due_later and job.run_at is not None:
        reason = "retry" if job.status == JobStatus.RETRYING else "delayed"
        return {"for": reason, "until": _iso(job.run_at)}
    return None


async def why_waiting(
    redis: Redis, job: store.Job, shop: str | None, now: datetime | None = None
) -> dict[str, str | None] | None:
    """Why `job` is not running now, and until when; None when nothing holds it back (or it
    runs, or is final). Redis unreachable: what the row says (a wait, a due time) only."""
    held = await _held(redis, [(job, shop)])
    return _waiting(job, held.get(str(job.id)), now or datetime.now(UTC))


async def show(database: Database, redis: Redis, job: store.Job, shop: str | None) -> Shown:
    """The view of one job (`shop`: its domain)."""
    [shown] = await show_many(database, redis, [(job, shop)])
    return shown


async def show_many(
    database: Database, redis: Redis, jobs: list[tuple[store.Job, str | None]]
) -> list[Shown]:
    """The views of a page of jobs, in order: one query for the batch parents' counts, one
    Redis round trip for the queued jobs."""
    counts = await store.batch_counts_many(
        database, [job.id for job, _ in jobs if job.batch is not None]
    )
    held = await _held(redis, jobs)
    now = datetime.now(UTC)
    views = []
    for job, _ in jobs:
        batch = counts.get(job.id)
        views.append(
            Shown(
                progress=batch_progress(job, batch),
                batch=batch,
                waiting=_waiting(job, held.get(str(job.id)), now),
            )
        )
    return views


def as_json(shown: Shown) -> dict[str, Any]:
    """The view's fields in the web's JSON answers."""
    return {"progress": shown.progress, "batch": shown.batch, "waiting": shown.waiting}
