"""Putting jobs on the queue: one job, or many in one round trip, each on its shop's set."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from service.queue.keys import APP_BUCKET, JOB, RESULT, shop_queue
from service.queue.scripts import scripts
from service.queue.wire import serialize

EXPIRES_EXTRA_MS = 86_400_000  # arq's default: a queued job's key outlives its due time by a day


def _call(
    job_type: str, job_id: str, shop: str | None, defer_seconds: float
) -> tuple[list[str], list[str | int | bytes]]:
    """The ENQUEUE script's keys and arguments for one job."""
    now_ms = int(time.time() * 1000)
    defer_ms = int(defer_seconds * 1000) if defer_seconds > 0 else 0
    args = [job_id] if shop is None else [job_id, shop]
    payload = serialize({"t": None, "f": job_type, "a": args, "k": {}, "et": now_ms})
    keys = [JOB + job_id, RESULT + job_id, shop_queue(shop)]
    argv: list[str | int | bytes] = [
        job_id, payload, now_ms + defer_ms, defer_ms + EXPIRES_EXTRA_MS, shop or APP_BUCKET, now_ms,
    ]  # fmt: skip
    return keys, argv


async def enqueue(
    redis: Redis, job_type: str, job_id: str, *, shop: str | None = None, defer_seconds: float = 0
) -> bool:
    """Queue a job for the worker: arq function = the job type; arguments = id and shop.

    The entry goes on its shop's set, taken round-robin by shop. The shop domain rides along
    so a worker knows the job's shop without asking Postgres. `_job_id` semantics are arq's:
    the same job is never queued twice while it waits or runs; that case returns False.
    """
    keys, args = _call(job_type, job_id, shop, defer_seconds)
    return bool(await scripts(redis).enqueue(keys=keys, args=args))


async def wake(redis: Redis, job_type: str, job_id: str, *, shop: str | None) -> bool:
    """Make a suspended job's entry due now (what it waited for happened); an entry that was
    lost is queued anew. False when neither was needed: a worker holds the job now."""
    now_ms = int(time.time() * 1000)
    woken = await scripts(redis).wake(
        keys=[shop_queue(shop)], args=[job_id, now_ms, shop or APP_BUCKET]
    )
    if woken:
        return True
    return await enqueue(redis, job_type, job_id, shop=shop)


async def reschedule(
    redis: Redis, job_type: str, job_id: str, *, shop: str | None, defer_seconds: float
) -> bool:
    """Make a queued job due `defer_seconds` from now (a debounced job pushed later); an entry
    that was lost is queued anew. False when neither was needed: a worker holds the job now."""
    now_ms = int(time.time() * 1000)
    due_ms = now_ms + max(0, int(defer_seconds * 1000))
    moved = await scripts(redis).reschedule(
        keys=[shop_queue(shop)], args=[job_id, due_ms, shop or APP_BUCKET, now_ms]
    )
    if moved:
        return True
    return await enqueue(redis, job_type, job_id, shop=shop, defer_seconds=defer_seconds)


async def enqueue_many(redis: Redis, jobs: list[tuple[str, str, str | None]]) -> list[bool]:
    """`enqueue` for many (job type, job id, shop), due now, in one round trip (a pipeline)."""
    script = scripts(redis).enqueue
    async with redis.pipeline(transaction=False) as pipe:
        for job_type, job_id, shop in jobs:
            keys, args = _call(job_type, job_id, shop, 0)
            await script(keys=keys, args=args, client=pipe)
        answers = await pipe.execute()
    return [bool(answer) for answer in answers]
