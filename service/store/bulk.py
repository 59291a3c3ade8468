"""The Shopify bulk operation a job is waiting for (jobs.bulk_operation_id).

Kept with the job so that a run interrupted while waiting (a worker killed, a deploy) resumes
the same operation: Shopify runs a limited number per shop, and starting a second one would
both wait for the first and pay for it twice.
"""

from __future__ import annotations

from uuid import UUID

from databases import Database

from service.core.states import FINAL_STATUSES
from service.store.sql import connection


async def bulk_operation_of(database: Database, job_id: UUID) -> str | None:
    async with connection(database) as db:
        operation_id: str | None = await db.fetchval(
            "SELECT bulk_operation_id FROM jobs WHERE id = $1", job_id
        )
    return operation_id


async def keep_bulk_operation(database: Database, job_id: UUID, operation_id: str | None) -> None:
    async with connection(database) as db:
        await db.execute(
            "UPDATE jobs SET bulk_operation_id = $2 WHERE id = $1", job_id, operation_id
        )


async def job_is_final(database: Database, job_id: UUID) -> bool:
    """Has the job ended while its run still waits (cancelled from the dashboard or API)?"""
    async with connection(database) as db:
        status = await db.fetchval("SELECT status FROM jobs WHERE id = $1", job_id)
    return status is None or status in FINAL_STATUSES
