"""What the queue holds, read the same way whatever QUEUE_FAIRNESS put it there.

arq's queue keeps a job's entry while it runs; fair scheduling moves it from its shop's set to
the taken jobs (service/core/fair.py). Tests ask "is this job queued, and due when?" of both.
"""

from __future__ import annotations

from redis.asyncio import Redis

from service.core import fair, queue


async def queue_entries(redis: Redis) -> dict[str, float]:
    """Job id -> due time (ms) of every entry: arq's queue, every shop's set, and the jobs
    taken from those sets and not finished yet (as arq's queue still lists its running ones)."""
    entries = {
        m.decode(): s for m, s in await redis.zrange(queue.QUEUE_NAME, 0, -1, withscores=True)
    }
    async for key in redis.scan_iter(match=fair.SHOP_QUEUE_PREFIX + "*", count=1000):
        for member, score in await redis.zrange(key, 0, -1, withscores=True):
            entries[member.decode()] = score
    for job_id, info in (await redis.hgetall(fair.TAKEN)).items():
        entries[job_id.decode()] = float(info.split(b" ", 1)[0])
    return entries


async def queued_score(redis: Redis, job_id: str) -> float | None:
    """When the job's entry is due (ms), or None if the queue holds no entry for it."""
    return (await queue_entries(redis)).get(job_id)


async def drop_entry(redis: Redis, job_id: str) -> None:
    """Remove a job's entry wherever it is (as Redis losing it would)."""
    await redis.zrem(queue.QUEUE_NAME, job_id)
    async for key in redis.scan_iter(match=fair.SHOP_QUEUE_PREFIX + "*", count=1000):
        await redis.zrem(key, job_id)
