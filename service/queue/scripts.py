"""Every Lua script of the queue, named and loaded in one place.

Each script is one atomic step on the layout described in `service/queue/__init__.py`:
ENQUEUE (a job joins its shop's set), WAKE (a suspended job's entry made due now), TAKE (due
jobs leave for a worker, shop by shop, the per-shop cap held), FINISH (a taken job is done,
due again later, or given back), and the reconciler's REPAIR and PLACE; DEPTH feeds the
gauges. `scripts(redis)` registers them once
per client: a call then sends EVALSHA (the script's text only if Redis lost it).
"""

from __future__ import annotations

from dataclasses import dataclass
from weakref import WeakKeyDictionary

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from service.queue.keys import (
    CAPPED,
    COUNTS,
    DELAYED,
    HELD,
    JOB,
    READY,
    RETRY,
    RUNNING,
    SEQ,
    SHOP_QUEUE_PREFIX,
    TAKEN,
    WAKE_CHANNEL,
)

# Shared by every script: the keys, and the moves that keep a shop in the right place.
# place(): a shop in none of ready/delayed/capped goes where its running count and first job say.
# joined(): a job due at `due` joined a shop's set; a shop already ready or capped stays so.
PRELUDE = f"""
local P = '{SHOP_QUEUE_PREFIX}'
local READY, DELAYED, CAPPED = '{READY}', '{DELAYED}', '{CAPPED}'
local COUNTS, RUNNING, TAKEN, SEQ = '{COUNTS}', '{RUNNING}', '{TAKEN}', '{SEQ}'
local HELD, JOB, RETRY = '{HELD}', '{JOB}', '{RETRY}'
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


# A job joins its shop's set (or the app's bucket), and the shop the rotation if it was in
# none: arq's enqueue_job in one round trip instead of four, with arq's payload, plus a wake-up
# for idle workers. Returns 0 when a job with this id is already queued, running, or has a kept
# result (arq's `_job_id` dedup).
# KEYS: job key, result key, the shop's set. ARGV: job id, payload, score (due, ms), expiry
# (ms), the shop (or APP_BUCKET), now (ms).
ENQUEUE_LUA = (
    PRELUDE
    + f"""
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
joined(ARGV[5], tonumber(ARGV[3]), tonumber(ARGV[6]))
redis.call('PUBLISH', '{WAKE_CHANNEL}', '1')
return 1
"""
)

# A debounced job's entry due at a new time (later, as a burst goes on): its score set in its
# shop's set, the shop placed for that time (an earlier DELAYED score is harmless: the take
# places the shop again when it comes). Returns 0 when the entry is not in its shop's set
# (taken by a worker now, or lost: the caller queues it anew).
# KEYS: the shop's set. ARGV: job id, due (ms), the shop (or APP_BUCKET), now (ms).
RESCHEDULE_LUA = (
    PRELUDE
    + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[1])
joined(ARGV[3], tonumber(ARGV[2]), tonumber(ARGV[4]))
return 1
"""
)

# A suspended job's entry made due now (what it waited for happened): its score lowered to now
# in its shop's set, the shop into the rotation, idle workers woken. Returns 0 when the entry is
# not in its shop's set (taken by a worker now, or lost: the caller queues it anew).
# KEYS: the shop's set. ARGV: job id, now (ms), the shop (or APP_BUCKET).
WAKE_LUA = (
    PRELUDE
    + f"""
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], 'LT', ARGV[2], ARGV[1])
joined(ARGV[3], tonumber(ARGV[2]), tonumber(ARGV[2]))
redis.call('PUBLISH', '{WAKE_CHANNEL}', '1')
return 1
"""
)


@dataclass(frozen=True)
class Scripts:
    """The queue's scripts, registered on one Redis client."""

    enqueue: AsyncScript
    wake: AsyncScript
    reschedule: AsyncScript
    take: AsyncScript
    finish: AsyncScript
    repair: AsyncScript
    place: AsyncScript
    depth: AsyncScript


_registered: WeakKeyDictionary[Redis, Scripts] = WeakKeyDictionary()


def scripts(redis: Redis) -> Scripts:
    """The scripts on this client, registered on first use (hashing each text once)."""
    found = _registered.get(redis)
    if found is None:
        found = _registered[redis] = Scripts(
            enqueue=redis.register_script(ENQUEUE_LUA),
            wake=redis.register_script(WAKE_LUA),
            reschedule=redis.register_script(RESCHEDULE_LUA),
            take=redis.register_script(TAKE_LUA),
            finish=redis.register_script(FINISH_LUA),
            repair=redis.register_script(REPAIR_LUA),
            place=redis.register_script(PLACE_LUA),
            depth=redis.register_script(DEPTH_LUA),
        )
    return found
