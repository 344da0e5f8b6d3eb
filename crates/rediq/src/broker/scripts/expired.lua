-- expired.lua — read-only: servers whose lease has lapsed, for the recoverer.
--
-- KEYS[1] leases zset
--
-- ARGV[1] most servers to return
--
-- Returns their ids. Nothing changes here: the recoverer reads their active hashes and then
-- calls requeue.lua or kill.lua, which check the lease again.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
