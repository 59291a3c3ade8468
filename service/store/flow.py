"""Flow control at creation: a debounced job, and a keep-one-pending one (issue 28).

Both rest on a partial unique index over PENDING rows (service/migrations/0004): at most one
pending job per (shop, type, debounce_key) and per (shop, type, unique_key). The database
decides among concurrent enqueues, whichever web or worker process makes them; once the job
is claimed (processing), it leaves the index and the next enqueue creates a new job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg
from databases import Database

from service.store.jobs import Job, job_from_row
from service.store.sql import JOB_COLUMNS, connection, to_json


@dataclass(frozen=True)
class DebounceSpec:
    """A debounce as the store applies it: the key, the quiet time and the longest wait."""

    key: str
    seconds: float
    max_seconds: float


_INSERT_COLUMNS = """id, shop_id, type, input, status, customer_id, idempotency_key, source,
                     staff_user_id, run_at, parent_id, debounce_key, debounce_until, unique_key"""

# A debounced enqueue: a new pending job due in `seconds` (and at the latest `max_seconds`
# after now), or, if a pending job holds the key, that job with this input, due `seconds`
# from now but never after its `debounce_until`. One statement: concurrent enqueues of the
# key meet on the partial unique index; a row claimed meanwhile no longer conflicts (Postgres
# tries the insert again), so the event then starts a new job.
_DEBOUNCE = f"""
    INSERT INTO jobs ({_INSERT_COLUMNS})
    VALUES ($1, $2, $3, $4::jsonb, 'pending', $5, $6, $7, $8,
            now() + make_interval(secs => $9), NULL, $10,
            now() + make_interval(secs => $11), NULL)
    ON CONFLICT (shop_id, type, debounce_key) WHERE status = 'pending' AND debounce_key IS NOT NULL
    DO UPDATE SET input = EXCLUDED.input,
                  run_at = LEAST(EXCLUDED.run_at, jobs.debounce_until),
                  updated_at = now()
       WHERE jobs.status = 'pending'
    RETURNING {JOB_COLUMNS}, (xmax = 0) AS created
"""

_UNIQUE = f"""
    INSERT INTO jobs ({_INSERT_COLUMNS})
    VALUES ($1, $2, $3, $4::jsonb, 'pending', $5, $6, $7, $8, $9, $10, NULL, NULL, $11)
    ON CONFLICT DO NOTHING
    RETURNING {JOB_COLUMNS}
"""


def _job(row: Any) -> Job:
    job = job_from_row(row)
    assert job is not None
    return job


async def _by_idempotency_key(
    raw: asyncpg.Connection, shop_id: int, idempotency_key: str | None
) -> Job | None:
    if idempotency_key is None:
        return None
    row = await raw.fetchrow(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE shop_id = $1 AND idempotency_key = $2",
        shop_id,
        idempotency_key,
    )
    return None if row is None else _job(row)


async def create_keyed_job(
    database: Database,
    *,
    shop_id: int,
    job_type: str,
    job_input: dict[str, Any],
    source: str,
    customer_id: str | None = None,
    idempotency_key: str | None = None,
    staff_user_id: str | None = None,
    run_at: datetime | None = None,
    parent_id: UUID | None = None,
    unique_key: str | None = None,
    debounce: DebounceSpec | None = None,
    job_id: UUID | None = None,
) -> tuple[Job, bool]:
    """A job with a `unique_key` or a `debounce` (one of them): (the job, whether this call
    created it). A job that already held the idempotency key is returned as is; one holding
    the unique key too; a debounced enqueue that joined a pending job returns it with its new
    input and its due time pushed (`run_at`)."""
    if (unique_key is None) == (debounce is None):
        raise ValueError("give exactly one of unique_key and debounce")
    job_id = job_id or uuid4()
    data = to_json(job_input)
    async with connection(database) as raw:
        for _ in range(3):
            found = await _by_idempotency_key(raw, shop_id, idempotency_key)
            if found is not None:
                return found, False
            if debounce is not None:
                try:
                    row = await raw.fetchrow(
                        _DEBOUNCE,
                        job_id, shop_id, job_type, data, customer_id, idempotency_key, source,
                        staff_user_id, debounce.seconds, debounce.key, debounce.max_seconds,
                    )  # fmt: skip
                except asyncpg.UniqueViolationError:
                    continue  # its idempotency key was taken meanwhile: read that job
                if row is None:
                    continue
                fields = dict(row)
                created = bool(fields.pop("created"))
                return _job(fields), created
            row = await raw.fetchrow(
                _UNIQUE,
                job_id, shop_id, job_type, data, customer_id, idempotency_key, source,
                staff_user_id, run_at, parent_id, unique_key,
            )  # fmt: skip
            if row is not None:
                return _job(row), True
            held = await raw.fetchrow(
                f"""SELECT {JOB_COLUMNS} FROM jobs
                     WHERE shop_id = $1 AND type = $2 AND unique_key = $3
                       AND status = 'pending'""",
                shop_id,
                job_type,
                unique_key,
            )
            if held is not None:
                return _job(held), False
            # The holder was claimed (or the idempotency key's job deleted) in between: again.
    raise RuntimeError(f"create_keyed_job: a key of shop {shop_id} kept changing hands")
