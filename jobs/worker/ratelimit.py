"""The global rate limiter: at most MAX job starts in any WINDOW seconds, across all workers.

A sliding log in one Redis sorted set per scope, checked and updated by one Lua script, so the
check is atomic across worker processes and uses Redis' clock, not each machine's. A fixed
window would let 2 x MAX starts through across a window boundary; a sliding log cannot.
"""

from __future__ import annotations

import uuid

from redis.asyncio import Redis

KEY_PREFIX = "shopjobs:ratelimit:"

# KEYS[1]: the scope's log. ARGV: max starts, window in ms, a unique member for this start.
# Returns 0 when the start is admitted, else the milliseconds until a slot frees up.
ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""


class RateLimiter:
    def __init__(self, redis: Redis, limit: int, window_seconds: float) -> None:
        self.limit = limit
        self.window_ms = int(window_seconds * 1000)
        self._acquire = redis.register_script(ACQUIRE_LUA)

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    async def acquire(self, scope: str = "global") -> float:
        """Record a start and return 0 if allowed, else the seconds to wait (nothing recorded)."""
        if not self.enabled:
            return 0.0
        member = uuid.uuid4().hex
        wait_ms = await self._acquire(
            keys=[KEY_PREFIX + scope], args=[self.limit, self.window_ms, member]
        )
        return int(wait_ms) / 1000
