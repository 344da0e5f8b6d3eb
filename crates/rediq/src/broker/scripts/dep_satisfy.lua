-- dep_satisfy.lua — one dependency of a waiting task completed (resolver, in the dependent's
-- queue). When it was the last one, the task becomes pending (or delayed, with a delay) — in
-- this script, so exactly once however many resolvers deliver the same news.
--
-- KEYS[1] waiting hash   KEYS[2] needs hash      KEYS[3] early facts zset
-- KEYS[4] pending zset   KEYS[5] delayed zset    KEYS[6] sequence counter
-- KEYS[7] wake marker zset
-- KEYS[8] (optional) the dependent's unique-key lock: held without a TTL while it waited, given
--         its TTL when the task is released
--
-- ARGV[1] dependent id (16 bytes)
-- ARGV[2] dependency id (16 bytes)
-- ARGV[3] the unique-lock TTL in seconds (with KEYS[8])
--
-- Idempotent: a dependency already crossed off changes nothing. A dependent not yet written
-- (dep_begin.lua marked it, dep_enqueue.lua has not run) gets an early fact that dep_enqueue.lua
-- consumes; an absent dependent without the mark was released or settled already, and the
-- news (a redundant delivery) leaves nothing behind. Returns 0 (nothing to do, or noted early),
-- 1 (crossed off, others remain) or 2 (released).
local id, dep = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local needs = redis.call('HGET', KEYS[2], id)
if not needs then
  -- Kept only while the dependent is being written (dep_begin.lua's mark); otherwise it was
  -- released or settled already and this is a redundant delivery that nobody would read.
  if redis.call('ZSCORE', KEYS[3], 'W' .. id) then
    redis.call('ZADD', KEYS[3], now, 'S' .. id .. dep)
  end
  return 0
end
local bar = string.find(needs, '|', 1, true)
local delay = tonumber(string.sub(needs, 1, bar - 1))
local rest = {}
local found = false
for i = bar + 1, #needs, 16 do
  local d = string.sub(needs, i, i + 15)
  if d == dep then found = true else rest[#rest + 1] = d end
end
if not found then return 0 end
if #rest > 0 then
  redis.call('HSET', KEYS[2], id, delay .. '|' .. table.concat(rest))
  return 1
end
local record = redis.call('HGET', KEYS[1], id)
redis.call('HDEL', KEYS[1], id)
redis.call('HDEL', KEYS[2], id)
if not record then return 0 end
if KEYS[8] and redis.call('GET', KEYS[8]) == id then
  redis.call('EXPIRE', KEYS[8], ARGV[3])
end
if delay > 0 then
  redis.call('ZADD', KEYS[5], now + delay, record)
else
  local seq = redis.call('INCR', KEYS[6])
  redis.call('ZADD', KEYS[4], string.format('%d', (string.byte(record, 2) or 50) * 4398046511104 + seq), record)
  redis.call('ZADD', KEYS[7], 0, 'w')
end
return 2
