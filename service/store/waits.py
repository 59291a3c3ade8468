"""Suspended jobs, their steps, and the events they wait for (issue 24; service/core/waits.py).

A suspended job is `processing` with no lease and `wait_for` set; `run_at` is when a worker
looks at it again. The claim (service/store/claims.py) takes such a row when its queue entry
comes due, and clears the wait. Waking a job moves `run_at` to now; the caller then moves its
queue entry (service/queue/ `wake`). Every writer of a running job's records is guarded by
its lease (sql.HELD_BY_OWNER): a run that lost its job records nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from databases import Database

from service.core.waits import WaitFor
from service.store.sql import HELD_BY_OWNER, connection, from_json


@dataclass(frozen=True)
class Woken:
    """A job to queue again now: its id, type and shop."""

    id: UUID
    type: str
    shop: str


async def suspend_job(
    database: Database,
    job_id: UUID,
    owner: str,
    wait_for: WaitFor,
    name: str,
    until: datetime | None,
    look_again: datetime,
) -> bool:
    """Record that a running job waits, and give up its lease (the start is not counted: a
    wait is not an attempt). False when this worker no longer holds the job."""
    async with connection(database) as raw:
        done = await raw.fetchval(
            f"""UPDATE jobs SET wait_for = $3, wait_name = $4, wait_until = $5, run_at = $6,
                       lease_owner = NULL, lease_expires_at = NULL, attempts = attempts - 1,
                       updated_at = now()
                 WHERE {HELD_BY_OWNER} RETURNING true""",
            job_id,
            owner,
            wait_for.value,
            name,
            until,
            look_again,
        )
    return bool(done)


_WAKE = """
    UPDATE jobs AS j SET run_at = now(), updated_at = now()
      FROM shops AS s
     WHERE s.id = j.shop_id AND j.status = 'processing' AND j.lease_owner IS NULL
       AND {condition}
    RETURNING j.id, j.type, s.domain
"""


async def _wake(database: Database, condition: str, *args: Any) -> list[Woken]:
    async with connection(database) as raw:
        rows = await raw.fetch(_WAKE.format(condition=condition), *args)
    return [Woken(row["id"], row["type"], row["domain"]) for row in rows]


async def wake_event_waiters(database: Database, shop_id: int, name: str) -> list[Woken]:
    """The shop's jobs waiting for event `name`, due now."""
    return await _wake(
        database, "j.shop_id = $1 AND j.wait_for = 'event' AND j.wait_name = $2", shop_id, name
    )


async def wake_bulk_waiters(database: Database, operation_id: str) -> list[Woken]:
    """The job waiting for this bulk operation (the bulk_operations/finish webhook), due now."""
    return await _wake(database, "j.wait_for = 'bulk_operation' AND j.wait_name = $1", operation_id)


async def bulk_operation_awaited(database: Database, operation_id: str) -> bool:
    """Whether a job still waits for this bulk operation (a poll of it is still wanted)."""
    return bool(
        await database.fetch_val(
            """SELECT EXISTS (SELECT 1 FROM jobs WHERE status = 'processing'
                 AND wait_for = 'bulk_operation' AND wait_name = :operation)""",
            {"operation": operation_id},
        )
    )


async def wake_slot_waiters(database: Database, shop: str, kind: str, limit: int) -> list[Woken]:
    """The shop's oldest jobs waiting for a bulk slot of `kind`, at most `limit`, due now."""
    return await _wake(
        database,
        """j.id IN (SELECT w.id FROM jobs AS w JOIN shops AS ws ON ws.id = w.shop_id
                     WHERE ws.domain = $1 AND w.wait_for = 'bulk_slot' AND w.wait_name = $2
                       AND w.status = 'processing' AND w.lease_owner IS NULL
                     ORDER BY w.updated_at LIMIT $3)""",
        shop,
        kind,
        limit,
    )


async def steps_of(database: Database, job_id: UUID) -> dict[str, Any]:
    """Everything the job's runs recorded, by name."""
    async with connection(database) as raw:
        rows = await raw.fetch("SELECT name, result FROM job_steps WHERE job_id = $1", job_id)
    return {row["name"]: from_json(row["result"]) for row in rows}


async def step_of(database: Database, job_id: UUID, name: str) -> tuple[bool, Any]:
    """(found, result) of one recorded step."""
    async with connection(database) as raw:
        row = await raw.fetchrow(
            "SELECT result FROM job_steps WHERE job_id = $1 AND name = $2", job_id, name
        )
    return (False, None) if row is None else (True, from_json(row["result"]))


async def record_step(
    database: Database,
    job_id: UUID,
    owner: str,
    name: str,
    result_json: str,
    *,
    replace: bool = False,
) -> bool:
    """Record a step's JSON result, only while this worker holds the job; an earlier record of
    the same name stands (unless `replace`: a bulk operation that failed is started anew).
    False when the lease was lost (nothing recorded)."""
    conflict = "DO UPDATE SET result = EXCLUDED.result" if replace else "DO NOTHING"
    async with connection(database) as raw:
        held = await raw.fetchval(
            f"""WITH held AS (SELECT id FROM jobs WHERE {HELD_BY_OWNER})
                INSERT INTO job_steps (job_id, name, result)
                SELECT id, $3, $4::jsonb FROM held
                ON CONFLICT (job_id, name) {conflict}
                RETURNING true""",
            job_id,
            owner,
            name,
            result_json,
        )
        if held:
            return True
        # Nothing inserted: either the lease is gone, or the step was recorded already.
        return bool(
            await raw.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM jobs WHERE {HELD_BY_OWNER})", job_id, owner
            )
        )


async def send_event(database: Database, shop_id: int, name: str, payload_json: str) -> None:
    async with connection(database) as raw:
        await raw.execute(
            "INSERT INTO job_events (shop_id, name, payload) VALUES ($1, $2, $3::jsonb)",
            shop_id,
            name,
            payload_json,
        )


async def event_for(database: Database, job_id: UUID, name: str) -> tuple[bool, Any]:
    """(found, payload) of the first event `name` sent to the job's shop after the job was
    created: one sent between the handler's action and its wait is not missed."""
    async with connection(database) as raw:
        row = await raw.fetchrow(
            """SELECT e.payload FROM job_events AS e JOIN jobs AS j ON j.shop_id = e.shop_id
                WHERE j.id = $1 AND e.name = $2 AND e.sent_at >= j.created_at
                ORDER BY e.sent_at, e.id LIMIT 1""",
            job_id,
            name,
        )
    return (False, None) if row is None else (True, from_json(row["payload"]))


async def prune_events(database: Database, older_than_seconds: float) -> int:
    async with connection(database) as raw:
        deleted = await raw.fetchval(
            """WITH gone AS (DELETE FROM job_events
                              WHERE sent_at < now() - make_interval(secs => $1) RETURNING 1)
               SELECT count(*) FROM gone""",
            older_than_seconds,
        )
    return int(deleted or 0)


async def take_cancelled_bulk_waits(
    database: Database, job_id: UUID | None = None
) -> list[tuple[UUID, str, str]]:
    """Cancelled (failed) jobs whose bulk operation still runs on Shopify, each returned to one
    caller only (the wait is cleared as it is taken): (job id, shop, operation id)."""
    async with connection(database) as raw:
        rows = await raw.fetch(
            """WITH taken AS (
                   SELECT j.id, s.domain, j.wait_name FROM jobs AS j JOIN shops AS s
                       ON s.id = j.shop_id
                    WHERE j.status = 'failed' AND j.wait_for = 'bulk_operation'
                      AND ($1::uuid IS NULL OR j.id = $1)
                    FOR UPDATE OF j SKIP LOCKED)
               UPDATE jobs SET wait_for = NULL, wait_name = NULL, wait_until = NULL
                 FROM taken WHERE jobs.id = taken.id
               RETURNING taken.id, taken.domain, taken.wait_name AS operation""",
            job_id,
        )
    return [(row["id"], row["domain"], row["operation"]) for row in rows]
