-- dep_satisfy.lua — one dependency of a waiting task completed (resolver, in the dependent's
-- queue). When it was the last one, the task becomes pending (or delayed, with a delay) — in
-- this script, so exactly once however many resolvers deliver the same news.
--
-- KEYS[1] waiting hash   KEYS[2] needs hash      KEYS[3] early facts zset
-- KEYS[4] delayed zset   KEYS[5] wake marker zset
-- KEYS[6] (optional) the dependent's unique-key lock: held without a TTL while it waited, given
--         its TTL when the task is released
-- then    the band block (bands.lua): the caller's guess of the dependent's band
--
-- ARGV[1] dependent id (16 bytes)
-- ARGV[2] dependency id (16 bytes)
-- ARGV[3] the unique-lock TTL in seconds (with KEYS[6])
-- ARGV[4] the band block's descriptor
--
-- Idempotent: a dependency already crossed off changes nothing. A dependent not yet written
-- (dep_begin.lua marked it, dep_enqueue.lua has not run) gets an early fact that dep_enqueue.lua
-- consumes; an absent dependent without the mark was released or settled already, and the
-- news (a redundant delivery) leaves nothing behind. Returns 0 (nothing to do, or noted early),
-- 1 (crossed off, others remain) or 2 (released); fails with "BANDS p" (nothing changed) when
-- the dependent is released into a band the block lacks.
--
-- Faults (prelude.lua): the waiting record, the needs entry and the lock are read, and the key
-- the task goes to (its band, or delayed) checked, before the task
-- leaves the waiting hash; a wrong-type key or a non-integer counter raises CORRUPT naming the
-- key and the dependent stays waiting with its dependency not crossed off, so the resolver sets
-- the news aside and delivers it again once the key is repaired. The wake marker carries no
-- data: a wrong-type one is replaced.
local bands = bands_open(#KEYS, #ARGV)
local lock_key = bands.first > 6 and KEYS[6] or nil
local id, dep = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local needs = rcall('HGET', KEYS[2], id)
if not needs then
  -- Kept only while the dependent is being written (dep_begin.lua's mark); otherwise it was
  -- released or settled already and this is a redundant delivery that nobody would read.
  if rcall('ZSCORE', KEYS[3], 'W' .. id) then
    rcall('ZADD', KEYS[3], now, 'S' .. id .. dep)
  end
  return 0
end
local bar = string.find(needs, '|', 1, true)
if not bar then corrupt(KEYS[2], 'holds an entry for ' .. id .. ' without a delay') end
local delay = tonumber(string.sub(needs, 1, bar - 1))
if not delay then corrupt(KEYS[2], 'holds an entry with a bad delay') end
local rest = {}
local found = false
for i = bar + 1, #needs, 16 do
  local d = string.sub(needs, i, i + 15)
  if d == dep then found = true else rest[#rest + 1] = d end
end
if not found then return 0 end
if #rest > 0 then
  -- One write: it either lands or changes nothing.
  rcall('HSET', KEYS[2], id, delay .. '|' .. table.concat(rest))
  return 1
end
local record = rcall('HGET', KEYS[1], id)
if not record then
  -- Needs without a record (left by an older version or by hand): nothing to release.
  redis.call('HDEL', KEYS[2], id)
  return 0
end
local lock = lock_key and rcall('GET', lock_key) == id
if delay > 0 then
  want(KEYS[4], 'zset')
else
  pend_ready(bands, record)
  bands_check(bands)
end
-- Nothing below can fail (the wake marker is replaced when it is of the wrong type).
if delay > 0 then
  redis.call('ZADD', KEYS[4], now + delay, record)
else
  pend_push(bands, record)
  wake(KEYS[5])
end
if lock then redis.call('EXPIRE', lock_key, ARGV[3]) end
redis.call('HDEL', KEYS[1], id)
redis.call('HDEL', KEYS[2], id)
return 2
