"""Every Lua script of the queue, named and loaded in one place.

Each script is one atomic step on the layout described in `service/queue/__init__.py`:
ENQUEUE (a job joins its shop), WAKE (a suspended job's entry made due now), TAKE (due jobs
leave for a worker, shop by shop, highest priority first, the shop, type and key caps held),
FINISH (a taken job is done, due again later, or given back), PAUSE and RESUME (a shop out of
the rotation and back), and the reconciler's REPAIR and PLACE; DEPTH feeds the gauges.
`scripts(redis)` registers them once per client: a call then sends EVALSHA (the script's text
only if Redis lost it).

Caps (per-type and per-key concurrency) reach TAKE, FINISH and REPAIR as two arguments, each
"name=limit" pairs joined by commas: the types' caps ("echo=3") and the key caps of the types
that have a concurrency key ("sync_product=1").
"""

from __future__ import annotations

from dataclasses import dataclass
from weakref import WeakKeyDictionary

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from service.queue.keys import (
    BAND,
    BLOCKED_PREFIX,
    BLOCKED_SHOP,
    BLOCKING,
    CAP_COUNTS,
    CAPPED,
    COUNTS,
    DELAYED,
    HELD,
    JOB,
    JOB_KEY,
    LATER_PREFIX,
    PAUSED,
    RANK_BAND,
    READY,
    RETRY,
    RUNNING,
    SEQ,
    SHOP_QUEUE_PREFIX,
    TAKEN,
    WAKE_CHANNEL,
)

# Shared by every script: the keys, ranks, and the moves that keep a shop in the right place.
# place(): a shop in none of ready/delayed/capped goes where its pause, running count and jobs
#   say.
# joined(): a job due at `due` joined a shop; a shop already ready, capped or paused stays so.
# ripen(): a shop's jobs now due move from its later set into its ranked set.
# put(): a job back into its shop's sets, ranked if due, else later (its band kept).
PRELUDE = f"""
local P, L = '{SHOP_QUEUE_PREFIX}', '{LATER_PREFIX}'
local READY, DELAYED, CAPPED, PAUSED = '{READY}', '{DELAYED}', '{CAPPED}', '{PAUSED}'
local COUNTS, RUNNING, TAKEN, SEQ = '{COUNTS}', '{RUNNING}', '{TAKEN}', '{SEQ}'
local BAND, CAPCOUNTS, BLOCKED = '{BAND}', '{CAP_COUNTS}', '{BLOCKED_PREFIX}'
local BLOCKEDSHOP, BLOCKING, JOBKEY = '{BLOCKED_SHOP}', '{BLOCKING}', '{JOB_KEY}'
local HELD, JOB, RETRY = '{HELD}', '{JOB}', '{RETRY}'
local UNIT, DEFAULT_BAND = {RANK_BAND}, 0
local function rank(band, due) return band * UNIT + due end
local function band_of(r) return math.floor(r / UNIT) end
local function due_of(r) return r - math.floor(r / UNIT) * UNIT end
local function running(shop) return tonumber(redis.call('HGET', COUNTS, shop) or '0') end
local function ripen(shop, now, n)
  local due = redis.call('ZRANGEBYSCORE', L .. shop, '-inf', now, 'WITHSCORES', 'LIMIT', 0, n)
  for i = 1, #due, 2 do
    local id = due[i]
    local band = tonumber(redis.call('HGET', BAND, id) or DEFAULT_BAND)
    redis.call('HDEL', BAND, id)
    redis.call('ZREM', L .. shop, id)
    redis.call('ZADD', P .. shop, rank(band, tonumber(due[i + 1])), id)
  end
end
local function place(shop, now, cap)
  if redis.call('SISMEMBER', PAUSED, shop) == 1 then return end
  if cap > 0 and running(shop) >= cap then
    redis.call('SADD', CAPPED, shop)
    return
  end
  if redis.call('ZCARD', P .. shop) > 0 then
    redis.call('ZADD', READY, redis.call('INCR', SEQ), shop)
    return
  end
  local head = redis.call('ZRANGE', L .. shop, 0, 0, 'WITHSCORES')
  if #head == 0 then return end
  if tonumber(head[2]) <= now then
    redis.call('ZADD', READY, redis.call('INCR', SEQ), shop)
  else
    redis.call('ZADD', DELAYED, head[2], shop)
  end
end
local function joined(shop, due, now)
  if redis.call('SISMEMBER', PAUSED, shop) == 1 then return end
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
local function put(shop, id, band, due, now)
  if due <= now then
    redis.call('ZADD', P .. shop, rank(band, due), id)
  else
    redis.call('ZADD', L .. shop, due, id)
    if band ~= DEFAULT_BAND then redis.call('HSET', BAND, id, band) end
  end
end
local function parse_caps(text)
  local caps = {{}}
  for name, limit in string.gmatch(text or '', '([^=,]+)=(%d+)') do caps[name] = tonumber(limit) end
  return caps
end
-- The caps a job counts toward: {{name, limit, flag}} for its type's cap ('t') and its key's
-- ('k'); only types with a cap cost a lookup.
local function caps_of(id, shop, jtype, tcaps, kcaps)
  local found = {{}}
  if jtype and tcaps[jtype] then found[#found + 1] = {{'t:' .. jtype, tcaps[jtype], 't'}} end
  if jtype and kcaps[jtype] then
    local key = redis.call('HGET', JOBKEY, id)
    if key then
      found[#found + 1] = {{'k:' .. shop .. '|' .. jtype .. '|' .. key, kcaps[jtype], 'k'}}
    end
  end
  return found
end
-- A taken job's record: "rank shop type flags", flags the caps it counts toward ('t', 'k',
-- '-' for none), and " !" once a wake came while it ran (its finish makes it due now). A
-- record of the previous release is "score shop".
local function parse_taken(info)
  local woken = string.sub(info, -2) == ' !'
  if woken then info = string.sub(info, 1, -3) end
  local r, shop, jtype, flags = string.match(info, '^(%S+) (%S+) ?(%S*) ?(%S*)$')
  return tonumber(r), shop, jtype or '', flags or '', woken
end
-- The cap names a taken job counts toward, from its record's flags.
local function taken_caps(id, shop, jtype, flags)
  local names = {{}}
  if string.find(flags, 't', 1, true) then names[#names + 1] = 't:' .. jtype end
  if string.find(flags, 'k', 1, true) then
    local key = redis.call('HGET', JOBKEY, id)
    if key then names[#names + 1] = 'k:' .. shop .. '|' .. jtype .. '|' .. key end
  end
  return names
end
local function cap_running(name) return tonumber(redis.call('HGET', CAPCOUNTS, name) or '0') end
-- One job the cap held back goes back to its shop, due now (its rank kept).
local function unblock(name, now)
  local head = redis.call('ZPOPMIN', BLOCKED .. name)
  if #head == 0 then
    redis.call('SREM', BLOCKING, name)
    return false
  end
  local id, r = head[1], tonumber(head[2])
  local shop = redis.call('HGET', BLOCKEDSHOP, id)
  redis.call('HDEL', BLOCKEDSHOP, id)
  if redis.call('ZCARD', BLOCKED .. name) == 0 then redis.call('SREM', BLOCKING, name) end
  if shop then
    redis.call('ZADD', P .. shop, r, id)
    joined(shop, now, now)
  end
  return true
end
"""

# A taken job's end: out of running, its shop's and caps' counts down (a job one of those caps
# held back goes back to its shop), then done (keys deleted), later (back to its shop, due at
# run_at, its priority kept) or given back (where it was). False if the job was not taken from
# a shop (arq's queue: cron, entries from before an upgrade).
RELEASE = """
local function release(id, how, run_at, now, cap)
  local info = redis.call('HGET', TAKEN, id)
  if not info then return false end
  redis.call('HDEL', TAKEN, id)
  redis.call('ZREM', RUNNING, id)
  local r, shop, jtype, flags, woken = parse_taken(info)
  if redis.call('HINCRBY', COUNTS, shop, -1) <= 0 then redis.call('HDEL', COUNTS, shop) end
  for _, name in ipairs(taken_caps(id, shop, jtype, flags)) do
    if redis.call('HEXISTS', CAPCOUNTS, name) == 1
       and redis.call('HINCRBY', CAPCOUNTS, name, -1) <= 0 then
      redis.call('HDEL', CAPCOUNTS, name)
    end
    unblock(name, now)
  end
  local due = nil
  if how == 'done' then
    redis.call('DEL', JOB .. id, RETRY .. id, HELD .. id)
    if string.find(flags, 'k', 1, true) then redis.call('HDEL', JOBKEY, id) end
  else
    if how == 'later' then due = tonumber(run_at) else due = math.min(due_of(r), now) end
    if woken then due = math.min(due, now) end
    put(shop, id, band_of(r), due, now)
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
# queue, the per-shop cap (0: none), how many lapsed leases and due delayed shops to handle,
# the types' caps, the key caps.
# Returns id, payload (nil if its key expired), due (ms), per job taken.
# arq's queue first (cron ticks, and entries queued before an upgrade, in due order), then the
# rotation: per slot, the next ready shop's highest ranked due job. A job whose type or key is
# at its cap is held back (out of its shop) until one of that cap's jobs ends. Lapsed leases
# and delayed shops are handled a bounded number per take, so no take's cost grows with what
# waits.
TAKE_LUA = (
    PRELUDE
    + RELEASE
    + """
local now, wanted = tonumber(ARGV[1]), tonumber(ARGV[2])
local lease, cap, chores = tonumber(ARGV[3]), tonumber(ARGV[5]), tonumber(ARGV[6])
local tcaps, kcaps = parse_caps(ARGV[7]), parse_caps(ARGV[8])
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
  if redis.call('SISMEMBER', PAUSED, shop) == 1 then
    -- Paused: out of the rotation until resumed (RESUME puts it back).
  elseif cap > 0 and running(shop) >= cap then
    redis.call('SADD', CAPPED, shop)
  else
    -- One job per turn; with no other shop waiting, as many as there are slots (the same
    -- order a turn at a time would give, in one step).
    local n = 1
    if redis.call('ZCARD', READY) == 0 then n = wanted end
    if cap > 0 then n = math.min(n, cap - running(shop)) end
    ripen(shop, now, n + 8)
    local popped = redis.call('ZPOPMIN', P .. shop, n)
    local took = 0
    for i = 1, #popped, 2 do
      local id, r = popped[i], tonumber(popped[i + 1])
      local jdue = due_of(r)
      if jdue > now then
        -- Ranked but not due (an entry from before ranks was scored by when it is due).
        put(shop, id, band_of(r), jdue, now)
      elseif redis.call('EXISTS', HELD .. id) == 0 then
        local payload = redis.call('GET', JOB .. id)
        local jtype = payload and string.match(payload, '"f":"([^"]*)"')
        local blocked = nil
        local caps = caps_of(id, shop, jtype, tcaps, kcaps)
        for _, c in ipairs(caps) do
          if cap_running(c[1]) >= c[2] then blocked = c[1] break end
        end
        if blocked then
          redis.call('ZADD', BLOCKED .. blocked, r, id)
          redis.call('HSET', BLOCKEDSHOP, id, shop)
          redis.call('SADD', BLOCKING, blocked)
        else
          local flags = ''
          for _, c in ipairs(caps) do
            redis.call('HINCRBY', CAPCOUNTS, c[1], 1)
            flags = flags .. c[3]
          end
          if flags == '' then flags = '-' end
          redis.call('SET', HELD .. id, '1', 'PX', lease)
          redis.call('ZADD', RUNNING, now + lease, id)
          redis.call('HSET', TAKEN, id, r .. ' ' .. shop .. ' ' .. (jtype or '') .. ' ' .. flags)
          taken[#taken + 1] = id
          taken[#taken + 1] = payload
          taken[#taken + 1] = jdue
          took = took + 1
        end
      end
    end
    if took > 0 then redis.call('HINCRBY', COUNTS, shop, took) end
    wanted = wanted - took
    place(shop, now, cap)
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

# The running counts (shops' and caps') rebuilt from the taken jobs themselves; capped shops
# now under the cap put back, and jobs held back by a cap now under its limit released (the
# reconciler's tick: whatever Redis lost or a script never finished, it heals).
# ARGV: now (ms), the per-shop cap, the types' caps, the key caps. Returns how many counts were
# wrong.
REPAIR_LUA = (
    PRELUDE
    + """
local now, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local tcaps, kcaps = parse_caps(ARGV[3]), parse_caps(ARGV[4])
local counts, capcounts = {}, {}
local taken = redis.call('HGETALL', TAKEN)
for i = 1, #taken, 2 do
  local _, shop, jtype, flags = parse_taken(taken[i + 1])
  counts[shop] = (counts[shop] or 0) + 1
  for _, name in ipairs(taken_caps(taken[i], shop, jtype, flags)) do
    capcounts[name] = (capcounts[name] or 0) + 1
  end
end
local wrong = 0
local function rebuild(hash, truth)
  local seen, bad = {}, 0
  local stored = redis.call('HGETALL', hash)
  for i = 1, #stored, 2 do
    seen[stored[i]] = true
    if truth[stored[i]] ~= tonumber(stored[i + 1]) then bad = bad + 1 end
  end
  for name, _ in pairs(truth) do
    if not seen[name] then bad = bad + 1 end
  end
  if bad > 0 then
    redis.call('DEL', hash)
    for name, n in pairs(truth) do redis.call('HSET', hash, name, n) end
  end
  return bad
end
wrong = rebuild(COUNTS, counts) + rebuild(CAPCOUNTS, capcounts)
for _, shop in ipairs(redis.call('SMEMBERS', CAPPED)) do
  if cap == 0 or (counts[shop] or 0) < cap then
    redis.call('SREM', CAPPED, shop)
    place(shop, now, cap)
  end
end
for _, name in ipairs(redis.call('SMEMBERS', BLOCKING)) do
  local limit = nil
  if string.sub(name, 1, 2) == 't:' then
    limit = tcaps[string.sub(name, 3)]
  else
    limit = kcaps[string.match(name, '^k:[^|]*|([^|]*)|')] or 1
  end
  -- A cap no longer configured holds nothing back.
  local room = redis.call('ZCARD', BLOCKED .. name)
  if limit then room = limit - cap_running(name) end
  while room > 0 and unblock(name, now) do room = room - 1 end
end
return wrong
"""
)

# Shops with a job waiting in their sets, put back in the rotation (or delayed, or capped) if a
# script cut short (Redis out of memory, say) left them in none. ARGV: now (ms), the cap, then
# the shops. Returns how many were out of place.
PLACE_LUA = (
    PRELUDE
    + """
local now, cap, placed = tonumber(ARGV[1]), tonumber(ARGV[2]), 0
for i = 3, #ARGV do
  local shop = ARGV[i]
  if not redis.call('ZSCORE', READY, shop) and not redis.call('ZSCORE', DELAYED, shop)
     and redis.call('SISMEMBER', CAPPED, shop) == 0
     and redis.call('SISMEMBER', PAUSED, shop) == 0 then
    place(shop, now, cap)
    placed = placed + 1
  end
end
return placed
"""
)

# KEYS[1]: arq's queue. ARGV: now (ms). Returns {entries, due}: arq's queue plus every shop's
# sets (paused shops' too) plus the jobs caps hold back plus the jobs taken and running (arq's
# queue keeps those too), as the depth gauges count.
DEPTH_LUA = (
    PRELUDE
    + """
local now = ARGV[1]
local total = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', RUNNING)
local due = redis.call('ZCOUNT', KEYS[1], '-inf', now) + redis.call('ZCARD', RUNNING)
local function add(shop)
  local ranked = redis.call('ZCARD', P .. shop)
  total = total + ranked + redis.call('ZCARD', L .. shop)
  due = due + ranked + redis.call('ZCOUNT', L .. shop, '-inf', now)
end
for _, shop in ipairs(redis.call('ZRANGE', READY, 0, -1)) do add(shop) end
for _, shop in ipairs(redis.call('ZRANGE', DELAYED, 0, -1)) do add(shop) end
for _, shop in ipairs(redis.call('SMEMBERS', CAPPED)) do add(shop) end
for _, shop in ipairs(redis.call('SMEMBERS', PAUSED)) do add(shop) end
for _, name in ipairs(redis.call('SMEMBERS', BLOCKING)) do
  local held = redis.call('ZCARD', BLOCKED .. name)
  total, due = total + held, due + held
end
return {total, due}
"""
)

# A job joins its shop: ranked if due now, else on its later set; the shop joins the rotation
# if it was in none (and is not paused). arq's enqueue_job in one round trip instead of four,
# with arq's payload, plus a wake-up for idle workers. Returns 0 when a job with this id is
# already queued, running, or has a kept result (arq's `_job_id` dedup).
# KEYS: job key, result key. ARGV: job id, payload, due (ms), expiry (ms), the shop (or
# APP_BUCKET), now (ms), its band (minus its priority), its concurrency key ('' for none).
ENQUEUE_LUA = (
    PRELUDE
    + f"""
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then
  return 0
end
local id, shop, due, now = ARGV[1], ARGV[5], tonumber(ARGV[3]), tonumber(ARGV[6])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
put(shop, id, tonumber(ARGV[7]), due, now)
if ARGV[8] ~= '' then redis.call('HSET', JOBKEY, id, ARGV[8]) end
joined(shop, due, now)
redis.call('PUBLISH', '{WAKE_CHANNEL}', '1')
return 1
"""
)

# A debounced job's entry due at a new time (later, as a burst goes on): out of whichever of
# its shop's sets it is in, into the right one for that time (its priority kept), the shop
# placed for it. Returns 0 when the entry is in neither (taken by a worker now, held back by a
# cap, or lost: the caller queues it anew). ARGV: job id, due (ms), the shop (or APP_BUCKET),
# now (ms).
RESCHEDULE_LUA = (
    PRELUDE
    + """
local id, due, shop, now = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local band = nil
local r = redis.call('ZSCORE', P .. shop, id)
if r then
  band = band_of(tonumber(r))
  redis.call('ZREM', P .. shop, id)
elseif redis.call('ZREM', L .. shop, id) == 1 then
  band = tonumber(redis.call('HGET', BAND, id) or DEFAULT_BAND)
  redis.call('HDEL', BAND, id)
else
  return 0
end
put(shop, id, band, due, now)
joined(shop, due, now)
return 1
"""
)

# A suspended job's entry made due now (what it waited for happened): out of its later set into
# its shop's ranked set (its priority kept), the shop into the rotation, idle workers woken.
# A job taken by a worker now is marked: its finish puts it back due now. Returns 0 when the
# entry is nowhere (held back by a cap, or lost: the caller queues it anew).
# ARGV: job id, now (ms), the shop (or APP_BUCKET).
WAKE_LUA = (
    PRELUDE
    + f"""
local id, now, shop = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local info = redis.call('HGET', TAKEN, id)
if info then
  -- Its run is ending (deciding to wait, say): its finish puts it back due now.
  if string.sub(info, -2) ~= ' !' then redis.call('HSET', TAKEN, id, info .. ' !') end
  return 1
end
if redis.call('ZREM', L .. shop, id) == 1 then
  local band = tonumber(redis.call('HGET', BAND, id) or DEFAULT_BAND)
  redis.call('HDEL', BAND, id)
  redis.call('ZADD', P .. shop, rank(band, now), id)
elseif not redis.call('ZSCORE', P .. shop, id) then
  return 0
end
joined(shop, now, now)
redis.call('PUBLISH', '{WAKE_CHANNEL}', '1')
return 1
"""
)

# A shop paused: out of the rotation (its jobs stay in its sets; running ones finish).
# ARGV: the shop.
PAUSE_LUA = (
    PRELUDE
    + """
local shop = ARGV[1]
redis.call('SADD', PAUSED, shop)
redis.call('ZREM', READY, shop)
redis.call('ZREM', DELAYED, shop)
redis.call('SREM', CAPPED, shop)
return 1
"""
)

# A paused shop resumed: back where its running count and jobs say, idle workers woken.
# ARGV: the shop, now (ms), the per-shop cap.
RESUME_LUA = (
    PRELUDE
    + f"""
local shop = ARGV[1]
if redis.call('SREM', PAUSED, shop) == 0 then return 0 end
place(shop, tonumber(ARGV[2]), tonumber(ARGV[3]))
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
    pause: AsyncScript
    resume: AsyncScript


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
            pause=redis.register_script(PAUSE_LUA),
            resume=redis.register_script(RESUME_LUA),
        )
    return found
