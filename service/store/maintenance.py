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


# A job with an idempotency key answers a repeated request with itself for the window, whatever
# retention says (service/store/jobs.py `create_job`): its row is kept that long from creation.
_KEY_WINDOW_OVER = """
    (idempotency_key IS NULL OR created_at < now() - make_interval(secs => $3))
"""


async def delete_old_jobs(
    database: Database,
    status: JobStatus,
    max_age_seconds: float,
    keep_per_shop: int,
    idempotency_window_seconds: float,
) -> int:
    """Retention of one final status: drop jobs finished more than `max_age_seconds` ago and,
    when `keep_per_shop` is not 0, each shop's jobs beyond its newest `keep_per_shop`: one
    shop's volume never prunes another's. Never dropped: children of a batch still open, and
    jobs with an idempotency key created less than `idempotency_window_seconds` ago."""
    async with connection(database) as raw:
        aged = await raw.fetch(
            f"""DELETE FROM jobs WHERE status = $1 AND {_NOT_IN_OPEN_BATCH}
                  AND {_KEY_WINDOW_OVER}
                  AND finished_at < now() - make_interval(secs => $2) RETURNING 1""",
            status,
            max_age_seconds,
            idempotency_window_seconds,
        )
        extra = 0
        if keep_per_shop:
            extra = len(
                await raw.fetch(
                    f"""DELETE FROM jobs WHERE id IN (
                       SELECT id FROM (
                           SELECT id, row_number() OVER (
                                      PARTITION BY shop_id
                                      ORDER BY finished_at DESC NULLS LAST, id) AS newest
                             FROM jobs WHERE status = $1) AS ranked
                        WHERE newest > $2)
                      AND {_NOT_IN_OPEN_BATCH} AND {_KEY_WINDOW_OVER} RETURNING 1""",
                    status,
                    keep_per_shop,
                    idempotency_window_seconds,
                )
            )
    return len(aged) + extra
