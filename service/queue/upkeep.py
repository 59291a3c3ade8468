"""What the reconciler and the gauges ask of the queue: repair it, and how deep it is."""

from __future__ import annotations

import time
from enum import StrEnum

from redis.asyncio import Redis

from service.queue.keys import HELD, JOB, QUEUE_NAME, shop_queue
from service.queue.scripts import scripts


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


async def repair(redis: Redis, shop_cap: int) -> int:
    """Rebuild the per-shop running counts from the taken jobs, and put capped shops now
    under the cap back in the rotation; how many counts were wrong."""
    return int(await scripts(redis).repair(args=[int(time.time() * 1000), shop_cap]))


class Found(StrEnum):
    """Where the queue has a job the reconciler asks about."""

    MISSING = "missing"  # nowhere: Redis lost it, or its enqueue died half-way
    SHOP_SET = "shop_set"  # waiting on its shop's set
    ELSEWHERE = "elsewhere"  # on arq's queue, or held by a worker


async def find(redis: Redis, jobs: list[tuple[str, str | None]]) -> list[Found]:
    """Where each (job id, shop) is, in one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        for job_id, shop in jobs:
            pipe.zscore(QUEUE_NAME, job_id)
            pipe.exists(HELD + job_id)
            pipe.zscore(shop_queue(shop), job_id)
        answers = await pipe.execute()
    found = []
    for i in range(len(jobs)):
        queued, held, on_shop_set = answers[3 * i : 3 * i + 3]
        if queued is not None or held:
            found.append(Found.ELSEWHERE)
        elif on_shop_set is not None:
            found.append(Found.SHOP_SET)
        else:
            found.append(Found.MISSING)
    return found


async def drop_leftover(redis: Redis, job_id: str) -> None:
    """Delete a job key that has no queue entry: it would block the re-enqueue (`_job_id`)."""
    await redis.delete(JOB + job_id)
