"""Rate limiters: at most MAX job starts in any WINDOW seconds, across all workers; the global
one (RATE_LIMIT_MAX per RATE_LIMIT_WINDOW_SECONDS), and a job type's own (`JobType.rate_limit`,
for the type, or for each shop with `per_shop`), checked together.

A sliding log in one Redis sorted set per scope, checked and updated by one Lua script, so the
check is atomic across worker processes and uses Redis' clock, not each machine's. A fixed
window would let 2 x MAX starts through across a window boundary; a sliding log cannot. A
start that several limits govern is checked against all of them in one script and recorded
in all or none, so a start one limit refuses uses up no slot of another.
"""

from __future__ import annotations

import uuid

from redis.asyncio import Redis

KEY_PREFIX = "shopjobs:ratelimit:"

# KEYS: one log per limit. ARGV: per key, max starts and window in ms; then a unique member
# for this start. Returns 0 when the start is admitted (recorded in every log), else the
# milliseconds until every refusing log has a slot free (nothing recorded).
ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member = ARGV[#ARGV]
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i - 1])
  local window = tonumber(ARGV[2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= limit then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    wait = math.max(wait, 1, tonumber(oldest[2]) + window - now)
  end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, tonumber(ARGV[2 * i]))
end
return 0
"""


class RateLimiter:
    def __init__(self, redis: Redis, limit: int, window_seconds: float) -> None:
        self.limit = limit
        self.window_ms = int(window_seconds * 1000)
        self._acquire = redis.register_script(ACQUIRE_LUA)

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    async def acquire(
        self, scope: str = "global", extra: tuple[tuple[str, int, float], ...] = ()
    ) -> float:
        """Record a start and return 0 if allowed, else the seconds to wait (nothing recorded).

        `extra`: more limits the start must fit, (scope, max, window seconds) each: a job
        type's own (see `type_scope`)."""
        keys: list[str] = []
        args: list[int | str] = []
        if self.enabled:
            keys.append(KEY_PREFIX + scope)
            args += [self.limit, self.window_ms]
        for name, limit, window in extra:
            keys.append(KEY_PREFIX + name)
            args += [limit, int(window * 1000)]
        if not keys:
            return 0.0
        args.append(uuid.uuid4().hex)
        wait_ms = await self._acquire(keys=keys, args=args)
        return int(wait_ms) / 1000


def type_scope(job_type: str, shop: str | None) -> str:
    """The log of a job type's own limit: the type's, or one shop's of it (`per_shop`)."""
    return f"type:{job_type}" if shop is None else f"type:{job_type}:shop:{shop}"
