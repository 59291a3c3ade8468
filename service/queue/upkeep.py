"""What the reconciler and the gauges ask of the queue: repair it, and how deep it is."""

from __future__ import annotations

import time
from collections.abc import Mapping
from enum import StrEnum

from redis.asyncio import Redis

from service.queue.keys import BLOCKED_SHOP, HELD, JOB, PAUSED, QUEUE_NAME, later_queue, shop_queue
from service.queue.scripts import scripts
from service.queue.take import caps_argument


async def depth(redis: Redis) -> tuple[int, int]:
    """(entries, due now) over arq's queue and every shop's set, running jobs included."""
    total, due = await scripts(redis).depth(keys=[QUEUE_NAME], args=[int(time.time() * 1000)])
    return int(total), int(due)


async def place_shops(redis: Redis, shops: set[str], shop_cap: int) -> int:
    """Make sure these shops, whose sets hold waiting jobs, are where the take will find them
    (a script cut short, Redis out of memory say, can leave a shop out); how many were not."""
    if not shops:
        return 0
    now_ms = int(time.time() * 1000)
    return int(await scripts(redis).place(args=[now_ms, shop_cap, *sorted(shops)]))


async def repair(
    redis: Redis,
    shop_cap: int,
    type_caps: Mapping[str, int] | None = None,
    key_caps: Mapping[str, int] | None = None,
) -> int:
    """Rebuild the running counts (shops', types', keys') from the taken jobs, put capped shops
    now under the cap back in the rotation and release what caps with room hold back; how many
    counts were wrong."""
    args: list[str | int] = [
        int(time.time() * 1000), shop_cap,
        caps_argument(type_caps or {}), caps_argument(key_caps or {}),
    ]  # fmt: skip
    return int(await scripts(redis).repair(args=args))


async def pause_shop(redis: Redis, shop: str) -> None:
    """Take a shop out of the rotation: its due jobs wait (running ones finish)."""
    await scripts(redis).pause(args=[shop])


async def resume_shop(redis: Redis, shop: str, shop_cap: int = 0) -> bool:
    """Put a paused shop back in the rotation; False if it was not paused."""
    return bool(await scripts(redis).resume(args=[shop, int(time.time() * 1000), shop_cap]))


async def paused_shops(redis: Redis) -> set[str]:
    members: set[bytes] = await redis.smembers(PAUSED)  # type: ignore[misc]  # redis-py: "awaitable or answer"
    return {member.decode() for member in members}


class Found(StrEnum):
    """Where the queue has a job the reconciler asks about."""

    MISSING = "missing"  # nowhere: Redis lost it, or its enqueue died half-way
    SHOP_SET = "shop_set"  # waiting in its shop's sets (or held back by a cap)
    ELSEWHERE = "elsewhere"  # on arq's queue, or held by a worker


async def find(redis: Redis, jobs: list[tuple[str, str | None]]) -> list[Found]:
    """Where each (job id, shop) is, in one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        for job_id, shop in jobs:
            pipe.zscore(QUEUE_NAME, job_id)
            pipe.exists(HELD + job_id)
            pipe.zscore(shop_queue(shop), job_id)
            pipe.zscore(later_queue(shop), job_id)
            pipe.hexists(BLOCKED_SHOP, job_id)
        answers = await pipe.execute()
    found = []
    for i in range(len(jobs)):
        queued, held, ranked, later, blocked = answers[5 * i : 5 * i + 5]
        if queued is not None or held:
            found.append(Found.ELSEWHERE)
        elif ranked is not None or later is not None or blocked:
            found.append(Found.SHOP_SET)
        else:
            found.append(Found.MISSING)
    return found


async def drop_leftover(redis: Redis, job_id: str) -> None:
    """Delete a job key that has no queue entry: it would block the re-enqueue (`_job_id`)."""
    await redis.delete(JOB + job_id)
