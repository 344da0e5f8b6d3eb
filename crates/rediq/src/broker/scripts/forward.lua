-- forward.lua — due delayed or retry tasks become pending (delayed/retry -> pending).
--
-- KEYS[1] source zset (delayed or retry; score = due time in Unix ms)
-- KEYS[2] pending zset
-- KEYS[3] sequence counter
-- KEYS[4] wake marker zset
--
-- ARGV[1] most tasks to move in one call
--
-- "Due" is judged by the Redis clock, the same clock that set the due time, so a skewed client
-- or server clock can never make a task run early. The task keeps its priority (record byte 2)
-- and goes behind the tasks of equal priority already pending.
-- Returns how many tasks moved.
--
-- Faults (prelude.lua): the source is read, the sequence counter raised and the tasks written to
-- pending before they leave the source; a wrong-type key or a non-integer counter raises CORRUPT
-- naming the key and every task stays where it was (the sequence may have advanced). A
-- wrong-type wake marker is replaced.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = rcall('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
if #due == 0 then return 0 end
local last = rcall('INCRBY', KEYS[3], #due)
local first = last - #due
local args = {}
for i = 1, #due do
  local prio = string.byte(due[i], 2) or 50
  if prio > 100 then prio = 100 end
  args[#args + 1] = string.format('%d', prio * 4398046511104 + first + i)
  args[#args + 1] = due[i]
end
rcall('ZADD', KEYS[2], unpack(args))
-- Nothing below can fail: the source was read as a sorted set above.
redis.call('ZREM', KEYS[1], unpack(due))
wake(KEYS[4])
return #due
