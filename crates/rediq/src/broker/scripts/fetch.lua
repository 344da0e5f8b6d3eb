-- fetch.lua — lease up to N pending tasks to a server (pending -> active).
--
-- KEYS[1] pending zset
-- KEYS[2] lease zset     (member = task id, score = lease deadline in Unix ms, Redis clock)
-- KEYS[3] active hash    (field = task id, value = 12-digit token .. 16-digit pending score .. record)
-- KEYS[4] token counter  (one fencing token per fetch; every delivery of a task gets a new one)
-- KEYS[5] wake marker zset
--
-- ARGV[1] N, the most tasks to take
-- ARGV[2] lease duration in ms
--
-- Returns {token, {record, ...}}, or {} when the queue is empty. When tasks remain after the pop
-- the wake marker is set again, so that a second blocked server wakes up too.
local popped = redis.call('ZPOPMIN', KEYS[1], ARGV[1])
if #popped == 0 then return {} end

local token = redis.call('INCR', KEYS[4])
local t = redis.call('TIME')
local deadline = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2]))
local prefix = string.format('%012d', token)

local lease, active, out = {}, {}, {}
for i = 1, #popped, 2 do
  local record = popped[i]
  local id = string.sub(record, 3, 18)
  lease[#lease + 1] = deadline
  lease[#lease + 1] = id
  active[#active + 1] = id
  active[#active + 1] = prefix .. string.format('%016.0f', tonumber(popped[i + 1])) .. record
  out[#out + 1] = record
end
redis.call('ZADD', KEYS[2], unpack(lease))
redis.call('HSET', KEYS[3], unpack(active))
if redis.call('ZCARD', KEYS[1]) > 0 then
  redis.call('ZADD', KEYS[5], 0, 'w')
end
return {token, out}
