-- janitor.lua — trims what outlived its retention: completed tasks past their time, dead tasks
-- beyond the count or age limit. What is trimmed from the dead set is counted, never silent.
--
-- KEYS[1] completed zset (score = when it may go)
-- KEYS[2] dead zset      (score = time of death)
-- KEYS[3] dead-trimmed counter
-- KEYS[4] failed ids zset   KEYS[5] early facts zset
--         (both scored by time; failure records are kept an hour past the dependency
--         retention, so the finished list forgets a dead id's index entry first, see
--         ix_evict.lua)
--
-- ARGV[1] most dead tasks to keep
-- ARGV[2] oldest dead task to keep, in ms
-- ARGV[3] how long failure records are kept, in ms
-- ARGV[4] how long early facts are kept, in ms (at least an hour: news for a dependent that a
--         slow client is still writing)
--
-- Returns {completed removed, dead removed}.
--
-- Faults (prelude.lua): the dead-trimmed counter and the types of the sets are checked before
-- anything is trimmed, so a wrong-type key or a non-integer counter raises CORRUPT naming the
-- key and nothing is trimmed (uncounted).
counter(KEYS[3])
want(KEYS[1], 'zset')
want(KEYS[2], 'zset')
want(KEYS[4], 'zset')
want(KEYS[5], 'zset')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local done = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local dead = redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - tonumber(ARGV[2])))
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[1])
if over > 0 then
  dead = dead + redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
end
if dead > 0 then redis.call('INCRBY', KEYS[3], dead) end
local horizon = '(' .. (now - tonumber(ARGV[3]))
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', horizon)
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. (now - tonumber(ARGV[4])))
return {done, dead}
