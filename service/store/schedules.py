"""Schedules: the latest tick each scheduled job type has run, and a tick's jobs.

`schedule_ticks` holds one row per scheduled type: the tick whose jobs exist. Creating a
tick's jobs moves the row forward in the same transaction, so a tick's jobs are written by
exactly one worker (the row lock decides; the loser's update matches nothing), and the jobs'
idempotency keys (`schedule:{type}:{shop}:{tick}`, UNIQUE per shop) make even a second writer
harmless. Only the latest tick is ever written: ticks missed while no worker ran are skipped,
the latest of them runs once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from databases import Database

from service.store.sql import connection

# The share of its interval at which a shop's run falls: the first 32 bits of
# md5("{type}:{domain}") over 2**32 (as service/core/schedule_times.spread_offset).
_OFFSET = (
    "(('x' || substr(md5($1::text || ':' || s.domain), 1, 8))::bit(32)::bigint / 4294967296.0)"
)

_ADVANCE = """
    INSERT INTO schedule_ticks AS t (job_type, tick) VALUES ($1, $2)
    ON CONFLICT (job_type) DO UPDATE SET tick = EXCLUDED.tick, updated_at = now()
     WHERE t.tick < EXCLUDED.tick
    RETURNING (xmax = 0) AS first
"""

_CREATE = f"""
    WITH created AS (
        INSERT INTO jobs (id, shop_id, type, input, status, idempotency_key, source, run_at)
        SELECT gen_random_uuid(), s.id, $1::text, $3::jsonb, 'pending',
               'schedule:' || $1::text || ':'
                   || CASE WHEN $5::boolean THEN s.domain ELSE 'app' END || ':' || $6::text,
               'schedule',
               $2::timestamptz + make_interval(
                   secs => CASE WHEN $5::boolean THEN $4::float8 * {_OFFSET} ELSE 0 END)
          FROM shops AS s
         WHERE s.uninstalled_at IS NULL
           AND ($5::boolean OR s.id = (SELECT min(id) FROM shops WHERE uninstalled_at IS NULL))
        ON CONFLICT ON CONSTRAINT jobs_idempotency DO NOTHING
        RETURNING id, shop_id, run_at
    )
    SELECT c.id, s.domain, c.run_at FROM created AS c JOIN shops AS s ON s.id = c.shop_id
"""


@dataclass(frozen=True)
class TickJob:
    """A scheduled run written for a tick, to be queued for `run_at`."""

    id: UUID
    shop: str
    run_at: datetime


async def create_tick_jobs(
    database: Database,
    job_type: str,
    tick: datetime,
    *,
    per_shop: bool,
    input_json: str,
    interval_seconds: float,
) -> list[TickJob]:
    """Write the runs of `tick` (one per installed shop, or one for the app), unless that tick
    or a later one is already written, or the schedule is seen for the first time (it starts
    with its next tick). The runs of a shop fall `interval * offset(shop)` after the tick."""
    async with connection(database) as raw, raw.transaction():
        first = await raw.fetchval(_ADVANCE, job_type, tick)
        if first is None or first:
            return []
        rows = await raw.fetch(
            _CREATE,
            job_type,
            tick,
            input_json,
            interval_seconds,
            per_shop,
            tick.isoformat(),
        )
    return [TickJob(row["id"], row["domain"], row["run_at"]) for row in rows]


async def schedule_ticks(database: Database) -> dict[str, datetime]:
    """The latest tick written, by scheduled job type (the dashboard's "last run")."""
    async with connection(database) as raw:
        rows = await raw.fetch("SELECT job_type, tick FROM schedule_ticks")
    return {row["job_type"]: row["tick"] for row in rows}
