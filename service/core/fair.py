"""Fair scheduling across shops: the Redis layout and the Lua that keeps it, in one place.

One shop's bulk run must not hold every other shop back. With QUEUE_FAIRNESS=shop (the default)
a job is not queued on arq's one sorted set but on its shop's own, and workers take jobs shop
by shop, round-robin, as BullMQ Pro does with groups:

- `arq:fair:shop:{shop}`: the shop's jobs, scored by when they are due (ms), so within a shop
  jobs run in due order (retries and delays respected). Jobs without a shop share APP_BUCKET.
- `arq:fair:ready`: the shops with a due job, scored by a turn number (`arq:fair:seq`); the
  take pops the lowest and, if the shop still has a due job, puts it back with a new turn: at
  the back of the rotation. A shop alone in it comes round again at once and fills every slot.
- `arq:fair:delayed`: shops whose first job is due later, scored by when; the take moves the
  ones now due into the rotation.
- `arq:fair:capped`: shops running SHOP_CONCURRENCY_LIMIT jobs already (`arq:fair:counts`,
  across every worker process); out of the rotation until one of their jobs finishes.
- `arq:fair:running` (job id -> lease deadline) and `arq:fair:taken` (job id -> "due shop"): a
  taken job leaves its shop's set; if its worker dies, the take finds its lease lapsed (arq's
  in-progress key gone) and puts it back where it was.

Every step is a sorted-set or hash operation on one shop or one job: taking or finishing a job
costs O(log n), whatever the size of any shop's backlog. A shop is in at most one of ready,
delayed and capped; the scripts below keep that, atomically.
"""

from __future__ import annotations

from enum import StrEnum

from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from redis.asyncio import Redis


class QueueFairness(StrEnum):
    """QUEUE_FAIRNESS: how workers choose among due jobs."""

    SHOP = "shop"  # round-robin by shop (this module)
    FIFO = "fifo"  # arq's one queue, in due order


SHOP_QUEUE_PREFIX = "arq:fair:shop:"
READY = "arq:fair:ready"
DELAYED = "arq:fair:delayed"
CAPPED = "arq:fair:capped"
COUNTS = "arq:fair:counts"
RUNNING = "arq:fair:running"
TAKEN = "arq:fair:taken"
SEQ = "arq:fair:seq"
# The bucket of jobs that belong to no shop (the app's own): one more turn in the rotation.
APP_BUCKET = "*app*"


def shop_queue(shop: str | None) -> str:
    return SHOP_QUEUE_PREFIX + (shop or APP_BUCKET)


# Shared by every script: the keys, and the moves that keep a shop in the right place.
# place(): a shop in none of ready/delayed/capped goes where its running count and first job say.
# joined(): a job due at `due` joined a shop's set; a shop already ready or capped stays so.
PRELUDE = f"""
local P = '{SHOP_QUEUE_PREFIX}'
local READY, DELAYED, CAPPED = '{READY}', '{DELAYED}', '{CAPPED}'
local COUNTS, RUNNING, TAKEN, SEQ = '{COUNTS}', '{RUNNING}', '{TAKEN}', '{SEQ}'
local HELD, JOB, RETRY = '{in_progress_key_prefix}', '{job_key_prefix}', '{retry_key_prefix}'
local function running(shop) return tonumber(redis.call('HGET', COUNTS, shop) or '0') end
local function place(shop, now, cap)
  if cap > 0 and running(shop) >= cap then
    redis.call('SADD', CAPPED, shop)
    return
  end
  local head = redis.call('ZRANGE', P .. shop, 0, 0, 'WITHSCORES')
  if #head == 0 then return end
  if tonumber(head[2]) <= now then
    redis.call('ZADD', READY, redis.call('INCR', SEQ), shop)
  else
    redis.call('ZADD', DELAYED, head[2], shop)
  end
end
local function joined(shop, due, now)
  if redis.call('ZSCORE', READY, shop) or redis.call('SISMEMBER', CAPPED, shop) == 1 then
    return
  end
  if due <= now then
    redis.call('ZREM', DELAYED, shop)
    redis.call('ZADD', READY, redis.call('INCR', SEQ), shop)
  else
    redis.call('ZADD', DELAYED, 'LT', due, shop)
  end
end
"""

# A taken job's end: out of running, its shop's count down, then done (keys deleted), later
# (back in its shop's set, due at run_at) or given back (due when it was). False if the job was
# not taken from a shop's set (arq's queue: fifo, cron, entries from before an upgrade).
RELEASE = """
local function release(id, how, run_at, now, cap)
  local info = redis.call('HGET', TAKEN, id)
  if not info then return false end
  redis.call('HDEL', TAKEN, id)
  redis.call('ZREM', RUNNING, id)
  local space = string.find(info, ' ', 1, true)
  local score, shop = tonumber(string.sub(info, 1, space - 1)), string.sub(info, space + 1)
  if redis.call('HINCRBY', COUNTS, shop, -1) <= 0 then redis.call('HDEL', COUNTS, shop) end
  local due = nil
  if how == 'done' then
    redis.call('DEL', JOB .. id, RETRY .. id, HELD .. id)
  else
    if how == 'later' then due = tonumber(run_at) else due = score end
    redis.call('ZADD', P .. shop, due, id)
    redis.call('DEL', HELD .. id)
  end
  if redis.call('SREM', CAPPED, shop) == 1 then
    place(shop, now, cap)
  elseif due then
    joined(shop, due, now)
  end
  return true
end
"""

# KEYS[1]: arq's queue. ARGV: now (ms), how many to take, lease (ms), how far to look in arq's
# queue, the per-shop cap (0: none), how many lapsed leases and due delayed shops to handle.
# Returns id, payload (nil if its key expired), score, per job taken.
# arq's queue first (cron ticks, and entries queued before an upgrade, in due order), then the
# rotation: per slot, the next ready shop's first due job. Lapsed leases and delayed shops are
# handled a bounded number per take, so no take's cost grows with what waits.
TAKE_LUA = (
    PRELUDE
    + RELEASE
    + """
local now, wanted = tonumber(ARGV[1]), tonumber(ARGV[2])
local lease, cap, chores = tonumber(ARGV[3]), tonumber(ARGV[5]), tonumber(ARGV[6])
local taken = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', RUNNING, '-inf', now, 'LIMIT', 0, chores)) do
  local left = redis.call('PTTL', HELD .. id)
  if left > 0 then
    redis.call('ZADD', RUNNING, 'XX', now + left, id)
  else
    release(id, 'give_back', 0, now, cap)
  end
end
for _, shop in ipairs(redis.call('ZRANGEBYSCORE', DELAYED, '-inf', now, 'LIMIT', 0, chores)) do
  redis.call('ZREM', DELAYED, shop)
  place(shop, now, cap)
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, ARGV[4])
for i = 1, #due, 2 do
  if wanted == 0 then break end
  local id = due[i]
  if redis.call('EXISTS', HELD .. id) == 0 then
    redis.call('SET', HELD .. id, '1', 'PX', lease)
    taken[#taken + 1] = id
    taken[#taken + 1] = redis.call('GET', JOB .. id)
    taken[#taken + 1] = due[i + 1]
    wanted = wanted - 1
  end
end
local visits = wanted + 100
while wanted > 0 and visits > 0 do
  visits = visits - 1
  local top = redis.call('ZPOPMIN', READY)
  if #top == 0 then break end
  local shop = top[1]
  if cap > 0 and running(shop) >= cap then
    redis.call('SADD', CAPPED, shop)
  else
    -- One job per turn; with no other shop waiting, as many as there are slots (the same
    -- order a turn at a time would give, in one step).
    local n = 1
    if redis.call('ZCARD', READY) == 0 then n = wanted end
    if cap > 0 then n = math.min(n, cap - running(shop)) end
    local popped = redis.call('ZPOPMIN', P .. shop, n)
    local took = 0
    for i = 1, #popped, 2 do
      local id, score = popped[i], popped[i + 1]
      if tonumber(score) > now then
        redis.call('ZADD', P .. shop, score, id)
      elseif redis.call('EXISTS', HELD .. id) == 0 then
        redis.call('SET', HELD .. id, '1', 'PX', lease)
        redis.call('ZADD', RUNNING, now + lease, id)
        redis.call('HSET', TAKEN, id, score .. ' ' .. shop)
        taken[#taken + 1] = id
        taken[#taken + 1] = redis.call('GET', JOB .. id)
        taken[#taken + 1] = score
        took = took + 1
      end
    end
    if took > 0 then redis.call('HINCRBY', COUNTS, shop, took) end
    wanted = wanted - took
    if #popped > 0 then place(shop, now, cap) end
  end
end
return taken
"""
)

# KEYS[1]: arq's queue. ARGV: now (ms), the per-shop cap, then (job id, how, run_at ms) per job.
FINISH_LUA = (
    PRELUDE
    + RELEASE
    + """
local now, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 3, #ARGV, 3 do
  local id, how, run_at = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if not release(id, how, run_at, now, cap) then
    if how == 'done' then
      redis.call('ZREM', KEYS[1], id)
      redis.call('DEL', JOB .. id, RETRY .. id, HELD .. id)
    elseif how == 'later' then
      redis.call('ZADD', KEYS[1], 'XX', run_at, id)
      redis.call('DEL', HELD .. id)
    else
      redis.call('DEL', HELD .. id)
    end
  end
end
return 0
"""
)

# The running counts rebuilt from the taken jobs themselves, and capped shops now under the cap
# put back (the reconciler's tick: whatever Redis lost or a script never finished, it heals).
# ARGV: now (ms), the per-shop cap. Returns how many counts were wrong.
REPAIR_LUA = (
    PRELUDE
    + """
local now, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local counts = {}
local taken = redis.call('HGETALL', TAKEN)
for i = 2, #taken, 2 do
  local shop = string.sub(taken[i], string.find(taken[i], ' ', 1, true) + 1)
  counts[shop] = (counts[shop] or 0) + 1
end
local wrong, seen = 0, {}
local stored = redis.call('HGETALL', COUNTS)
for i = 1, #stored, 2 do
  seen[stored[i]] = true
  if counts[stored[i]] ~= tonumber(stored[i + 1]) then wrong = wrong + 1 end
end
for shop, _ in pairs(counts) do
  if not seen[shop] then wrong = wrong + 1 end
end
if wrong > 0 then
  redis.call('DEL', COUNTS)
  for shop, n in pairs(counts) do redis.call('HSET', COUNTS, shop, n) end
end
for _, shop in ipairs(redis.call('SMEMBERS', CAPPED)) do
  if cap == 0 or (counts[shop] or 0) < cap then
    redis.call('SREM', CAPPED, shop)
    place(shop, now, cap)
  end
end
return wrong
"""
)

# Shops with a job waiting in their set, put back in the rotation (or delayed, or capped) if a
# script cut short (Redis out of memory, say) left them in none. ARGV: now (ms), the cap, then
# the shops. Returns how many were out of place.
PLACE_LUA = (
    PRELUDE
    + """
local now, cap, placed = tonumber(ARGV[1]), tonumber(ARGV[2]), 0
for i = 3, #ARGV do
  local shop = ARGV[i]
  if not redis.call('ZSCORE', READY, shop) and not redis.call('ZSCORE', DELAYED, shop)
     and redis.call('SISMEMBER', CAPPED, shop) == 0 then
    place(shop, now, cap)
    placed = placed + 1
  end
end
return placed
"""
)

# KEYS[1]: arq's queue. ARGV: now (ms). Returns {entries, due}: arq's queue plus every shop's
# set plus the jobs taken and running (arq's queue keeps those too), as the depth gauges count.
DEPTH_LUA = (
    PRELUDE
    + """
local now = ARGV[1]
local total = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', RUNNING)
local due = redis.call('ZCOUNT', KEYS[1], '-inf', now) + redis.call('ZCARD', RUNNING)
local function add(shop)
  total = total + redis.call('ZCARD', P .. shop)
  due = due + redis.call('ZCOUNT', P .. shop, '-inf', now)
end
for _, shop in ipairs(redis.call('ZRANGE', READY, 0, -1)) do add(shop) end
for _, shop in ipairs(redis.call('ZRANGE', DELAYED, 0, -1)) do add(shop) end
for _, shop in ipairs(redis.call('SMEMBERS', CAPPED)) do add(shop) end
return {total, due}
"""
)


async def depth(redis: Redis, queue_name: str, now_ms: int) -> tuple[int, int]:
    """(entries, due now) over arq's queue and every shop's set, running jobs included."""
    total, due = await redis.register_script(DEPTH_LUA)(keys=[queue_name], args=[now_ms])
    return int(total), int(due)


async def place_shops(redis: Redis, shops: set[str], now_ms: int, shop_cap: int) -> int:
    """Make sure these shops, whose sets hold waiting jobs, are where the take will find them;
    how many were not."""
    if not shops:
        return 0
    script = redis.register_script(PLACE_LUA)
    return int(await script(args=[now_ms, shop_cap, *sorted(shops)]))


async def repair(redis: Redis, now_ms: int, shop_cap: int) -> int:
    """Rebuild the per-shop running counts from the taken jobs; how many were wrong."""
    return int(await redis.register_script(REPAIR_LUA)(args=[now_ms, shop_cap]))
