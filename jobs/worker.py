"""`WorkerSettings` for `arq jobs.WorkerSettings`: job functions, hooks and the health server."""

from __future__ import annotations

import logging
from typing import Any

from jobs import health
from jobs.registry import job_types
from service import queue
from service.db import create_database
from service.settings import Settings

logger = logging.getLogger("shopjobs.worker")


def build_worker_settings(settings: Settings) -> type:
    types = job_types(settings)

    def make_function(name: str) -> Any:
        async def run(ctx: dict[str, Any], job_id: str) -> None:
            logger.info("job %s (%s) received", job_id, name)

        run.__qualname__ = run.__name__ = name
        return run

    async def on_startup(ctx: dict[str, Any]) -> None:
        database = create_database(settings.database_url)
        await database.connect()
        ctx["database"] = database
        redis = ctx["redis"]

        async def check_postgres() -> None:
            await database.fetch_val("SELECT 1")

        async def check_redis() -> None:
            await redis.ping()

        state = health.HealthState(checks={"postgres": check_postgres, "redis": check_redis})
        ctx["health_state"] = state
        ctx["health_runner"] = await health.start(state, settings.worker_health_port)
        logger.info("health server on :%d", settings.worker_health_port)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        await ctx["health_runner"].cleanup()
        await ctx["database"].disconnect()

    return type(
        "WorkerSettings",
        (),
        {
            "functions": [make_function(name) for name in types] or [make_function("noop")],
            "redis_settings": queue.redis_settings(settings.redis_url),
            "queue_name": queue.QUEUE_NAME,
            "job_serializer": queue.serialize,
            "job_deserializer": queue.deserialize,
            "max_jobs": settings.worker_concurrency,
            "on_startup": on_startup,
            "on_shutdown": on_shutdown,
        },
    )
