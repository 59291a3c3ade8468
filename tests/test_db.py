"""service/db.py against a Postgres whose connections are killed under it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from service.db import create_database
from service.settings import Settings


async def test_no_task_is_left_unable_to_reach_postgres_after_its_connections_die(
    settings: Settings,
) -> None:
    """Long-lived tasks query while every backend is killed, again and again; afterwards each
    of them reaches Postgres again.

    With plain `databases`, a task whose connection died between its query and the pool's
    reset of it kept failing with "Connection is already acquired", for as long as the task
    lived: the worker's poll loop is such a task, so it stopped claiming jobs for good.
    """
    database = create_database(settings.database_url, min_size=1, max_size=10)
    admin = create_database(settings.database_url, min_size=1, max_size=1)
    await database.connect()
    await admin.connect()
    errors: Counter[str] = Counter()
    stop = asyncio.Event()

    async def loop() -> bool:
        """Query until told to stop; then whether this task still gets an answer."""
        while not stop.is_set():
            try:
                await database.fetch_val("SELECT 1")
            except Exception as exc:
                errors[exc.__class__.__name__] += 1
            await asyncio.sleep(0)
        for _ in range(20):  # a few tries: the pool reconnects meanwhile
            try:
                return await database.fetch_val("SELECT 1") == 1
            except Exception:
                await asyncio.sleep(0.1)
        return False

    tasks = [asyncio.create_task(loop()) for _ in range(20)]
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            await admin.fetch_all(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
                "AND datname = current_database() AND application_name = ''"
            )
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        recovered = await asyncio.gather(*tasks)
        await database.disconnect()
        await admin.disconnect()
    assert errors, "no connection was killed mid-use"
    assert all(recovered), f"{recovered.count(False)} task(s) cut off from Postgres: {errors}"
