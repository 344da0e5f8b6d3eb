-- fetch.lua — lease up to N pending tasks to a server (pending -> active).
--
-- KEYS[1] pending zset
-- KEYS[2] leases zset     (member = server id, score = lease deadline in Unix ms, Redis clock)
-- KEYS[3] the server's active hash (field = task id,
--                          value = 16-digit fencing token .. "|" .. record)
-- KEYS[4] token counter   (one fencing token per fetch; every delivery of a task gets a new one)
-- KEYS[5] wake marker zset
-- KEYS[6] paused flag (while it exists the queue hands out nothing)
--
-- ARGV[1] N, the most tasks to take
-- ARGV[2] lease duration in ms
-- ARGV[3] server id
--
-- The lease belongs to the server, not to each task: one ZADD per fetch instead of one entry per
-- task. The server's heartbeat extends it; when it lapses, the recoverer takes back everything
-- in the server's active hash.
-- Returns {token, {record, ...}}, or {} when the queue is empty or paused. When tasks remain
-- after the pop the wake marker is set again, so that a second blocked server wakes up too.
if redis.call('EXISTS', KEYS[6]) == 1 then return {} end
-- ZRANGE + ZREMRANGEBYRANK instead of ZPOPMIN: the scores are not needed (a task put back goes
-- to the front of its priority, see requeue.lua), and Redis 7.0 formats every score in a reply
-- with "%.17g", which cost more than the rest of the pop.
local out = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #out == 0 then return {} end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, #out - 1)

local token = redis.call('INCR', KEYS[4])
local prefix = string.format('%016d', token) .. '|'
local active = {}
for i = 1, #out do
  local record = out[i]
  active[#active + 1] = string.sub(record, 3, 18)
  active[#active + 1] = prefix .. record
end
redis.call('HSET', KEYS[3], unpack(active))
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2]), ARGV[3])
if redis.call('ZCARD', KEYS[1]) > 0 then
  redis.call('ZADD', KEYS[5], 0, 'w')
end
return {token, out}
