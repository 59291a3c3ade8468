"""Each shop's Admin API cost bucket, mirrored in Redis so every worker shares one view.

Shopify gives each app a leaky bucket per shop (`throttleStatus`: maximumAvailable,
currentlyAvailable, restoreRate). Workers that each tracked it alone would together drain it
and collect THROTTLED answers. Here one Redis hash per shop holds the last known level, its
time (Redis' clock) and the bucket's size and rate, and every request first *reserves* its
estimated cost with one atomic script:

- the level is restored for the time elapsed, then the cost is taken, even below zero;
- a non-negative result means "send now"; a deficit means "send after deficit / rate
  seconds", and the reservation already holds the caller's place, so waiters queue in order
  instead of stampeding when points come back.

When an answer arrives, `settle` gives back what the reservation over-estimated (all of it if
nothing was charged: THROTTLED, 429, 5xx, network errors) and never lets the model believe it
has more points than Shopify just reported. Before anything is known about a shop, one
request is let through alone to learn the bucket (a short-lived probe key); the others wait.

The model charges a request when it is reserved, Shopify when it arrives a little later. While
the bucket is full Shopify's level does not grow in between, so the model would run ahead of
it by `restore rate x latency` and the next request at the margin would be throttled. The
model's ceiling is therefore kept LATENCY_ALLOWANCE_SECONDS worth of restoring below the
bucket's size (at most a quarter of it): a few points on Shopify's 1000-point buckets.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

STATE_TTL_MS = 3_600_000  # a shop's state outlives an hour of silence only if refreshed
PROBE_TTL_MS = 30_000  # a probe whose answer never comes (its worker died) stops blocking
LATENCY_ALLOWANCE_SECONDS = 0.1
UNKNOWN = -1.0  # `reserve` answer: someone else is learning this shop's bucket; ask again

RESERVE = """
local state = redis.call('HMGET', KEYS[1], 'available', 'maximum', 'rate', 'at')
if not state[1] then
  if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return '0' end
  return '-1'
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local maximum, rate = tonumber(state[2]), tonumber(state[3])
local ceiling = maximum - math.min(rate * tonumber(ARGV[4]), maximum / 4)
local level = math.min(ceiling, tonumber(state[1]) + (now - tonumber(state[4])) * rate)
level = level - tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'available', tostring(level), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if level >= 0 then return '0' end
return tostring(-level / rate)
"""

SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'available', 'maximum', 'rate', 'at')
local maximum = tonumber(ARGV[3]) or tonumber(state[2])
local rate = tonumber(ARGV[4]) or tonumber(state[3])
local reported = tonumber(ARGV[2])
local level
if state[1] then
  local ceiling = maximum - math.min(rate * tonumber(ARGV[6]), maximum / 4)
  level = math.min(ceiling, tonumber(state[1]) + (now - tonumber(state[4])) * rate)
  level = math.min(ceiling, level + tonumber(ARGV[1]))
  if reported then level = math.min(level, reported) end
elseif reported then
  level = reported
end
if level then
  redis.call('HSET', KEYS[1], 'available', tostring(level), 'maximum', tostring(maximum),
             'rate', tostring(rate), 'at', tostring(now))
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
redis.call('DEL', KEYS[2])
return 1
"""


@dataclass(frozen=True)
class ThrottleStatus:
    maximum: float
    available: float
    restore_rate: float

    @classmethod
    def from_extensions(cls, extensions: Any) -> ThrottleStatus | None:
        """`extensions.cost.throttleStatus` of an Admin GraphQL answer, if it has one."""
        try:
            status = extensions["cost"]["throttleStatus"]
            return cls(
                maximum=float(status["maximumAvailable"]),
                available=float(status["currentlyAvailable"]),
                restore_rate=float(status["restoreRate"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


class CostBuckets:
    """Reserve and settle query cost for any shop, against the state shared in Redis."""

    def __init__(self, redis: Redis, prefix: str = "shopify:bucket:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._reserve = redis.register_script(RESERVE)
        self._settle = redis.register_script(SETTLE)

    def _keys(self, shop: str) -> list[str]:
        return [self._prefix + shop, self._prefix + shop + ":probe"]

    async def reserve(self, shop: str, cost: float) -> float:
        """Seconds to wait before sending (0: now), or UNKNOWN while another request probes."""
        args = [cost, PROBE_TTL_MS, STATE_TTL_MS, LATENCY_ALLOWANCE_SECONDS]
        answer = await self._reserve(keys=self._keys(shop), args=args)
        return float(answer)

    async def settle(self, shop: str, refund: float, status: ThrottleStatus | None) -> None:
        """Give back `refund` points and adopt Shopify's report, if the answer carried one."""
        args: list[Any] = [refund, "", "", "", STATE_TTL_MS, LATENCY_ALLOWANCE_SECONDS]
        if status is not None:
            args[1:4] = [status.available, status.maximum, status.restore_rate]
        await self._settle(keys=self._keys(shop), args=args)

    async def level(self, shop: str) -> dict[str, float] | None:
        """The stored state (for tests and diagnostics)."""
        # redis-py types each command as "an awaitable or, on the sync client, the answer"
        raw = await cast("Awaitable[dict[bytes, bytes]]", self._redis.hgetall(self._prefix + shop))
        if not raw:
            return None
        return {k.decode(): float(v) for k, v in raw.items()}
