"""The Flow trigger's row, written in the transaction that completes the job it reports on."""

from __future__ import annotations

from uuid import UUID

import asyncpg


async def insert_trigger_job(
    raw: asyncpg.Connection,
    *,
    job_id: UUID,
    of_job: UUID,
    job_type: str,
    input_json: str,
    idempotency_key: str,
) -> bool:
    """A `pending` job `job_id` of `job_type` for the shop of job `of_job`, on `raw` (the
    completing transaction's connection); False if the shop already has `idempotency_key`."""
    row = await raw.fetchrow(
        """
        INSERT INTO jobs (id, shop_id, type, input, status, idempotency_key, source)
        SELECT $1, shop_id, $2, $3::jsonb, 'pending', $4, 'job' FROM jobs WHERE id = $5
        ON CONFLICT ON CONSTRAINT jobs_idempotency DO NOTHING
        RETURNING id
        """,
        job_id, job_type, input_json, idempotency_key, of_job,
    )  # fmt: skip
    return row is not None
