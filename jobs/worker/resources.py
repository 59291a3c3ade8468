"""Per-process clients that job handlers reach through their context (`ctx.admin`).

Built once at worker start-up and closed at shutdown, never per job.
"""

from __future__ import annotations

from typing import Any

from arq.connections import ArqRedis
from databases import Database

from service.core.settings import Settings
from service.shopify.admin import AdminClient


async def open_resources(settings: Settings, database: Database, redis: ArqRedis) -> dict[str, Any]:
    return {"admin": AdminClient(settings, database, redis)}


async def close_resources(resources: dict[str, Any]) -> None:
    for resource in resources.values():
        close = getattr(resource, "aclose", None)
        if close is not None:
            await close()
