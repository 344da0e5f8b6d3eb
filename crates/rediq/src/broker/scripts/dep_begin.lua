-- dep_begin.lua — a client is about to register a dependent with its dependencies and then write
-- it (in the dependent's queue, before the first registration). The mark tells dep_satisfy.lua
-- and dep_fail.lua that news for this dependent which finds it absent arrived *early* and must
-- be kept; without the mark, an absent dependent was already released or settled (the news is a
-- redundant delivery) and nothing is written. dep_enqueue.lua removes the mark.
--
-- KEYS[1] early facts zset (the mark is the member "W" .. dependent id, scored by time, so the
--         janitor drops marks of clients that died with the early facts)
--
-- ARGV[1] dependent id (16 bytes)
--
-- Faults (prelude.lua): one write; a wrong-type key raises CORRUPT naming it (nothing changed).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
rcall('ZADD', KEYS[1], now, 'W' .. ARGV[1])
return 1
