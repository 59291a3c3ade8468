"""Shopify's mandatory privacy webhooks: a customer's data, and erasing a customer or a shop."""

from __future__ import annotations

from uuid import UUID

from databases import Database

from service.store.jobs import Job, job_from_row
from service.store.sql import JOB_COLUMNS, connection


async def customer_jobs(database: Database, shop_id: int, customer_id: str) -> list[Job]:
    """Every job a customer created in a shop (customers/data_request)."""
    async with connection(database) as raw:
        rows = await raw.fetch(
            f"""
            SELECT {JOB_COLUMNS} FROM jobs
             WHERE shop_id = $1 AND customer_id = $2
             ORDER BY created_at
            """,
            shop_id,
            customer_id,
        )
    return [job for row in rows if (job := job_from_row(row)) is not None]


async def delete_customer_jobs(
    database: Database, shop_id: int, customer_id: str, data_request_type: str
) -> int:
    """customers/redact: the customer's jobs (inputs, results) are all we hold about them,
    and the earlier data requests about them (`data_request_type` jobs naming the customer in
    their input), whose results are copies of those jobs."""
    async with connection(database) as raw:
        rows = await raw.fetch(
            """
            DELETE FROM jobs
             WHERE shop_id = $1
               AND (customer_id = $2 OR (type = $3 AND input ->> 'customer_id' = $2))
            RETURNING id
            """,
            shop_id,
            customer_id,
            data_request_type,
        )
    return len(rows)


async def redact_shop(database: Database, shop_id: int, keep_job_id: UUID | None) -> int:
    """shop/redact: delete the shop's jobs (but the one doing this) and its tokens.

    The shop row stays, without credentials and marked uninstalled, so the running redact
    job keeps its foreign key; retention removes that last job like any other.
    """
    async with connection(database) as raw, raw.transaction():
        rows = await raw.fetch(
            """
            DELETE FROM jobs
             WHERE shop_id = $1 AND id IS DISTINCT FROM $2
            RETURNING id
            """,
            shop_id,
            keep_job_id,
        )
        await raw.execute(
            """
            UPDATE shops
               SET access_token = NULL, token_expires_at = NULL, refresh_token = NULL,
                   refresh_token_expires_at = NULL, scopes = '',
                   uninstalled_at = COALESCE(uninstalled_at, now()), updated_at = now()
             WHERE id = $1
            """,
            shop_id,
        )
    return len(rows)
