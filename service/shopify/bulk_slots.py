"""A shop's bulk operation slots in Redis, and the finish signal a waiting run wakes on.

Shopify runs one bulk query (and one bulk mutation) at a time per shop before API 2026-01,
five from 2026-01. Asking for a sixth fails (OPERATION_IN_PROGRESS, LIMIT_REACHED), so the
slots are a Redis semaphore per shop and type: a sorted set of holders (job ids) scored by
lease expiry. A holder renews its lease while it waits; one that stopped renewing (a killed
worker) frees its slot when the lease lapses.

The `bulk_operations/finish` webhook (service/web/webhooks.py) pushes the operation's status
to a Redis list named after the operation; the run waiting for it blocks on that list.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import cast

from redis.asyncio import Redis

# Before this API version Shopify runs one bulk operation of each type per shop; from it, five.
CONCURRENT_FROM_VERSION = "2026-01"
CONCURRENT_LIMIT = 5
SLOT_LEASE_SECONDS = 60.0  # a slot whose holder stopped renewing it (killed) frees itself
SIGNAL_BLOCK_SECONDS = 1.0  # under the Redis client's socket timeout
SIGNAL_LIFETIME_SECONDS = 3600
SINCE_LIFETIME_SECONDS = 8 * 86_400  # a bulk result expires after 7 days
SUBSCRIBED_LIFETIME_SECONDS = 7 * 86_400  # a shop's last finish webhook vouches this long

# KEYS[1] the shop's slots (a sorted set: job id -> lease expiry, ms);
# ARGV: now ms, limit, job id, lease ms. A holder renewing its slot always gets it back.
ACQUIRE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[4]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return 1
end
return 0
"""


def concurrent_limit(api_version: str) -> int:
    return CONCURRENT_LIMIT if api_version >= CONCURRENT_FROM_VERSION else 1


def slots_key(shop: str, kind: str) -> str:
    return f"shopjobs:bulk:slots:{shop}:{kind}"


async def acquire(
    redis: Redis,
    shop: str,
    kind: str,
    limit: int,
    holder: str,
    lease_seconds: float = SLOT_LEASE_SECONDS,
) -> bool:
    """Take (or renew) `holder`'s slot among the shop's `limit` slots of `kind`, for
    `lease_seconds` (a suspended job holds it until it looks again, and some)."""
    now = int(time.time() * 1000)
    # redis-py types each command as "an awaitable or, on the sync client, the answer", and
    # EVAL's arguments as strings (what Redis receives: an int is sent as its digits either way)
    got = await cast(
        "Awaitable[int]",
        redis.eval(
            ACQUIRE_SLOT,
            1,
            slots_key(shop, kind),
            str(now),
            str(limit),
            holder,
            str(int(lease_seconds * 1000)),
        ),
    )
    return bool(got)


async def release(redis: Redis, shop: str, kind: str, holder: str) -> None:
    await redis.zrem(slots_key(shop, kind), holder)


def since_key(operation_id: str) -> str:
    return f"shopjobs:bulk:since:{operation_id}"


async def waiting_since(redis: Redis, operation_id: str) -> float:
    """When a suspended job began waiting for this operation (epoch seconds): its wait limit
    and its polling backoff count from then, across its runs."""
    key = since_key(operation_id)
    await redis.set(key, str(time.time()), nx=True, ex=SINCE_LIFETIME_SECONDS)
    kept = await redis.get(key)
    return float(kept) if kept is not None else time.time()


def subscribed_key(shop: str) -> str:
    return f"shopjobs:bulk:subscribed:{shop}"


async def mark_subscribed(redis: Redis, shop: str) -> None:
    """The shop delivered a `bulk_operations/finish` webhook: it is subscribed, so a job
    waiting for its operations is woken by the webhook and need not poll often."""
    await redis.set(subscribed_key(shop), "1", ex=SUBSCRIBED_LIFETIME_SECONDS)


async def is_subscribed(redis: Redis, shop: str) -> bool:
    return bool(await redis.exists(subscribed_key(shop)))


def finished_key(operation_id: str) -> str:
    """The Redis list the finish webhook pushes to, and a waiting run blocks on."""
    return f"shopjobs:bulk:finished:{operation_id}"


async def signal_finished(redis: Redis, operation_id: str, status: str) -> None:
    """Called by the web for `bulk_operations/finish`: wake the run waiting for it, if any."""
    key = finished_key(operation_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.rpush(key, status)
        pipe.expire(key, SIGNAL_LIFETIME_SECONDS)
        await pipe.execute()


async def wake_or_sleep(redis: Redis, operation_id: str, seconds: float) -> None:
    """Sleep `seconds`, or less when the finish signal of `operation_id` arrives."""
    deadline = time.monotonic() + seconds
    key = finished_key(operation_id)
    while (left := deadline - time.monotonic()) > 0:
        timeout = min(left, SIGNAL_BLOCK_SECONDS)
        popped = cast(  # redis-py: "an awaitable or, on the sync client, the answer"
            "Awaitable[list[bytes] | None]",
            redis.blpop([key], timeout),  # type: ignore[arg-type]  # redis-py 5 hints an int; Redis 6 takes fractions
        )
        if await popped:
            return


# Polls of running operations, for shops whose finish webhook is not known to arrive: checked by
# each worker's poller (jobs/worker/bulk_poller.py) without running the job, so a job waiting on
# Shopify holds no worker slot between its polls. A sorted set: "shop operation-id" -> next poll
# (ms). A worker claims due polls by moving them CLAIM_POLL_SECONDS ahead: if it dies while
# polling, another worker polls them then.
POLLS_KEY = "shopjobs:bulk:polls"
CLAIM_POLL_SECONDS = 30.0

# KEYS[1] the polls; ARGV: now ms, how many at most, claim ms. The due polls, each moved ahead.
CLAIM_POLLS = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[3]), member)
end
return due
"""


async def schedule_poll(redis: Redis, shop: str, operation_id: str, seconds: float) -> None:
    """Have a worker's poller look at `operation_id` in `seconds` (replacing an earlier time)."""
    due = int((time.time() + seconds) * 1000)
    await redis.zadd(POLLS_KEY, {f"{shop} {operation_id}": due})


async def claim_polls(redis: Redis, limit: int) -> list[tuple[str, str]]:
    """Up to `limit` due polls as (shop, operation id), claimed for CLAIM_POLL_SECONDS."""
    now = int(time.time() * 1000)
    due = await cast(
        "Awaitable[list[bytes]]",
        redis.eval(
            CLAIM_POLLS, 1, POLLS_KEY, str(now), str(limit), str(int(CLAIM_POLL_SECONDS * 1000))
        ),
    )
    polls: list[tuple[str, str]] = []
    for member in due:
        text = member.decode() if isinstance(member, bytes) else str(member)
        shop, _, operation_id = text.partition(" ")
        polls.append((shop, operation_id))
    return polls


async def drop_poll(redis: Redis, shop: str, operation_id: str) -> None:
    await redis.zrem(POLLS_KEY, f"{shop} {operation_id}")
