"""Jobs for tests: rows and queue entries put in directly, waits for outcomes, and the context
a handler is called with when a test calls it directly."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from typing import Any

import orjson
from arq.connections import ArqRedis
from databases import Database

from service import queue, store
from service.core.token_cipher import TokenCipher
from tests.support.config import TEST_TOKEN_KEYS


async def make_shop(database: Database, domain: str = "test-shop.myshopify.com") -> store.Shop:
    return await store.upsert_shop(database, domain, "shpat_test", "read_products")


async def shop_with_tokens(database: Database, domain: str) -> store.Shop | None:
    """The shop with its tokens as the worker sees them: read and decrypted."""
    shop = await store.get_shop(database, domain, tokens=True)
    if shop is None:
        return None
    cipher = TokenCipher(TEST_TOKEN_KEYS)
    return dataclasses.replace(
        shop,
        access_token=cipher.decrypt(shop.access_token),
        refresh_token=cipher.decrypt(shop.refresh_token),
    )


async def add_job(
    database: Database,
    redis: ArqRedis,
    shop: store.Shop,
    input: dict[str, Any],
    job_type: str = "echo",
    enqueue: bool = True,
) -> uuid.UUID:
    job_id = uuid.uuid4()
    await database.execute(
        "INSERT INTO jobs (id, shop_id, type, input) VALUES (:id, :shop, :type, CAST(:input AS jsonb))",
        {"id": job_id, "shop": shop.id, "type": job_type, "input": orjson.dumps(input).decode()},
    )
    if enqueue:
        assert await queue.enqueue(redis, job_type, str(job_id), shop=shop.domain)
    return job_id


async def wait_for_status(
    database: Database, job_id: uuid.UUID, statuses: set[str], timeout: float = 30.0
) -> store.Job:
    deadline = time.monotonic() + timeout
    job = None
    while time.monotonic() < deadline:
        job = await store.get_job(database, job_id)
        if job is not None and job.status in statuses:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} not in {statuses} after {timeout}s: {job}")


async def wait_all(
    database: Database, ids: list[uuid.UUID], status: str = "completed", timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = await database.fetch_val(
            "SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND status = :s",
            {"ids": ids, "s": status},
        )
        if done == len(ids):
            return
        await asyncio.sleep(0.1)
    rows = await database.fetch_all(
        "SELECT status, count(*) AS n FROM jobs WHERE id = ANY(:ids) GROUP BY status", {"ids": ids}
    )
    raise AssertionError(f"not all {status}: {[tuple(r._mapping.values()) for r in rows]}")


class HandlerContext:
    """A JobContext for calling a job handler directly (the worker builds the real one)."""

    def __init__(
        self,
        *,
        shop: str,
        job_type: str,
        job_id: str | None = None,
        admin: object = None,
        database: object = None,
        attempt: int = 1,
    ) -> None:
        self.job_id = job_id or str(uuid.uuid4())
        self.job_type = job_type
        self.shop = shop
        self.attempt = attempt
        self.admin = admin
        self.database = database
        self.progress: list[tuple[int, str | None]] = []

    async def report_progress(self, percent: int, message: str | None = None) -> None:
        self.progress.append((percent, message))
