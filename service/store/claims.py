"""Claims and leases: which worker holds a job, for how long, and giving it back.

A claim is one statement: it takes the job only if it is claimable (sql.CLAIMABLE), counts the
start, and sets the lease. The row is locked before the update (`before`) so the claim can say
whether it recovered a dead worker's job: an UPDATE's RETURNING sees only the new row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from databases import Database

from service.core.states import FINAL_STATUSES, ClaimResult
from service.store.sql import (
    CLAIM_RETURNING,
    CLAIM_SET,
    CLAIMABLE,
    HELD_BY_OWNER,
    Row,
    connection,
    from_json,
)


@dataclass(frozen=True)
class Claim:
    """A job this worker now holds, with what it needs to run it."""

    id: UUID
    type: str
    input: dict[str, Any]
    attempts: int
    retry_count: int
    shop: str
    recovered: bool = False  # it was processing under an expired lease: its worker died
    parent_id: UUID | None = None  # a batch child: its end may end its parent's batch
    resumed: str | None = None  # it was suspended, waiting for this (service/core/waits.py)
    created_at: datetime | None = None  # its age bounds it (JOB_MAX_AGE_SECONDS)
    # Its shop uninstalled the app: the run fails it "Shop uninstalled" instead of running it
    # (one that slipped past the uninstall's own failing of the shop's jobs).
    shop_uninstalled: bool = False


def _claim(row: Row) -> Claim:
    return Claim(
        id=row["id"],
        type=row["type"],
        input=from_json(row["input"]),
        attempts=row["attempts"],
        retry_count=row["retry_count"],
        shop=row["shop"],
        recovered=row["recovered"],
        parent_id=row["parent_id"],
        resumed=row["waited"],
        created_at=row["created_at"],
        shop_uninstalled=bool(row["shop_uninstalled"]),
    )


# A job another claim has locked is skipped, not waited for.
_CLAIM_MANY = f"""
    WITH before AS (
        SELECT id, status AS was, wait_for AS waited FROM jobs
         WHERE id = ANY($1::uuid[]) AND {CLAIMABLE}
         FOR UPDATE SKIP LOCKED
    )
    UPDATE jobs {CLAIM_SET}
      FROM before
     WHERE jobs.id = before.id
    {CLAIM_RETURNING}
"""


async def claim_jobs(
    database: Database, job_ids: list[UUID], owner: str, lease_seconds: float
) -> tuple[list[Claim], dict[UUID, ClaimResult]]:
    """Take jobs for one run each, in one round trip: the claims, and for every job not
    claimed, why (SKIP: final or gone; HELD: a live worker holds it; BUSY: its row was locked
    by another writer, a wake or a cancel committing, say).

    Only a pending or retrying job, or a processing one whose lease has expired (its worker
    died), can be claimed; completed and failed are final. A job another claim has locked is
    skipped, not waited for. The per-shop cap is not here: the take held it (service/queue/).
    """
    async with connection(database) as raw:
        claims = [
            _claim(row) for row in await raw.fetch(_CLAIM_MANY, job_ids, owner, lease_seconds)
        ]
        unclaimed: dict[UUID, ClaimResult] = {}
        missing = set(job_ids) - {c.id for c in claims}
        if missing:
            found = await raw.fetch(
                """SELECT id, status, lease_owner IS NOT NULL AND lease_expires_at >= now()
                          AS leased
                     FROM jobs WHERE id = ANY($1::uuid[])""",
                list(missing),
            )
            rows = {row["id"]: row for row in found}
            for job_id in missing:
                row = rows.get(job_id)
                if row is None or row["status"] in FINAL_STATUSES:
                    unclaimed[job_id] = ClaimResult.SKIP
                elif row["leased"]:
                    unclaimed[job_id] = ClaimResult.HELD
                else:  # claimable, but locked (SKIP LOCKED) by a writer that has not committed
                    unclaimed[job_id] = ClaimResult.BUSY
    return claims, unclaimed


async def renew_leases(
    database: Database, job_ids: list[UUID], owner: str, lease_seconds: float
) -> set[UUID]:
    """Extend the leases of a worker's running jobs in one statement; the ids still its own
    (one missing: another worker holds that job now, or it ended)."""
    async with connection(database) as raw:
        rows = await raw.fetch(
            """UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3)
                WHERE id = ANY($1::uuid[]) AND lease_owner = $2 AND status = 'processing'
            RETURNING id""",
            job_ids,
            owner,
            lease_seconds,
        )
    return {row["id"] for row in rows}


async def release_job(database: Database, job_id: UUID, owner: str) -> bool:
    """Give a job back unfinished (shutdown): `retrying`, due now, never left `processing`.

    The start is taken back too: a graceful give-back (a deploy) must not count toward the
    "Abandoned" rule, which fails a job whose starts keep ending without an outcome."""
    async with connection(database) as raw:
        done = await raw.fetchval(
            f"""UPDATE jobs SET status = 'retrying', run_at = now(), attempts = attempts - 1,
                       lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
                 WHERE {HELD_BY_OWNER} RETURNING true""",
            job_id,
            owner,
        )
    return bool(done)


async def fail_unclaimed_job(database: Database, job_id: UUID, error: str) -> bool:
    """Fail a job no worker can run (its type is unknown) without claiming it; only one that
    is waiting, or processing under an expired lease, so a live run is never touched. The
    message is the worker's own ("Unknown job type NAME"): public (schema.sql, error_public)."""
    async with connection(database) as raw:
        done = await raw.fetchval(
            f"""UPDATE jobs SET status = 'failed', error_message = $2, error_public = true,
                      lease_owner = NULL, lease_expires_at = NULL,
                      finished_at = now(), updated_at = now()
                WHERE id = $1 AND {CLAIMABLE} RETURNING true""",
            job_id,
            error,
        )
    return bool(done)
