"""Pausing a shop in the queue: the set of paused shops the take skips (the take's side is in
take.py). Postgres (`shops.paused_at`) is the record; this set is what the take reads."""

from __future__ import annotations

from redis.asyncio import Redis

from service.queue.keys import PAUSED


async def pause_shop(redis: Redis, shop: str) -> None:
    """Add the shop to the paused set: its due jobs stay queued until `resume_shop`."""
    await redis.sadd(PAUSED, shop)  # type: ignore[misc]


async def resume_shop(redis: Redis, shop: str) -> None:
    """Take the shop out of the paused set: its jobs are back in the rotation."""
    await redis.srem(PAUSED, shop)  # type: ignore[misc]
