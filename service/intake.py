"""Taking jobs in on the web: rows and queue entries written in group commits.

Under load, many `POST /proxy/process` requests are in flight at once; each used to cost its
own INSERT and its own Redis call. Here concurrent requests share one INSERT of many rows and
one Redis pipeline (service/core/batch.py), and an idle system still writes each job at once. The
order per job is unchanged: the row is written first, then the queue entry, and a row whose
queue entry failed is deleted again.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import orjson
from arq.connections import ArqRedis
from databases import Database

from service import store
from service.core import queue
from service.core.batch import GroupCommit

NewRow = tuple[UUID, int, str, str, str | None, str | None, str]


class Intake:
    def __init__(self, database: Database, redis: ArqRedis) -> None:
        self.database = database
        self.redis = redis
        self._rows: GroupCommit[NewRow, bool] = GroupCommit(self._insert)
        self._queue: GroupCommit[tuple[str, str, str | None], bool] = GroupCommit(self._enqueue)

    async def create(
        self,
        *,
        shop_id: int,
        job_type: str,
        job_input: dict[str, Any],
        customer_id: str | None,
        idempotency_key: str | None,
        source: str = "proxy",
        job_id: UUID | None = None,
    ) -> tuple[UUID, store.Job | None]:
        """The id of the job for this request (`job_id` if given), and the job that already
        held its idempotency key (None: this call created the job)."""
        job_id = job_id or uuid4()
        row = (job_id, shop_id, job_type, orjson.dumps(job_input).decode(), customer_id,
               idempotency_key, source)  # fmt: skip
        if await self._rows.submit(row):
            return row[0], None
        job, created = await store.create_job(
            self.database, shop_id=shop_id, job_type=job_type, job_input=job_input,
            customer_id=customer_id, idempotency_key=idempotency_key, source=source,
            job_id=job_id,
        )  # fmt: skip
        return job.id, None if created else job

    async def enqueue(self, job_type: str, job_id: UUID, shop: str) -> bool:
        return await self._queue.submit((job_type, str(job_id), shop))

    async def _insert(self, rows: list[NewRow]) -> list[bool]:
        inserted = await store.insert_jobs(self.database, rows)
        return [row[0] in inserted for row in rows]

    async def _enqueue(self, jobs: list[tuple[str, str, str | None]]) -> list[bool]:
        return await queue.enqueue_many(self.redis, jobs)
