"""Listing and counting jobs: the dashboard's pages and the merchant API's list (one shop).

Retrying and cancelling are service/store/control.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from databases import Database

from service.core.states import CANCELLED_MESSAGE, JobStatus
from service.store.jobs import Job, job_from_row
from service.store.sql import JOB_COLUMNS, Row, connection


@dataclass(frozen=True)
class JobFilter:
    status: JobStatus | None = None
    shop: str | None = None  # part of a shop's domain
    job_type: str | None = None
    shop_id: int | None = None  # exactly this shop (the merchant API's scope)
    # The merchant's list (service/web/merchant_api.py): who started it (jobs.source values),
    # top-level jobs only (batch children listed under their parent), one parent's children,
    # and started by this staff user (True) or not (False).
    sources: tuple[str, ...] | None = None
    top_level: bool = False
    parent_id: UUID | None = None
    staff_user: str | None = None
    by_staff_user: bool | None = None


@dataclass(frozen=True)
class ListedJob:
    job: Job
    shop: str
    paused: bool = False  # not final, and its shop's work is paused (shops.paused_at)


_LISTED_COLUMNS = (
    ", ".join(f"j.{name}" for name in JOB_COLUMNS.split(", "))
    + ", s.domain, s.paused_at IS NOT NULL AND j.status NOT IN ('completed', 'failed')"
    + " AS shop_paused"
)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _job_filter(filters: JobFilter, *, with_status: bool = True) -> tuple[str, list[Any]]:
    """A WHERE clause from fixed fragments, and its parameters ($1, $2, ... in order): the
    user's text only ever travels as parameters."""
    clauses: list[str] = ["TRUE"]
    values: list[Any] = []
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
    if filters.sources is not None:
        values.append(list(filters.sources))
        clauses.append(f"j.source = ANY(${len(values)}::text[])")
    if filters.top_level:
        clauses.append("j.parent_id IS NULL")
    if filters.parent_id is not None:
        values.append(filters.parent_id)
        clauses.append(f"j.parent_id = ${len(values)}")
    if filters.by_staff_user is not None:
        values.append(filters.staff_user)
        mine = f"j.staff_user_id IS NOT DISTINCT FROM ${len(values)}"
        clauses.append(mine if filters.by_staff_user else f"NOT ({mine})")
    return " AND ".join(clauses), values


def _listed(row: Row) -> ListedJob:
    fields = dict(row)
    domain = fields.pop("domain")
    paused = bool(fields.pop("shop_paused"))
    job = job_from_row(fields)
    assert job is not None
    return ListedJob(job=job, shop=domain, paused=paused)


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


async def job_types_of_shop(database: Database, shop_id: int) -> list[str]:
    """The types of a shop's jobs (the merchant's type filter), by name."""
    async with connection(database) as raw:
        rows = await raw.fetch(
            "SELECT DISTINCT type FROM jobs WHERE shop_id = $1 ORDER BY type", shop_id
        )
    return [row["type"] for row in rows]


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
