"""Retrying and cancelling jobs: the one place either is written, for the dashboard, the
merchant API and JobsClient (which queues a retried job again and stops a cancelled run).

A cancelled job is a failed one with CANCELLED_MESSAGE: failed is final, so a worker that
later takes its queue entry skips it (claim_job answers SKIP), and the statuses stay the five
of the API contract.
"""

from __future__ import annotations

from uuid import UUID

from databases import Database

from service.core.states import CANCELLED_MESSAGE
from service.store.sql import connection

# A retried job starts over: status, counters, outcome and timings as if it were new, so it
# gets its full attempts again (and the abandoned-job guard counts from zero).
_RESET_TO_PENDING = """
    status = 'pending', attempts = 0, retry_count = 0, progress = 0, progress_message = NULL,
    result = NULL, error_message = NULL, error_public = false,
    run_at = NULL, started_at = NULL, finished_at = NULL,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = now(),
    wait_for = NULL, wait_name = NULL, wait_until = NULL
"""


async def retry_job(database: Database, job_id: UUID) -> tuple[str, str] | None:
    """Put a failed job back to pending; its (type, shop domain), or None if it was not failed."""
    async with connection(database) as raw:
        row = await raw.fetchrow(
            f"""UPDATE jobs AS j SET {_RESET_TO_PENDING}
                  FROM shops AS s
                 WHERE s.id = j.shop_id AND j.id = $1 AND j.status = 'failed'
                RETURNING j.type, s.domain""",
            job_id,
        )
    return None if row is None else (row["type"], row["domain"])


async def retry_failed_jobs(database: Database, job_type: str) -> list[tuple[UUID, str, str]]:
    """Put every failed (not cancelled) job of a type back to pending: (id, type, domain)."""
    async with connection(database) as raw:
        rows = await raw.fetch(
            f"""UPDATE jobs AS j SET {_RESET_TO_PENDING}
                  FROM shops AS s
                 WHERE s.id = j.shop_id AND j.type = $1 AND j.status = 'failed'
                   AND j.error_message IS DISTINCT FROM $2
                RETURNING j.id, j.type, s.domain""",
            job_type,
            CANCELLED_MESSAGE,
        )
    return [(row["id"], row["type"], row["domain"]) for row in rows]


async def cancel_job(database: Database, job_id: UUID) -> list[UUID] | None:
    """Cancel a job that is not final, and its batch's unfinished children: they become failed
    CANCELLED_MESSAGE. None if the job is final or gone; else the ids among them that a worker
    is running or waiting, whose handlers (or bulk operations) the caller asks the workers
    to stop (service/core/cancel.py).

    Failed is final: every write of the worker running it is guarded by the lease and the
    `processing` status (sql.HELD_BY_OWNER), so the run that is stopped records nothing.
    """
    async with connection(database) as raw, raw.transaction():
        # The job first, alone: a batch's children being written (batches.insert_children,
        # which holds the parent FOR SHARE) are then committed, and the statement below, with
        # a snapshot of its own, sees them.
        await raw.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", job_id)
        rows = await raw.fetch(
            """WITH target AS (
                   SELECT id, status FROM jobs
                    WHERE (id = $1 OR parent_id = $1)
                      AND status IN ('pending', 'retrying', 'processing')
                    FOR UPDATE
               )
               UPDATE jobs SET status = 'failed', error_message = $2, error_public = true,
                      run_at = NULL,
                      -- A wait ends with the job; one on a bulk operation is kept as the mark
                      -- that the operation still runs on Shopify: a worker cancels it there
                      -- and clears it (store.take_cancelled_bulk_waits).
                      wait_for = CASE WHEN wait_for = 'bulk_operation' THEN wait_for END,
                      wait_until = NULL,
                      lease_owner = NULL, lease_expires_at = NULL,
                      finished_at = now(), updated_at = now()
                 FROM target
                WHERE jobs.id = target.id
                  AND (target.id = $1 OR EXISTS (
                       SELECT 1 FROM target AS parent WHERE parent.id = $1))
               RETURNING jobs.id, target.status = 'processing' AS was_running""",
            job_id,
            CANCELLED_MESSAGE,
        )
    if not any(row["id"] == job_id for row in rows):
        return None
    return [row["id"] for row in rows if row["was_running"]]
