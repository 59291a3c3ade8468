"""Batch figures for docs/performance.md: `python -m bench.batches` (DATABASE_URL, REDIS_URL;
`eval "$(make -s services)"` gives local ones). Uses, and empties, the `jobs` of a shop it
makes (bench-batches.myshopify.com), and flushes REDIS_URL's database: stop `make dev` first.

- creating a batch of 10,000 children (JobsClient.enqueue_children: one INSERT and one Redis
  pipeline per 1,000), best and median of 3;
- the status read of a parent with 10,000 children, half of them final, against the same read
  of a job without children (the parent adds store.batch_counts), median of 300 each.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Mapping

from bench.stack import TOKEN_KEYS
from jobs.registry import job_types
from service import queue, store
from service.core.db import create_database
from service.core.settings import Settings
from service.jobs_client import JobsClient
from service.migrations import apply_migrations

SHOP = "bench-batches.myshopify.com"
CHILDREN = 10_000
READS = 300


def bench_settings(environ: Mapping[str, str]) -> Settings:
    """Settings from DATABASE_URL and REDIS_URL alone: the rest are the benchmark's own."""
    return Settings(
        database_url=environ["DATABASE_URL"],
        redis_url=environ["REDIS_URL"],
        shopify_api_key="bench",
        shopify_api_secret="bench",
        token_encryption_keys=TOKEN_KEYS,  # the bench stores no real token
        enable_diagnostic_jobs=True,
    )


async def main() -> None:
    settings = bench_settings(os.environ)
    database = create_database(settings.database_url, min_size=1, max_size=4)
    await database.connect()
    redis = queue.connect(settings.redis_url)
    try:
        await apply_migrations(database)
        shop = await store.upsert_shop(database, SHOP, "shpat_bench", "")
        client = JobsClient(database, redis, job_types(settings))
        inputs = [{"message": f"child {n}"} for n in range(CHILDREN)]
        timings = []
        for _ in range(3):
            await database.execute("DELETE FROM jobs WHERE shop_id = :s", {"s": shop.id})
            await redis.flushdb()
            parent, _ = await store.create_job(
                database, shop_id=shop.id, job_type="echo", job_input={"message": "p"}
            )
            await database.execute(
                "UPDATE jobs SET status = 'processing', batch = '{}'::jsonb WHERE id = :id",
                {"id": parent.id},
            )
            started = time.perf_counter()
            created = await client.enqueue_children(parent.id, shop, "echo", inputs)
            timings.append(time.perf_counter() - started)
            assert created == CHILDREN
        print(
            f"create {CHILDREN} children: best {min(timings):.2f}s, "
            f"median {statistics.median(timings):.2f}s "
            f"({CHILDREN / statistics.median(timings):,.0f} children/s)"
        )

        await database.execute(
            """UPDATE jobs SET status = 'completed' WHERE id IN (
                   SELECT id FROM jobs WHERE parent_id = :p LIMIT :n)""",
            {"p": parent.id, "n": CHILDREN // 2},
        )
        await database.execute("ANALYZE jobs")
        plain, _ = await store.create_job(
            database, shop_id=shop.id, job_type="echo", job_input={"message": "plain"}
        )

        async def read(job_id, with_batch: bool) -> float:  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            job = await store.get_job_for_shop(database, shop.id, job_id)
            if with_batch and job is not None and job.batch is not None:
                await store.batch_counts(database, job_id)
            return time.perf_counter() - started

        for _ in range(20):  # warm the statement caches
            await read(parent.id, True)
            await read(plain.id, False)
        plain_reads = [await read(plain.id, False) for _ in range(READS)]
        parent_reads = [await read(parent.id, True) for _ in range(READS)]
        base, batch = statistics.median(plain_reads), statistics.median(parent_reads)
        print(
            f"status read: plain job {base * 1000:.2f} ms, parent of {CHILDREN} children "
            f"{batch * 1000:.2f} ms (median of {READS}; overhead {(batch - base) * 1000:.2f} ms)"
        )
        await database.execute("DELETE FROM jobs WHERE shop_id = :s", {"s": shop.id})
    finally:
        await redis.aclose()
        await database.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
