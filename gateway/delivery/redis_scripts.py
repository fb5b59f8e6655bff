"""Lua scripts of the Redis queue: each state transition is one atomic script.

Every script gets ``KEYS[1]`` = the destination's key base (``keys.destination_base``).
Times come from the caller (the injected clock) as strings, so both backends share one
notion of "now" and tests can move it. Invariant kept by all scripts: each non-empty
ordering-key list has its head job, and only it, in exactly one of the ready streams
(ready or in flight), the delayed set (retrying). A job of a backfilled change (its hash's
``l`` is ``1``) is ready in the backfill stream, which a claim reads only after the live one.
"""

from __future__ import annotations

from gateway.delivery import keys

_HELPERS = f"""
local P = KEYS[1]
local GROUP = '{keys.GROUP}'
local READY = P .. '{keys.READY}'
local READY_BACKFILL = P .. '{keys.READY_BACKFILL}'

local function stream_of(id)
  if redis.call('HGET', P .. '{keys.JOB}' .. id, 'l') == '1' then
    return READY_BACKFILL
  end
  return READY
end

local function make_ready(id)
  local stream = stream_of(id)
  if redis.call('EXISTS', stream) == 0 then
    redis.call('XGROUP', 'CREATE', stream, GROUP, '0', 'MKSTREAM')
  end
  local sid = redis.call('XADD', stream, '*', 'j', id)
  redis.call('HSET', P .. '{keys.JOB}' .. id, 'x', sid, 's', 'pending')
end

local function drop_stream(id, sid, stream)
  if sid and sid ~= '' then
    stream = stream or stream_of(id)
    redis.call('XACK', stream, GROUP, sid)
    redis.call('XDEL', stream, sid)
  end
  redis.call('ZREM', P .. '{keys.INFLIGHT}', id)
end

local function release_key(id, key)
  local kl = P .. '{keys.KEY}' .. key
  if redis.call('LINDEX', kl, 0) == id then
    redis.call('LPOP', kl)
  else
    redis.call('LREM', kl, 1, id)
  end
  local nxt = redis.call('LINDEX', kl, 0)
  if nxt then
    make_ready(nxt)
  end
end

local function forget_latest(ref, seq)
  if ref and redis.call('HGET', P .. '{keys.LATEST}', ref) == seq then
    redis.call('HDEL', P .. '{keys.LATEST}', ref)
  end
end

local function take_off_key(id)
  local f = redis.call('HMGET', P .. '{keys.JOB}' .. id, 'k', 'r', 'q', 'x')
  drop_stream(id, f[4])
  if f[1] then
    release_key(id, f[1])
  end
  forget_latest(f[2], f[3])
  redis.call('ZREM', P .. '{keys.PENDING}', id)
end

local function delivered(id, now_ms)
  take_off_key(id)
  redis.call('DEL', P .. '{keys.JOB}' .. id, P .. '{keys.BODY}' .. id)
  local bucket = P .. '{keys.DELIVERED}' .. math.floor(now_ms / 10000)
  redis.call('INCR', bucket)
  redis.call('EXPIRE', bucket, 180)
end
"""

# ARGV: expected cursor ('' = unset), new cursor, destination name,
# then per job: id, key, ref, seq, queued-at (s), body (job JSON, newline, payload), lane ('1': backfill).
# KEYS[2]: the destinations set. Returns the number added, or -1 if the cursor moved.
ENQUEUE = (
    _HELPERS
    + f"""
local cur = redis.call('GET', P .. '{keys.CURSOR}') or ''
if cur ~= ARGV[1] then
  return -1
end
local added = 0
for i = 4, #ARGV, 7 do
  local id = ARGV[i]
  local jk = P .. '{keys.JOB}' .. id
  if redis.call('EXISTS', jk) == 0 then
    local key, ref, seq, queued = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
    redis.call('HSET', jk, 's', 'pending', 'a', '0', 'c', '0', 'k', key, 'r', ref, 'q', seq, 'e', queued,
      'x', '')
    if ARGV[i + 6] == '1' then
      redis.call('HSET', jk, 'l', '1')
    end
    redis.call('SET', P .. '{keys.BODY}' .. id, ARGV[i + 5])
    redis.call('ZADD', P .. '{keys.PENDING}', queued, id)
    local latest = redis.call('HGET', P .. '{keys.LATEST}', ref)
    if not latest or tonumber(latest) < tonumber(seq) then
      redis.call('HSET', P .. '{keys.LATEST}', ref, seq)
    end
    if redis.call('RPUSH', P .. '{keys.KEY}' .. key, id) == 1 then
      make_ready(id)
    end
    added = added + 1
  end
end
redis.call('SET', P .. '{keys.CURSOR}', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return added
"""
)

# ARGV: now (ms), limit, consumer, lease deadline (ms), coalesce (0/1), promote limit.
# Returns a flat list: id, body, attempts, queued-at, claim token per job.
CLAIM = (
    _HELPERS
    + f"""
if redis.call('EXISTS', P .. '{keys.PAUSED}') == 1 then
  return {{}}
end
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local consumer = ARGV[3]
local lease_until = ARGV[4]
local coalesce = ARGV[5] == '1'
local due = redis.call('ZRANGEBYSCORE', P .. '{keys.DELAYED}', '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[6]))
for _, id in ipairs(due) do
  redis.call('ZREM', P .. '{keys.DELAYED}', id)
  make_ready(id)
end
local out = {{}}
local claimed = 0
local function take(id, sid, stream)
  local jk = P .. '{keys.JOB}' .. id
  local f = redis.call('HMGET', jk, 'r', 'q', 's', 'a', 'e')
  if not f[3] then
    drop_stream(id, sid, stream)
    return
  end
  if coalesce then
    local latest = redis.call('HGET', P .. '{keys.LATEST}', f[1])
    if latest and tonumber(latest) > tonumber(f[2]) then
      delivered(id, now)
      return
    end
  end
  local token = redis.call('HINCRBY', jk, 'c', 1)
  redis.call('HSET', jk, 's', 'in_flight', 'x', sid)
  redis.call('ZADD', P .. '{keys.INFLIGHT}', lease_until, id)
  out[#out + 1] = id
  out[#out + 1] = redis.call('GET', P .. '{keys.BODY}' .. id)
  out[#out + 1] = f[4]
  out[#out + 1] = f[5]
  out[#out + 1] = tostring(token)
  claimed = claimed + 1
end
local expired = redis.call('ZRANGEBYSCORE', P .. '{keys.INFLIGHT}', '-inf', ARGV[1], 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
  local sid = redis.call('HGET', P .. '{keys.JOB}' .. id, 'x')
  local stream = stream_of(id)
  if sid and sid ~= '' then
    redis.call('XCLAIM', stream, GROUP, consumer, 0, sid, 'JUSTID')
  end
  take(id, sid, stream)
end
-- Live jobs first; the backfill stream only when the live one has no more to give.
for _, stream in ipairs({{READY, READY_BACKFILL}}) do
  while claimed < limit and redis.call('EXISTS', stream) == 1 do
    local res = redis.call('XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', limit - claimed,
      'STREAMS', stream, '>')
    if not res or #res[1][2] == 0 then
      break
    end
    for _, entry in ipairs(res[1][2]) do
      take(entry[2][2], entry[1], stream)
    end
  end
end
return out
"""
)

# ARGV: now (ms), now (s), then per settlement: kind (a/n/b/r/s), id, token, due (ms), attempts,
# reason, detail JSON, dead-letter group ('' for none). Settlements whose token is not the
# job's current claim are ignored.
# A split ('s', delivered but for some parts) is followed by one 'd' row per refused part:
# part id, body (job JSON, newline, payload) in the token slot, attempts, reason, detail;
# the parts become dead jobs with the split job's key, ref, seq and queue time.
SETTLE = (
    _HELPERS
    + f"""
local now = tonumber(ARGV[1])
local applied = 0
local split = nil
local function join_group(id, group)
  if group ~= '' then
    redis.call('HSET', P .. '{keys.JOB}' .. id, 'grp', group)
    redis.call('SADD', P .. '{keys.DEAD_GROUP}' .. group, id)
  end
end
local function keep_part(id, body, attempts, reason, detail, group)
  local jk = P .. '{keys.JOB}' .. id
  if redis.call('EXISTS', jk) == 1 then
    return
  end
  redis.call('HSET', jk, 's', 'dead', 'a', attempts, 'c', '0', 'k', split[1], 'r', split[2], 'q', split[3],
    'e', split[4], 'x', '', 'rsn', reason, 'dtl', detail, 'died', ARGV[2])
  if split[5] == '1' then
    redis.call('HSET', jk, 'l', '1')
  end
  redis.call('SET', P .. '{keys.BODY}' .. id, body)
  redis.call('ZADD', P .. '{keys.DEAD}', ARGV[2], id)
  join_group(id, group)
end
for i = 3, #ARGV, 8 do
  local kind, id, token = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local jk = P .. '{keys.JOB}' .. id
  if kind == 'd' then
    if split then
      keep_part(id, token, ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7])
    end
  else
    split = nil
    local f = redis.call('HMGET', jk, 'c', 's', 'x')
    if f[1] == token and f[2] == 'in_flight' then
      applied = applied + 1
      if kind == 'a' then
        delivered(id, now)
      elseif kind == 's' then
        split = redis.call('HMGET', jk, 'k', 'r', 'q', 'e', 'l')
        delivered(id, now)
      elseif kind == 'n' then
        drop_stream(id, f[3])
        redis.call('HSET', jk, 's', 'retrying', 'a', ARGV[i + 4], 'err', ARGV[i + 5], 'x', '')
        redis.call('ZADD', P .. '{keys.DELAYED}', ARGV[i + 3], id)
      elseif kind == 'b' then
        take_off_key(id)
        redis.call('HSET', jk, 's', 'dead', 'a', ARGV[i + 4], 'rsn', ARGV[i + 5], 'dtl', ARGV[i + 6],
          'died', ARGV[2], 'x', '')
        redis.call('ZADD', P .. '{keys.DEAD}', ARGV[2], id)
        join_group(id, ARGV[i + 7])
      else
        drop_stream(id, f[3])
        make_ready(id)
      end
    end
  end
end
return applied
"""
)

# ARGV: lease deadline (ms), then id, token pairs. Returns the ids still held (renewed).
EXTEND = f"""
local P = KEYS[1]
local held = {{}}
for i = 2, #ARGV, 2 do
  local f = redis.call('HMGET', P .. '{keys.JOB}' .. ARGV[i], 'c', 's')
  if f[1] == ARGV[i + 1] and f[2] == 'in_flight' then
    redis.call('ZADD', P .. '{keys.INFLIGHT}', 'XX', ARGV[1], ARGV[i])
    held[#held + 1] = ARGV[i]
  end
end
return held
"""

# ARGV: now (s), then job ids. Dead jobs go behind their key's live jobs with 0 attempts (and leave their group).
REPLAY = (
    _HELPERS
    + f"""
local count = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('ZREM', P .. '{keys.DEAD}', id) == 1 then
    local jk = P .. '{keys.JOB}' .. id
    local f = redis.call('HMGET', jk, 'k', 'r', 'q', 'grp')
    if f[4] and f[4] ~= '' then
      redis.call('SREM', P .. '{keys.DEAD_GROUP}' .. f[4], id)
    end
    redis.call('HSET', jk, 's', 'pending', 'a', '0', 'e', ARGV[1], 'rsn', '', 'dtl', '', 'died', '', 'grp', '')
    redis.call('ZADD', P .. '{keys.PENDING}', ARGV[1], id)
    local latest = redis.call('HGET', P .. '{keys.LATEST}', f[2])
    if not latest or tonumber(latest) < tonumber(f[3]) then
      redis.call('HSET', P .. '{keys.LATEST}', f[2], f[3])
    end
    if redis.call('RPUSH', P .. '{keys.KEY}' .. f[1], id) == 1 then
      make_ready(id)
    end
    count = count + 1
  end
end
return count
"""
)

# ARGV: job ids. Deletes dead jobs and their payloads.
PURGE = f"""
local P = KEYS[1]
local count = 0
for i = 1, #ARGV do
  if redis.call('ZREM', P .. '{keys.DEAD}', ARGV[i]) == 1 then
    local group = redis.call('HGET', P .. '{keys.JOB}' .. ARGV[i], 'grp')
    if group and group ~= '' then
      redis.call('SREM', P .. '{keys.DEAD_GROUP}' .. group, ARGV[i])
    end
    redis.call('DEL', P .. '{keys.JOB}' .. ARGV[i], P .. '{keys.BODY}' .. ARGV[i])
    count = count + 1
  end
end
return count
"""
