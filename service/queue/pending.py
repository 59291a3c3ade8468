"""Why a queued job is not running yet, as the queue knows it (service/job_views.py asks).

The take (service/queue/scripts.py) holds a paused shop's jobs, a shop at its cap, and a job a
type's or key's cap holds back; the worker's rate limiter defers a job (jobs/worker/runner.py)
and marks it here, for as long as it defers it. Read in one round trip.
"""

from __future__ import annotations

from redis.asyncio import Redis

from service.queue.keys import APP_BUCKET, BLOCKED_SHOP, CAPPED, PAUSED

DEFERRED_PREFIX = "shopjobs:deferred:"  # + job id -> the reason, expiring when it is retried


async def mark_deferred(redis: Redis, job_id: str, reason: str, seconds: float) -> None:
    """`job_id` was put back for `seconds` because of `reason` (e.g. `rate_limit`)."""
    await redis.set(DEFERRED_PREFIX + job_id, reason, px=max(1, int(seconds * 1000)))


Held = tuple[str, float | None]


async def why_held(redis: Redis, job_id: str, shop: str | None) -> Held | None:
    """(reason, seconds until it is looked at again or None) for a job the queue holds back:
    `paused`, `rate_limit`, `concurrency_cap` (a type's or key's cap), `shop_cap`; None if
    nothing does."""
    [held] = await why_held_many(redis, [(job_id, shop)])
    return held


async def why_held_many(redis: Redis, jobs: list[tuple[str, str | None]]) -> list[Held | None]:
    """`why_held` for several jobs (job id, shop), in one round trip."""
    if not jobs:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for job_id, shop in jobs:
            bucket = shop or APP_BUCKET
            pipe.sismember(PAUSED, bucket)
            pipe.get(DEFERRED_PREFIX + job_id)
            pipe.pttl(DEFERRED_PREFIX + job_id)
            pipe.hexists(BLOCKED_SHOP, job_id)
            pipe.sismember(CAPPED, bucket)
        answers = await pipe.execute()
    return [_reason(*answers[i * 5 : i * 5 + 5]) for i in range(len(jobs))]


def _reason(
    paused: object, deferred: object, ttl: object, blocked: object, capped: object
) -> Held | None:
    if paused:
        return "paused", None
    if deferred is not None:
        reason = deferred.decode() if isinstance(deferred, bytes) else str(deferred)
        left = int(str(ttl))
        return reason, left / 1000 if left > 0 else None
    if blocked:
        return "concurrency_cap", None
    if capped:
        return "shop_cap", None
    return None
