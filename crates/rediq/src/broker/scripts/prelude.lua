-- prelude.lua — prepended (in broker/mod.rs) to every script that moves or removes a task.
--
-- Redis does not roll back a script that fails half-way, so such a script does every step that
-- can fail before its first destructive one. These helpers make a failure name its key: they
-- raise "CORRUPT <length of key> <key> <what it holds>", which the broker turns into
-- Error::Corrupt. None of them costs more than the one command it wraps.

-- The functions the per-task loops call, as locals: a global such as redis.call is two table
-- look-ups on every call (the globals, then the field).
local redis_call = redis.call
local str_sub, str_byte = string.sub, string.byte

local KINDS = { zset = 'a sorted set', hash = 'a hash', list = 'a list', string = 'a string',
  set = 'a set', stream = 'a stream' }

local function corrupt(key, what)
  error({ err = 'CORRUPT ' .. #key .. ' ' .. key .. ' ' .. what })
end

-- redis.call, except that a refusal (wrong type, non-integer counter) raises naming the key.
local function rcall(cmd, key, ...)
  local r = redis.pcall(cmd, key, ...)
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'WRONGTYPE', 1, true) then
      local got = redis.call('TYPE', key)['ok']
      corrupt(key, 'holds ' .. (KINDS[got] or got) .. ', which ' .. cmd .. ' cannot use')
    elseif string.find(r.err, 'not an integer', 1, true) then
      corrupt(key, 'holds a non-integer value (' .. cmd .. ' refused it)')
    end
    corrupt(key, cmd .. ' failed: ' .. r.err)
  end
  return r
end

-- Raises unless the key is absent or of type t ('zset', 'hash', 'list', 'string'): for a key
-- written after a destructive step.
local function want(key, t)
  local got = redis.call('TYPE', key)['ok']
  if got ~= 'none' and got ~= t then
    corrupt(key, 'holds ' .. (KINDS[got] or got) .. ', expected ' .. KINDS[t])
  end
end

-- Whether INCRBY/HINCRBY accept v as a count: an integer as Redis writes one (no sign but
-- '-', no leading zero: Redis refuses '01' and '-0'), at most 18 digits so that adding a
-- batch cannot overflow.
local function is_count(v)
  return #v <= 18 and (v == '0' or string.find(v, '^%-?[1-9]%d*$') ~= nil)
end

-- Raises unless the key is absent or a counter INCRBY accepts.
local function counter(key)
  local v = rcall('GET', key)
  if v and not is_count(v) then
    corrupt(key, 'holds a non-integer value')
  end
end

-- Per-day counters: the queue's daily hash holds 'p:<day>' (tasks completed) and 'f:<day>'
-- (failed attempts), <day> counted in days since 1970-01-01 UTC by the Redis clock. Bounded:
-- the first count of a day drops every field older than DAILY_KEEP days, so the hash holds at
-- most 2 * (DAILY_KEEP + 1) fields (a few KB) whatever the throughput.
local DAILY_KEEP = 90

local function day_of(ms) return math.floor(ms / 86400000) end

-- Raises unless the daily hash is absent or a hash whose field for (kind, day) HINCRBY accepts:
-- called before a script's first destructive step.
local function daily_check(key, kind, day)
  local v = rcall('HGET', key, kind .. ':' .. day)
  if v and not is_count(v) then
    corrupt(key, 'holds a non-integer count for ' .. kind .. ':' .. day)
  end
end

-- Adds n to the (kind, day) count; checked by daily_check, so it cannot fail.
local function daily_add(key, kind, day, n)
  if redis_call('HINCRBY', key, kind .. ':' .. day, n) ~= n then return end
  -- The day's first count: forget the days past the retention (and any field not ours).
  -- In slices: unpack of thousands of fields (a hash someone else filled) would raise.
  local old = {}
  for _, f in ipairs(redis_call('HKEYS', key)) do
    local d = tonumber(str_sub(f, 3))
    if not d or d <= day - DAILY_KEEP then
      old[#old + 1] = f
      if #old == 500 then
        redis_call('HDEL', key, unpack(old))
        old = {}
      end
    end
  end
  if #old > 0 then redis_call('HDEL', key, unpack(old)) end
end

-- A time (Unix ms) as the 6 bytes that follow an id in the finished list (see ix_evict.lua).
local function stamp6(ms)
  local b = {}
  for j = 6, 1, -1 do
    b[j] = ms % 256
    ms = math.floor(ms / 256)
  end
  return string.char(unpack(b))
end

-- Sets the wake marker. It carries no data, so a key of the wrong type is replaced.
local function wake(key)
  local r = redis.pcall('ZADD', key, 0, 'w')
  if type(r) == 'table' and r.err then
    redis.call('DEL', key)
    redis.call('ZADD', key, 0, 'w')
  end
end

