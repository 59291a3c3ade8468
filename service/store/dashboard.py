"""The dashboard's queries: listing, counting, retrying and cancelling jobs.

A cancelled job is a failed one with CANCELLED_MESSAGE: failed is final, so a worker that
later takes its queue entry skips it (claim_job answers SKIP), and the statuses stay the five
of the API contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from databases import Database

from service.core.states import CANCELLED_MESSAGE, JobStatus
from service.store.jobs import Job, job_from_row
from service.store.sql import JOB_COLUMNS, connection


@dataclass(frozen=True)
class JobFilter:
    status: JobStatus | None = None
    shop: str | None = None  # part of a shop's domain
    job_type: str | None = None
    shop_id: int | None = None  # exactly this shop (the embedded app's scope)


@dataclass(frozen=True)
class ListedJob:
    job: Job
    shop: str


_LISTED_COLUMNS = ", ".join(f"j.{name}" for name in JOB_COLUMNS.split(", ")) + ", s.domain"


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _job_filter(filters: JobFilter, *, with_status: bool = True) -> tuple[str, list[Any]]:
    """A WHERE clause from fixed fragments, and its parameters ($1, $2, ... in order): the
    user's text only ever travels as parameters."""
    clauses, values = ["TRUE"], []
    if with_status and filters.status:
        values.append(filters.status)
        clauses.append(f"j.status = ${len(values)}")
    if filters.shop:
        values.append(f"%{_escape_like(filters.shop.lower())}%")
        clauses.append(f"s.domain LIKE ${len(values)}")
    if filters.job_type:
        values.append(filters.job_type)
        clauses.append(f"j.type = ${len(values)}")
    if filters.shop_id is not None:
        values.append(filters.shop_id)
        clauses.append(f"j.shop_id = ${len(values)}")
    return " AND ".join(clauses), values


def _listed(row: Mapping[str, Any]) -> ListedJob:
    fields = dict(row)
    domain = fields.pop("domain")
    job = job_from_row(fields)
    assert job is not None
    return ListedJob(job=job, shop=domain)


async def list_jobs(
    database: Database,
    filters: JobFilter,
    *,
    limit: int,
    offset: int = 0,
    before: tuple[datetime, UUID] | None = None,
) -> list[ListedJob]:
    """Jobs matching `filters`, newest first; with `before` (a listed job's created_at and
    id), only the jobs listed after it: a cursor that new jobs do not shift."""
    where, values = _job_filter(filters)
    if before is not None:
        values.extend(before)
        where += f" AND (j.created_at, j.id) < (${len(values) - 1}, ${len(values)})"
    n = len(values)
    async with connection(database) as raw:
        rows = await raw.fetch(
            f"""
            SELECT {_LISTED_COLUMNS} FROM jobs AS j JOIN shops AS s ON s.id = j.shop_id
             WHERE {where}
             ORDER BY j.created_at DESC, j.id DESC
             LIMIT ${n + 1} OFFSET ${n + 2}
            """,
            *values,
            limit,
            offset,
        )
    return [_listed(row) for row in rows]


async def get_listed_job(database: Database, job_id: UUID) -> ListedJob | None:
    async with connection(database) as raw:
        row = await raw.fetchrow(
            f"""SELECT {_LISTED_COLUMNS} FROM jobs AS j JOIN shops AS s ON s.id = j.shop_id
                 WHERE j.id = $1""",
            job_id,
        )
    return None if row is None else _listed(row)


async def count_jobs_by_status(database: Database, filters: JobFilter) -> dict[str, int]:
    """How many jobs of each status match the filter's shop and type (its status ignored)."""
    where, values = _job_filter(filters, with_status=False)
    async with connection(database) as raw:
        rows = await raw.fetch(
            f"""SELECT j.status, count(*) AS n FROM jobs AS j JOIN shops AS s ON s.id = j.shop_id
                 WHERE {where} GROUP BY j.status""",
            *values,
        )
    return {row["status"]: row["n"] for row in rows}


async def failed_jobs_by_type(database: Database) -> dict[str, int]:
    """Failed jobs that `retry_failed_jobs` would retry (cancelled ones excluded), per type."""
    async with connection(database) as raw:
        rows = await raw.fetch(
            """SELECT type, count(*) AS n FROM jobs
                WHERE status = 'failed' AND error_message IS DISTINCT FROM $1
                GROUP BY type ORDER BY type""",
            CANCELLED_MESSAGE,
        )
    return {row["type"]: row["n"] for row in rows}


async def job_types_in_use(database: Database) -> list[str]:
    async with connection(database) as raw:
        rows = await raw.fetch("SELECT DISTINCT type FROM jobs ORDER BY type")
    return [row["type"] for row in rows]


# A retried job starts over: status, counters, outcome and timings as if it were new, so it
# gets its full attempts again (and the abandoned-job guard counts from zero).
_RESET_TO_PENDING = """
    status = 'pending', attempts = 0, retry_count = 0, progress = 0, progress_message = NULL,
    result = NULL, error_message = NULL, error_public = false,
    run_at = NULL, started_at = NULL, finished_at = NULL,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
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
    is running, whose handlers the caller asks to stop (service/core/cancel.py).

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
