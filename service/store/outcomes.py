"""A run's outcome and progress, written by the worker that holds the job.

Every write here is guarded by sql.HELD_BY_OWNER: a worker that lost its lease (it stalled
past it and another worker took the job over) records nothing, and learns so from the False.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from databases import Database

from jobs.types import CompletionWrite
from service.core.states import RATE_LIMITED_PREFIX
from service.store.sql import HELD_BY_OWNER, connection


async def record_progress(
    database: Database, job_id: UUID, owner: str, percent: int, message: str | None
) -> None:
    async with connection(database) as raw:
        await raw.execute(
            f"""UPDATE jobs SET progress = $3, progress_message = $4, updated_at = now()
                 WHERE {HELD_BY_OWNER}""",
            job_id,
            owner,
            percent,
            message,
        )


async def note_rate_limited(database: Database, job_id: UUID, until: datetime) -> None:
    """Say on a waiting job that its type's rate limit holds it back, and until when: its
    progress_message becomes RATE_LIMITED_PREFIX + the ISO time (the claim clears it)."""
    async with connection(database) as raw:
        await raw.execute(
            """UPDATE jobs SET progress_message = $2, updated_at = now()
                WHERE id = $1 AND status IN ('pending', 'retrying')""",
            job_id,
            RATE_LIMITED_PREFIX + until.isoformat(timespec="seconds"),
        )


_COMPLETE = f"""
    UPDATE jobs SET status = 'completed', result = $3::jsonb, progress = 100,
           error_message = NULL, error_public = false, lease_owner = NULL, lease_expires_at = NULL,
           finished_at = now(), updated_at = now()
     WHERE {HELD_BY_OWNER} RETURNING true
"""


async def complete_job(
    database: Database,
    job_id: UUID,
    owner: str,
    result_json: str,
    also: Sequence[CompletionWrite] = (),
) -> bool:
    """Record a run's success (its result already encoded, jobs/worker/results.py); False when
    this worker no longer holds the job.

    `also` (the handler's RunContext.on_completion writes) runs in the same transaction, with
    its connection, only if the completion itself is written: those writes happen exactly
    once per completed job, never for a run that crashed, failed or lost its lease, and never
    twice (a second completion of a completed job matches nothing).
    """
    async with connection(database) as raw:
        if not also:
            return bool(await raw.fetchval(_COMPLETE, job_id, owner, result_json))
        async with raw.transaction():
            done = await raw.fetchval(_COMPLETE, job_id, owner, result_json)
            if done:
                for write in also:
                    await write(raw)
    return bool(done)


async def complete_jobs(database: Database, done: list[tuple[UUID, str, str]]) -> list[bool]:
    """Record many (job id, owner, result as JSON text, jobs/worker/results.py) as completed in
    one statement; True where written."""
    async with connection(database) as raw:
        rows = await raw.fetch(
            """UPDATE jobs SET status = 'completed', result = v.result::jsonb, progress = 100,
                      error_message = NULL, error_public = false,
                      lease_owner = NULL, lease_expires_at = NULL,
                      finished_at = now(), updated_at = now()
                 FROM unnest($1::uuid[], $2::text[], $3::text[]) AS v(id, owner, result)
                WHERE jobs.id = v.id AND jobs.lease_owner = v.owner AND jobs.status = 'processing'
            RETURNING jobs.id""",
            [d[0] for d in done],
            [d[1] for d in done],
            [d[2] for d in done],
        )
    written = {row["id"] for row in rows}
    return [d[0] in written for d in done]


async def schedule_retry(
    database: Database,
    job_id: UUID,
    owner: str,
    failures: int,
    error: str,
    delay: float,
    public: bool = False,
) -> bool:
    """A failed attempt with attempts left: `retrying`, due again in `delay` seconds. `public`:
    the error may be shown to the storefront and the merchant (schema.sql, error_public)."""
    async with connection(database) as raw:
        done = await raw.fetchval(
            f"""UPDATE jobs SET status = 'retrying', retry_count = $3, error_message = $4,
                       error_public = $6, run_at = now() + make_interval(secs => $5),
                       lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
                 WHERE {HELD_BY_OWNER} RETURNING true""",
            job_id,
            owner,
            failures,
            error,
            delay,
            public,
        )
    return bool(done)


async def fail_job(
    database: Database, job_id: UUID, owner: str, failures: int, error: str, public: bool = False
) -> bool:
    """A job failed for good; `public` as in schedule_retry."""
    async with connection(database) as raw:
        done = await raw.fetchval(
            f"""UPDATE jobs SET status = 'failed', retry_count = $3, error_message = $4,
                       error_public = $5, lease_owner = NULL, lease_expires_at = NULL,
                       finished_at = now(), updated_at = now()
                 WHERE {HELD_BY_OWNER} RETURNING true""",
            job_id,
            owner,
            failures,
            error,
            public,
        )
    return bool(done)
