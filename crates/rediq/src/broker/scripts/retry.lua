-- retry.lua — a failed attempt with retries left (active -> retry).
--
-- KEYS[1] the server's active hash
-- KEYS[2] retry zset       (member = record, score = due time in Unix ms, Redis clock)
-- KEYS[3] failed counter
-- KEYS[4] daily counts hash (prelude.lua, daily_add: 'f:<day>' counts the failed attempts)
-- KEYS[5..12] the group block (groups.lua)
--
-- ARGV[1] task id
-- ARGV[2] 16-digit fencing token
-- ARGV[3] the updated record (attempt count and last error)
-- ARGV[4] backoff in ms
-- ARGV[5] "1" = a failed attempt (counted in KEYS[3] and KEYS[4]); "0" = the handler was told
--         to slow down (Error::rate_limited): the task waits without counting as a failure;
--         a task of a group goes back to the head of its group instead, and the whole group
--         is held for the backoff (its other tasks wait too)
--
-- Returns 1, or 0 when the caller's token is stale (nothing changes).
--
-- Faults (prelude.lua): the failed counters are checked and the task written to the retry set
-- before it leaves the active hash; a wrong-type key or a non-integer counter raises CORRUPT
-- naming the key and the task stays active (the heartbeat's orphan sweep or the recoverer
-- puts it back), never a stale refusal.
local v = rcall('HGET', KEYS[1], ARGV[1])
if not v or string.sub(v, 1, 16) ~= ARGV[2] then return 0 end
local failed = ARGV[5] ~= '0'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local g = groups_open(5)
if str_byte(v, 18) == 2 then
  groups_load()
  groups_leaving(g, string.sub(v, 18))
end
local pause = not failed and group_of(ARGV[3])
if failed then
  counter(KEYS[3])
  daily_check(KEYS[4], 'f', day_of(now))
end
if pause then
  groups_load()
  groups_add(g, pause, ARGV[3], true)
  g.st[pause].score = nil
  if g.order then groups_flush(g) end
else
  rcall('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[3])
end
-- Nothing below can fail.
if failed then
  redis.call('INCR', KEYS[3])
  daily_add(KEYS[4], 'f', day_of(now), 1)
end
redis.call('HDEL', KEYS[1], ARGV[1])
if g.rel_order then groups_release(g) end
if pause then groups_hold(g, pause, now + tonumber(ARGV[4])) end
return 1
