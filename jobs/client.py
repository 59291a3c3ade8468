"""Opening a JobsClient from settings, for the app's own code.

    from jobs import open_client

    async with open_client() as client:  # settings from the environment, or pass a Settings
        enqueued = await client.enqueue("inventory_report", shop="cool-shop.myshopify.com")
        job = await client.get(enqueued.id)

The web and the worker build their clients at start-up, on the pools they already hold; a
script, a route of another framework or a test opens one here. It connects to Postgres and
Redis, reads the enabled job types from the same settings (jobs/registry.py), and closes both
on exit, whether the block ended normally or not. It sits above the registry (pyproject's
layers), which is why it is not a method of JobsClient: service/jobs_client.py may not import
the job types it is given.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from jobs.registry import job_types
from service import queue
from service.core.db import create_database
from service.core.settings import Settings, load_settings
from service.jobs_client import JobsClient

# A client opened here serves one script or one process's own calls: a few connections.
MAX_CONNECTIONS = 4


@asynccontextmanager
async def open_client(settings: Settings | None = None) -> AsyncIterator[JobsClient]:
    """A JobsClient on its own Postgres pool and Redis connection, closed on exit; `settings`
    default to the environment's (exiting with one line naming a missing setting)."""
    settings = settings if settings is not None else load_settings(Settings)
    async with AsyncExitStack() as closing:
        database = create_database(settings.database_url, min_size=1, max_size=MAX_CONNECTIONS)
        await database.connect()
        closing.push_async_callback(database.disconnect)
        redis = queue.connect(settings.redis_url)
        closing.push_async_callback(redis.aclose)
        yield JobsClient(database, redis, job_types(settings))
