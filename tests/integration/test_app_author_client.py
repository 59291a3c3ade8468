"""An app author's view of the client: opened from settings (the environment), enqueue, read,
cancel and retry a job, importing nothing but `jobs` (the README's promise)."""

from __future__ import annotations

from uuid import UUID

import pytest
from arq.connections import ArqRedis
from databases import Database

from jobs import EnqueuedJob, JobStatus, JobView, ShopNotInstalled, open_client
from tests.support.jobs import make_shop

SHOP = "test-shop.myshopify.com"


async def test_a_client_opened_from_the_environment_enqueues_and_reads_jobs(
    env: dict[str, str], database: Database, redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    await make_shop(database, SHOP)

    async with open_client() as client:
        enqueued = await client.enqueue(
            "echo", shop="Test-Shop.myshopify.com", input={"message": "hi"}
        )
        assert isinstance(enqueued, EnqueuedJob)
        assert enqueued.status is JobStatus.PENDING and enqueued.created

        job = await client.get(enqueued.id)
        assert isinstance(job, JobView)
        assert (job.id, job.type, job.shop, job.status) == (
            enqueued.id, "echo", SHOP, JobStatus.PENDING,
        )  # fmt: skip
        assert job.input["message"] == "hi" and job.attempts == 0
        assert (job.result, job.error, job.parent_id, job.children) == (None, None, None, None)

        assert await client.retry(enqueued.id) is None  # only a failed job starts over
        assert await client.cancel(enqueued.id)
        cancelled = await client.get(enqueued.id)
        assert cancelled is not None and cancelled.status is JobStatus.FAILED
        assert (cancelled.error, cancelled.error_public) == ("Cancelled", True)

        assert await client.retry(enqueued.id) is not None
        retried = await client.get(enqueued.id)
        assert retried is not None and retried.status is JobStatus.PENDING
        assert retried.error is None

        with pytest.raises(ShopNotInstalled):
            await client.enqueue("echo", shop="nobody.myshopify.com", input={"message": "x"})
        assert await client.get(UUID(int=0)) is None
