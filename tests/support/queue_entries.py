"""What the queue holds, wherever it is: arq's queue, a shop's set, or taken.

arq's queue keeps a job's entry while it runs; the take moves it from its shop's set to the
taken jobs (service/queue/). Tests ask "is this job queued, and due when?" of all of them, and
write entries the way a release before per-shop queues did (`put_on_arq_queue`).
"""

from __future__ import annotations

from redis.asyncio import Redis

from service import queue
from service.queue import keys


async def queue_entries(redis: Redis) -> dict[str, float]:
    """Job id -> due time (ms) of every entry: arq's queue, every shop's set, and the jobs
    taken from those sets and not finished yet (as arq's queue still lists its running ones)."""
    entries = {
        m.decode(): s for m, s in await redis.zrange(queue.QUEUE_NAME, 0, -1, withscores=True)
    }
    # A shop's due jobs are scored by rank (priority band, then when due): the due time is
    # what is left of a rank below one band; its later jobs are scored by when they are due.
    async for key in redis.scan_iter(match=keys.SHOP_QUEUE_PREFIX + "*", count=1000):
        for member, score in await redis.zrange(key, 0, -1, withscores=True):
            entries[member.decode()] = score % keys.RANK_BAND
    async for key in redis.scan_iter(match=keys.LATER_PREFIX + "*", count=1000):
        for member, score in await redis.zrange(key, 0, -1, withscores=True):
            entries[member.decode()] = score
    for job_id, info in (await redis.hgetall(keys.TAKEN)).items():
        entries[job_id.decode()] = float(info.split(b" ", 1)[0]) % keys.RANK_BAND
    return entries


async def queued_score(redis: Redis, job_id: str) -> float | None:
    """When the job's entry is due (ms), or None if the queue holds no entry for it."""
    return (await queue_entries(redis)).get(job_id)


async def drop_entry(redis: Redis, job_id: str) -> None:
    """Remove a job's entry wherever it is (as Redis losing it would)."""
    await redis.zrem(queue.QUEUE_NAME, job_id)
    for prefix in (keys.SHOP_QUEUE_PREFIX, keys.LATER_PREFIX):
        async for key in redis.scan_iter(match=prefix + "*", count=1000):
            await redis.zrem(key, job_id)


async def put_on_arq_queue(
    redis: Redis, job_type: str, job_id: str, shop: str | None, due_ms: int
) -> None:
    """An entry on arq's own queue, as a release before per-shop queues (or the retired
    QUEUE_FAIRNESS=fifo) wrote it: arq's payload under its job key, the id on `arq:queue`."""
    args = [job_id] if shop is None else [job_id, shop]
    payload = queue.serialize({"t": None, "f": job_type, "a": args, "k": {}, "et": due_ms})
    await redis.set(keys.JOB + job_id, payload, px=86_400_000)
    await redis.zadd(keys.QUEUE_NAME, {job_id: due_ms})
