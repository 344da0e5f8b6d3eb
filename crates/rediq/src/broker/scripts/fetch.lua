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
-- Returns {token, {record, ...}}, or {} when the queue is empty or paused; a third element
-- {member, ...} lists pending members that are no record of ours (shorter than the head, or
-- another format byte): they are not leased, since two of them could share one active field
-- (their "id") and overwrite each other, and stay in pending for the broker to set aside one by
-- one (bury.lua). When tasks remain after the pop the wake marker is set again, so that a second
-- blocked server wakes up too.
--
-- Faults (prelude.lua): every step that can fail (reading pending, INCR of the token counter,
-- ZADD of the lease, HSET into the active hash) comes before the tasks leave pending, so a key
-- of the wrong type or a non-integer counter raises CORRUPT naming the key and nothing moves
-- (at most the token counter or the lease advanced). A wrong-type wake marker is replaced.
if redis.call('EXISTS', KEYS[6]) == 1 then return {} end
-- ZRANGE + ZREMRANGEBYRANK instead of ZPOPMIN: the scores are not needed (a task put back goes
-- to the front of its priority, see requeue.lua), and Redis 7.0 formats every score in a reply
-- with "%.17g", which cost more than the rest of the pop.
local out = rcall('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #out == 0 then return {} end

local token = rcall('INCR', KEYS[4])
local t = redis.call('TIME')
rcall('ZADD', KEYS[2], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2]), ARGV[3])
local prefix = string.format('%016d', token) .. '|'
local active, leased, foreign = {}, out, nil
for i = 1, #out do
  local record = out[i]
  -- A record is the format byte 1, the priority and 16 id bytes, then a body.
  if string.byte(record, 1) ~= 1 or #record < 19 then
    if not foreign then
      foreign, leased = {}, {}
      for j = 1, i - 1 do leased[j] = out[j] end
    end
    foreign[#foreign + 1] = record
  else
    if foreign then leased[#leased + 1] = record end
    active[#active + 1] = string.sub(record, 3, 18)
    active[#active + 1] = prefix .. record
  end
end
if #active > 0 then rcall('HSET', KEYS[3], unpack(active)) end
-- Nothing below can fail: pending was read as a sorted set above.
if foreign then
  if #leased > 0 then redis.call('ZREM', KEYS[1], unpack(leased)) end
else
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, #out - 1)
end
if redis.call('ZCARD', KEYS[1]) > 0 then
  wake(KEYS[5])
end
if foreign then return {token, leased, foreign} end
return {token, out}
