"""Per-process clients that job handlers reach through their context (`ctx.admin`).

Built once at worker start-up and closed at shutdown, never per job.
"""

from __future__ import annotations

from dataclasses import dataclass

from arq.connections import ArqRedis
from databases import Database

from service.core.settings import Settings
from service.shopify.admin import AdminClient


@dataclass(frozen=True)
class Resources:
    """What a worker process opens once for every run's handler."""

    admin: AdminClient  # Shopify's Admin API, shared: one HTTP pool, one token cache


async def open_resources(settings: Settings, database: Database, redis: ArqRedis) -> Resources:
    return Resources(admin=AdminClient(settings, database, redis))


async def close_resources(resources: Resources) -> None:
    await resources.admin.aclose()
