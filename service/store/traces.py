"""The W3C trace context a job was created under (jobs.trace_context, migration 0004).

Written and read only while OpenTelemetry traces are on (service/core/tracing.py): a job
created with traces off has NULL, and its runs start traces of their own. A statement of its
own rather than a column of the intake's group-commit INSERT or of the claim, so that turning
traces off costs nothing on those hot paths; with traces on, each job costs one UPDATE and
each run one primary-key read more.
"""

from __future__ import annotations

from uuid import UUID

from databases import Database

from service.store.sql import connection


async def set_trace_context(database: Database, job_id: UUID, carrier: str) -> None:
    """Keep the context of the job's creation, unless it has one (a retry keeps the first)."""
    async with connection(database) as raw:
        await raw.execute(
            "UPDATE jobs SET trace_context = $2 WHERE id = $1 AND trace_context IS NULL",
            job_id,
            carrier,
        )


async def trace_context_of(database: Database, job_id: UUID) -> str | None:
    async with connection(database) as raw:
        value = await raw.fetchval("SELECT trace_context FROM jobs WHERE id = $1", job_id)
    return None if value is None else str(value)
