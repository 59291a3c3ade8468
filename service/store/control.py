"""Retrying and cancelling jobs: the one place either is written, for the dashboard, the
merchant API and JobsClient (which queues a retried job again and stops a cancelled run).

A cancelled job is a failed one with CANCELLED_MESSAGE: failed is final, so a worker that
later takes its queue entry skips it (claim_job answers SKIP), and the statuses stay the five
of the API contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from databases import Database

from service.core.states import CANCELLED_MESSAGE, JobStatus
from service.store.sql import connection

# Retry and cancel by filter act on at most this many jobs per statement (each its own
# transaction), so a million matches never hold a million row locks at once.
BATCH_SIZE = 500

# A retried job starts over: status, counters, outcome and timings as if it were new, so it
# gets its full attempts again (and the abandoned-job guard counts from zero).
_RESET_TO_PENDING = """
    status = 'pending', attempts = 0, retry_count = 0, progress = 0, progress_message = NULL,
    result = NULL, error_message = NULL, error_public = false,
    run_at = NULL, started_at = NULL, finished_at = NULL,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = now(),
    wait_for = NULL, wait_name = NULL, wait_until = NULL,
    debounce_key = NULL, debounce_until = NULL, unique_key = NULL
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
    retried: list[tuple[UUID, str, str]] = []
    while True:
        batch = await retry_matching(database, FlowFilter(job_type=job_type))
        retried += batch
        if len(batch) < BATCH_SIZE:
            return retried


@dataclass(frozen=True)
class FlowFilter:
    """Which jobs a retry or cancel by filter acts on: every field given must match. `shop`
    is a domain, exactly; times are inclusive bounds on created_at / finished_at."""

    shop: str | None = None
    job_type: str | None = None
    status: JobStatus | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    finished_after: datetime | None = None
    finished_before: datetime | None = None

    def describe(self) -> str:
        """The filter as logged: `field=value` for every field given."""
        given = {k: v for k, v in self.__dict__.items() if v is not None}
        return (
            " ".join(
                f"{k}={v.isoformat() if isinstance(v, datetime) else v}" for k, v in given.items()
            )
            or "(all)"
        )


# What each action may touch, whatever the filter says: retry, failed jobs that were not
# cancelled; cancel, jobs that wait (pending, retrying, or suspended: processing, no lease).
_ACTIONABLE = {
    "retry": "j.status = 'failed' AND j.error_message IS DISTINCT FROM $1",
    "cancel": """(j.status IN ('pending', 'retrying')
                  OR (j.status = 'processing' AND j.lease_owner IS NULL
                      AND j.wait_for IS NOT NULL))
                 AND $1::text IS NOT NULL""",
}


def _where(action: str, filters: FlowFilter) -> tuple[str, list[Any]]:
    values: list[Any] = [CANCELLED_MESSAGE]
    clauses = [_ACTIONABLE[action]]
    for column, op, value in (
        ("s.domain", "=", filters.shop),
        ("j.type", "=", filters.job_type),
        ("j.status", "=", filters.status),
        ("j.created_at", ">=", filters.created_after),
        ("j.created_at", "<=", filters.created_before),
        ("j.finished_at", ">=", filters.finished_after),
        ("j.finished_at", "<=", filters.finished_before),
    ):
        if value is not None:
            values.append(value)
            clauses.append(f"{column} {op} ${len(values)}")
    return " AND ".join(clauses), values


async def count_matching(database: Database, action: str, filters: FlowFilter) -> int:
    """How many jobs `retry_matching` / the cancel by filter would act on now."""
    where, values = _where(action, filters)
    async with connection(database) as raw:
        count = await raw.fetchval(
            f"SELECT count(*) FROM jobs AS j JOIN shops AS s ON s.id = j.shop_id WHERE {where}",
            *values,
        )
    return int(count)


async def retry_matching(database: Database, filters: FlowFilter) -> list[tuple[UUID, str, str]]:
    """Put up to BATCH_SIZE failed (not cancelled) jobs matching `filters` back to pending,
    as `retry_job` does one: (id, type, domain). Call again until fewer come back."""
    where, values = _where("retry", filters)
    values.append(BATCH_SIZE)
    async with connection(database) as raw:
        rows = await raw.fetch(
            f"""WITH target AS (
                    SELECT j.id, s.domain FROM jobs AS j JOIN shops AS s ON s.id = j.shop_id
                     WHERE {where}
                     ORDER BY j.id LIMIT ${len(values)}
                     FOR UPDATE OF j SKIP LOCKED
                )
                UPDATE jobs AS j SET {_RESET_TO_PENDING}
                  FROM target
                 WHERE j.id = target.id
                RETURNING j.id, j.type, target.domain""",
            *values,
        )
    return [(row["id"], row["type"], row["domain"]) for row in rows]


async def matching_to_cancel(database: Database, filters: FlowFilter) -> list[UUID]:
    """Up to BATCH_SIZE ids of waiting jobs matching `filters`, for `cancel_jobs`."""
    where, values = _where("cancel", filters)
    values.append(BATCH_SIZE)
    async with connection(database) as raw:
        rows = await raw.fetch(
            f"""SELECT j.id FROM jobs AS j JOIN shops AS s ON s.id = j.shop_id
                 WHERE {where} ORDER BY j.id LIMIT ${len(values)}""",
            *values,
        )
    return [row["id"] for row in rows]


async def cancel_job(database: Database, job_id: UUID) -> list[UUID] | None:
    """Cancel a job that is not final, and its batch's unfinished children: they become failed
    CANCELLED_MESSAGE. None if the job is final or gone; else the ids among them that a worker
    is running or waiting, whose handlers (or bulk operations) the caller asks the workers
    to stop (service/core/cancel.py).

    Failed is final: every write of the worker running it is guarded by the lease and the
    `processing` status (sql.HELD_BY_OWNER), so the run that is stopped records nothing.
    """
    cancelled, running = await cancel_jobs(database, [job_id])
    return running if cancelled else None


async def cancel_jobs(database: Database, job_ids: list[UUID]) -> tuple[int, list[UUID]]:
    """`cancel_job` for many (a batch of a cancel by filter), in one transaction: how many of
    `job_ids` were cancelled, and the ids (children included) a worker runs or waits on."""
    async with connection(database) as raw, raw.transaction():
        # The jobs first, alone (in id order: two cancels never deadlock): a batch's children
        # being written (batches.insert_children, which holds the parent FOR SHARE) are then
        # committed, and the statement below, with a snapshot of its own, sees them.
        await raw.execute(
            "SELECT 1 FROM jobs WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE", job_ids
        )
        rows = await raw.fetch(
            """WITH target AS (
                   SELECT id, status, parent_id FROM jobs
                    WHERE (id = ANY($1::uuid[]) OR parent_id = ANY($1::uuid[]))
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
                  AND (target.id = ANY($1::uuid[]) OR EXISTS (
                       SELECT 1 FROM target AS parent
                        WHERE parent.id = target.parent_id AND parent.id = ANY($1::uuid[])))
               RETURNING jobs.id, target.status = 'processing' AS was_running""",
            job_ids,
            CANCELLED_MESSAGE,
        )
    wanted = set(job_ids)
    cancelled = sum(1 for row in rows if row["id"] in wanted)
    return cancelled, [row["id"] for row in rows if row["was_running"]]
