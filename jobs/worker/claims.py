"""The Redis side of running a job: taking due jobs off arq's queue, and finishing them.

arq claims one job in four round trips (WATCH, EXISTS + ZSCORE, MULTI/PSETEX, then GET/INCR)
and every worker process races for the same head of the queue, losing most WATCH races under
load. Here one Lua script takes a whole batch of due jobs atomically: for each it checks that no
one holds it, sets arq's in-progress key for one lease, counts the try, and returns the payload.
Keys, payloads and scores stay arq's own, so arq's enqueue, cron and tooling keep working.

That is QUEUE_FAIRNESS=fifo. With `shop` (the default) the take is service/core/fair.py's
script: arq's queue first (cron ticks, entries from before an upgrade), then the shops'
rotation, one shop per slot, with SHOP_CONCURRENCY_LIMIT held across all workers at the take.
In fifo, a per-shop cap pushes back, in the same pass, the jobs of shops at their cap here.
Finishing is batched too (service/core/batch.py): done, run-again-later, or given back; the
one finish script serves both layouts (a job knows which it was taken from).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from arq.constants import in_progress_key_prefix, job_key_prefix
from redis.asyncio import Redis

from service.core import fair
from service.core.batch import GroupCommit
from service.core.fair import QueueFairness
from service.core.states import QueueFinish

# KEYS[1]: the queue. ARGV: now (ms), how many to take, lease (ms), how far to look, the
# per-shop cap (0: none), how far to push back a job of a shop at its cap (ms), then pairs of
# (shop, jobs of it running in this process).
# Returns two lists: id, payload (nil if its key expired), score, per job taken; and the
# function (job type) of each job pushed back.
# No try count: attempts are counted in Postgres (arq's run_job, used for cron, counts its own).
TAKE_LUA = f"""
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[4])
local taken = {{}}
local pushed = {{}}
local wanted = tonumber(ARGV[2])
local cap = tonumber(ARGV[5])
local running = {{}}
for i = 7, #ARGV, 2 do running[ARGV[i]] = tonumber(ARGV[i + 1]) end
for i = 1, #due, 2 do
  local id = due[i]
  local held = '{in_progress_key_prefix}' .. id
  if redis.call('EXISTS', held) == 0 then
    local payload = redis.call('GET', '{job_key_prefix}' .. id)
    local shop = nil
    local fn = nil
    if cap > 0 and payload then
      local ok, job = pcall(cjson.decode, payload)
      if ok and type(job) == 'table' and type(job['a']) == 'table' then
        shop = job['a'][2]
        fn = job['f']
      end
    end
    if shop and (running[shop] or 0) >= cap then
      redis.call('ZADD', KEYS[1], 'XX', tonumber(ARGV[1]) + tonumber(ARGV[6]), id)
      pushed[#pushed + 1] = tostring(fn)
    else
      if shop then running[shop] = (running[shop] or 0) + 1 end
      redis.call('SET', held, '1', 'PX', ARGV[3])
      taken[#taken + 1] = id
      taken[#taken + 1] = payload
      taken[#taken + 1] = due[i + 1]
      wanted = wanted - 1
      if wanted == 0 then break end
    end
  end
end
return {{taken, pushed}}
"""


@dataclass(frozen=True)
class Taken:
    job_id: str
    payload: bytes | None
    score: int


SHOP_BUSY_PUSH_BACK_MS = 500
# Lapsed leases to look at, and delayed shops to bring into the rotation, per take at most.
CHORES_PER_TAKE = 32


@dataclass(frozen=True)
class Finish:
    job_id: str
    how: QueueFinish
    run_at_ms: int = 0


def later(job_id: str, seconds: float) -> Finish:
    """Finish a queue entry by putting it back, due `seconds` from now."""
    return Finish(job_id, QueueFinish.LATER, int((time.time() + seconds) * 1000))


class QueueClaims:
    def __init__(
        self,
        redis: Redis,
        queue_name: str,
        on_push_back: Callable[[str], None] | None = None,
        *,
        fairness: QueueFairness = QueueFairness.SHOP,
        shop_cap: int = 0,
    ) -> None:
        """`on_push_back(job_type)` hears of each job pushed back for its shop's cap (fifo)."""
        self.redis = redis
        self.queue_name = queue_name
        self.on_push_back = on_push_back
        self.fairness = fairness
        self.shop_cap = shop_cap
        self._take = redis.register_script(TAKE_LUA)
        self._fair_take = redis.register_script(fair.TAKE_LUA)
        self._finish = redis.register_script(fair.FINISH_LUA)
        self._finishes: GroupCommit[Finish, None] = GroupCommit(self._finish_batch)

    async def take(
        self,
        count: int,
        lease_ms: int,
        now_ms: int,
        look_ahead: int,
        running_by_shop: Mapping[str, int] | None = None,
    ) -> list[Taken]:
        """Take up to `count` due jobs, in one round trip.

        Fair: shop by shop, a shop at its cap skipped until one of its jobs finishes. FIFO: a
        job of a shop that already runs `shop_cap` jobs here (`running_by_shop`) is pushed back
        by SHOP_BUSY_PUSH_BACK_MS instead, in the same pass.
        """
        if self.fairness == QueueFairness.SHOP:
            flat = await self._fair_take(
                keys=[self.queue_name],
                args=[now_ms, count, lease_ms, look_ahead, self.shop_cap, CHORES_PER_TAKE],
            )
        else:
            running = [str(v) for pair in (running_by_shop or {}).items() for v in pair]
            flat, pushed = await self._take(
                keys=[self.queue_name],
                args=[
                    now_ms, count, lease_ms, look_ahead, self.shop_cap, SHOP_BUSY_PUSH_BACK_MS,
                    *running,
                ],
            )  # fmt: skip
            if self.on_push_back is not None:
                for job_type in pushed:
                    self.on_push_back(job_type.decode())
        return [
            Taken(
                job_id=flat[i].decode(),
                payload=flat[i + 1],
                score=int(float(flat[i + 2])),
            )
            for i in range(0, len(flat), 3)
        ]

    async def finish(self, finish: Finish) -> None:
        await self._finishes.submit(finish)

    async def _finish_batch(self, finishes: list[Finish]) -> list[None]:
        args: list[str | int] = [int(time.time() * 1000), self.shop_cap]
        for f in finishes:
            args += [f.job_id, f.how.value, f.run_at_ms]
        await self._finish(keys=[self.queue_name], args=args)
        return [None] * len(finishes)
