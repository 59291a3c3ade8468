"""The worker's housekeeping: finding stranded jobs, and retention."""

from __future__ import annotations

from uuid import UUID

from databases import Database

from service.core.states import JobStatus
from service.store.sql import connection


async def stranded_jobs(
    database: Database, older_than_seconds: float, limit: int = 500
) -> list[tuple[UUID, str, str]]:
    """Jobs that should be in the queue by now: waiting too long, or held by a dead worker."""
    async with connection(database) as raw:
        rows = await raw.fetch(
            """SELECT j.id, j.type, s.domain
                 FROM jobs AS j JOIN shops AS s ON s.id = j.shop_id
                WHERE (j.status IN ('pending', 'retrying')
                       AND j.updated_at < now() - make_interval(secs => $1)
                       AND (j.run_at IS NULL OR j.run_at < now() - make_interval(secs => $1)))
                   OR (j.status = 'processing'
                       AND j.lease_expires_at < now() - make_interval(secs => $1))
                   OR (j.status = 'processing' AND j.lease_owner IS NULL
                       AND j.wait_for IS NOT NULL
                       AND j.run_at < now() - make_interval(secs => $1))
                ORDER BY j.updated_at
                LIMIT $2""",
            older_than_seconds,
            limit,
        )
    return [(row["id"], row["type"], row["domain"]) for row in rows]


# A child whose batch is still open is kept: its parent's end is counted from its row.
_NOT_IN_OPEN_BATCH = """
    (parent_id IS NULL OR NOT EXISTS (
        SELECT 1 FROM jobs AS parent WHERE parent.id = jobs.parent_id
           AND parent.status IN ('pending', 'retrying', 'processing')))
"""


async def delete_old_jobs(
    database: Database, status: JobStatus, max_age_seconds: float, keep: int
) -> int:
    """Retention of one final status: drop jobs finished more than `max_age_seconds` ago, and
    all but the newest `keep` (children of a batch still open excepted)."""
    async with connection(database) as raw:
        aged = await raw.fetch(
            f"""DELETE FROM jobs WHERE status = $1 AND {_NOT_IN_OPEN_BATCH}
                  AND finished_at < now() - make_interval(secs => $2) RETURNING 1""",
            status,
            max_age_seconds,
        )
        extra = await raw.fetch(
            f"""DELETE FROM jobs WHERE id IN (
                   SELECT id FROM jobs WHERE status = $1 AND {_NOT_IN_OPEN_BATCH}
                    ORDER BY finished_at DESC NULLS LAST, id OFFSET $2) RETURNING 1""",
            status,
            keep,
        )
    return len(aged) + len(extra)
