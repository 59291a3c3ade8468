"""service/core/db.py against a Postgres whose connections are killed under it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from databases import Database

from service.core.db import create_database
from service.core.settings import Settings


async def _query(database: Database) -> None:
    await database.fetch_val("SELECT 1")


async def _transaction(database: Database) -> None:
    async with database.transaction():
        await database.fetch_val("SELECT 1")
        await database.fetch_val("SELECT 2")


@pytest.mark.parametrize("work", [_query, _transaction], ids=["queries", "transactions"])
async def test_no_task_is_left_unable_to_reach_postgres_after_its_connections_die(
    work, settings: Settings
) -> None:
    """Long-lived tasks query while every backend is killed, again and again; afterwards each
    of them reaches Postgres again, and the pool has all its connections back.

    With plain `databases`, a task whose connection died at the wrong moment (its release
    failed, or its transaction's ROLLBACK did) kept failing ("Connection is already acquired",
    "connection has been released back to the pool") for as long as the task lived: the
    worker's poll loop is such a task. Its pool slot was never returned either.
    """
    database = create_database(settings.database_url, min_size=1, max_size=10)
    killer = create_database(settings.database_url, min_size=1, max_size=1)
    await database.connect()
    await killer.connect()
    errors: Counter[str] = Counter()
    stop = asyncio.Event()

    async def loop() -> bool:
        """Work until told to stop; then whether this task still gets an answer."""
        while not stop.is_set():
            try:
                await work(database)
            except Exception as exc:
                errors[exc.__class__.__name__] += 1
            await asyncio.sleep(0)
        for _ in range(20):  # a few tries: the pool reconnects meanwhile
            try:
                await work(database)
                return True
            except Exception:
                await asyncio.sleep(0.1)
        return False

    tasks = [asyncio.create_task(loop()) for _ in range(20)]
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            await killer.fetch_all(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
                "AND datname = current_database()"
            )
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        # A pool whose slots were never returned would leave these waiting for ever.
        done, pending = await asyncio.wait(tasks, timeout=30)
        for task in pending:
            task.cancel()
        await killer.disconnect()
    recovered = [task.result() for task in done]
    assert not pending, f"{len(pending)} task(s) waiting for a connection the pool lost"
    assert errors, "no connection was killed mid-use"
    assert all(recovered), f"{recovered.count(False)} task(s) cut off from Postgres: {errors}"
    await database.disconnect()
