"""Job rows: the row type, and creating, reading and deleting them (the web's side)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from databases import Database

from service.core.states import GENERIC_FAILURE_MESSAGE, JobStatus
from service.store.sql import JOB_COLUMNS, Row, connection, from_json, to_json


@dataclass(frozen=True)
class Job:
    id: UUID
    shop_id: int
    type: str
    input: dict[str, Any]
    status: JobStatus
    progress: int
    progress_message: str | None
    result: Any
    error_message: str | None
    attempts: int
    retry_count: int
    customer_id: str | None
    idempotency_key: str | None
    source: str
    lease_owner: str | None
    lease_expires_at: datetime | None
    run_at: datetime | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    staff_user_id: str | None = None  # who started it in the embedded app (session `sub`)
    parent_id: UUID | None = None  # the batch parent of a child job (store/batches.py)
    # A batch parent's spec (follow-up type, failure rule); None for every other job.
    batch: dict[str, Any] | None = None
    # Whether error_message may be shown outside the operator's dashboard (schema.sql).
    error_public: bool = False
    # A suspended job's wait (service/core/waits.py): what for, and until when (None: until it
    # happens). None while it runs or is not processing.
    wait_for: str | None = None
    wait_until: datetime | None = None

    @property
    def waiting(self) -> dict[str, str | None] | None:
        """What every reader shows of a suspended job: `{"for": ..., "until": ISO or null}`;
        None unless the job is processing and waits."""
        if self.status != JobStatus.PROCESSING or self.wait_for is None:
            return None
        until = None if self.wait_until is None else self.wait_until.isoformat()
        return {"for": self.wait_for, "until": until}

    @property
    def shown_error(self) -> str | None:
        """The failure as the storefront and the merchant see it: the message when it is
        public (a NonRetryableError's, the worker's own), else GENERIC_FAILURE_MESSAGE."""
        if self.error_message is None:
            return None
        return self.error_message if self.error_public else GENERIC_FAILURE_MESSAGE


def job_from_row(row: Row | None) -> Job | None:
    """A job from a row of JOB_COLUMNS (extra columns are not allowed)."""
    if row is None:
        return None
    fields = dict(row)
    fields["input"] = from_json(fields["input"])
    fields["result"] = from_json(fields["result"])
    fields["batch"] = from_json(fields["batch"])
    fields["status"] = JobStatus(fields["status"])
    return Job(**fields)


async def inputs_of(database: Database, job_ids: list[UUID]) -> dict[UUID, dict[str, Any]]:
    """The stored inputs of these jobs, by id (the missing ones left out)."""
    async with connection(database) as raw:
        rows = await raw.fetch("SELECT id, input FROM jobs WHERE id = ANY($1::uuid[])", job_ids)
    return {row["id"]: from_json(row["input"]) for row in rows}


async def get_job(database: Database, job_id: UUID) -> Job | None:
    async with connection(database) as raw:
        row = await raw.fetchrow(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1", job_id)
    return job_from_row(row)


async def get_job_for_shop(database: Database, shop_id: int, job_id: UUID) -> Job | None:
    """A job, only if it belongs to `shop_id`: another shop's job is indistinguishable from none."""
    async with connection(database) as raw:
        row = await raw.fetchrow(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND shop_id = $2", job_id, shop_id
        )
    return job_from_row(row)


async def get_storefront_job(
    database: Database, shop_id: int, job_id: UUID, customer_id: str | None
) -> Job | None:
    """A job the storefront may read: created through the app proxy (`source` 'proxy') or a
    batch child of such a job, of `shop_id`, and anonymous or of `customer_id` (a child is
    judged by its parent's customer). Anything else is None, exactly like a missing job.

    Admin, webhook, schedule, compliance, CLI and app jobs never pass: their ids appear in the
    embedded admin, the dashboard and the logs, and their results (a customer's data export)
    are not the storefront's. Every release wrote such rows with their own `source`; only the
    proxy's inserts ever took the column's default ('proxy'), so old rows are judged alike.
    """
    async with connection(database) as raw:
        row = await raw.fetchrow(
            f"""
            SELECT {JOB_COLUMNS} FROM jobs
             WHERE id = $1 AND shop_id = $2
               AND EXISTS (
                   SELECT 1 FROM jobs AS owner
                    WHERE owner.id IN (jobs.id, jobs.parent_id)
                      AND owner.shop_id = $2 AND owner.source = 'proxy'
                      AND (owner.customer_id IS NULL OR owner.customer_id = $3))
            """,
            job_id, shop_id, customer_id,
        )  # fmt: skip
    return job_from_row(row)


async def create_job(
    database: Database,
    *,
    shop_id: int,
    job_type: str,
    job_input: dict[str, Any],
    customer_id: str | None = None,
    idempotency_key: str | None = None,
    source: str = "proxy",
    job_id: UUID | None = None,
    staff_user_id: str | None = None,
    run_at: datetime | None = None,
    parent_id: UUID | None = None,
) -> tuple[Job, bool]:
    """Write a `pending` job (with `job_id`, or a new id); return it and whether this call
    created it.

    With an idempotency key, the UNIQUE (shop_id, idempotency_key) constraint decides who wins
    among concurrent duplicates: the loser's INSERT does nothing (it waits for the winner's
    commit) and the SELECT then returns the winner's row. If that row vanished in between (its
    enqueue failed and it was deleted), the insert is simply tried again.
    """
    job_id = job_id or uuid4()
    async with connection(database) as raw:
        for _ in range(3):
            row = await raw.fetchrow(
                f"""
                INSERT INTO jobs (id, shop_id, type, input, status, customer_id,
                                  idempotency_key, source, staff_user_id, run_at,
                                  parent_id)
                VALUES ($1, $2, $3, $4::jsonb, 'pending', $5, $6, $7, $8, $9, $10)
                ON CONFLICT ON CONSTRAINT jobs_idempotency DO NOTHING
                RETURNING {JOB_COLUMNS}
                """,
                job_id, shop_id, job_type, to_json(job_input), customer_id, idempotency_key,
                source, staff_user_id, run_at, parent_id,
            )  # fmt: skip
            if row is not None:
                job = job_from_row(row)
                assert job is not None
                return job, True
            existing = await raw.fetchrow(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE shop_id = $1 AND idempotency_key = $2",
                shop_id, idempotency_key,
            )  # fmt: skip
            if existing is not None:
                job = job_from_row(existing)
                assert job is not None
                return job, False
    raise RuntimeError(f"create_job: idempotency key of shop {shop_id} kept changing hands")


async def insert_jobs(
    database: Database,
    rows: list[tuple[UUID, int, str, str, str | None, str | None, str, str | None]],
) -> set[UUID]:
    """Insert many `pending` jobs (id, shop_id, type, input JSON, customer_id,
    idempotency_key, source, staff_user_id) in one statement; return the ids inserted.

    A row whose idempotency key is taken is not inserted (not even by another row of the same
    batch); its caller falls back to `create_job`, which returns the job that holds the key.
    """
    async with connection(database) as raw:
        inserted = await raw.fetch(
            """
            INSERT INTO jobs (id, shop_id, type, input, status, customer_id, idempotency_key,
                              source, staff_user_id)
            SELECT v.id, v.shop_id, v.type, v.input::jsonb, 'pending', v.customer_id, v.key,
                   v.source, v.staff_user_id
              FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                          $6::text[], $7::text[], $8::text[])
                   AS v(id, shop_id, type, input, customer_id, key, source, staff_user_id)
            ON CONFLICT ON CONSTRAINT jobs_idempotency DO NOTHING
            RETURNING id
            """,
            *(list(column) for column in zip(*rows, strict=True)),
        )
    return {row["id"] for row in inserted}


async def delete_job(database: Database, job_id: UUID) -> None:
    """Remove a job that never reached the queue, so no orphaned row is left behind."""
    async with connection(database) as raw:
        await raw.execute("DELETE FROM jobs WHERE id = $1", job_id)


def jsonb_safe(value: Any) -> bool:
    """Whether Postgres jsonb can store `value`: it refuses the NUL character in any string.

    Iterative, so input nested as deep as the JSON parser allows cannot exhaust the stack.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return False
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return True
