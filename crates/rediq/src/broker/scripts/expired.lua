-- expired.lua — read-only: servers whose lease has lapsed, for the recoverer.
--
-- KEYS[1] leases zset
--
-- ARGV[1] most servers to return
--
-- Returns {now (Redis clock, Unix ms), server id, ...}. The time lets the recoverer notice a
-- jump of the Redis clock, which would lapse every lease at once. Nothing changes here: the
-- recoverer reads their active hashes and then calls requeue.lua or kill.lua, which check the
-- lease again.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
table.insert(out, 1, string.format('%d', now))
return out
