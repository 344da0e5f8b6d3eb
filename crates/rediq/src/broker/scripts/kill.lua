-- kill.lua — a task goes to the dead-letter queue (active -> dead).
--
-- KEYS[1] the server's active hash
-- KEYS[2] leases zset
-- KEYS[3] dead zset         (member = record with its last error, score = time of death, Unix ms)
-- KEYS[4] dead-trimmed counter (how many dead tasks were dropped by the count/age limits)
-- KEYS[5] failed counter
-- KEYS[6] failed ids zset  (id -> time: tasks depending on this one fail too)
-- KEYS[7] dependents hash (id -> references of the tasks that depend on it)
-- KEYS[8] outbox list      (the resolver tells the dependents)
-- KEYS[9] finished list     (id + finish time: the id index forgets the task after it)
-- KEYS[10] daily counts hash (prelude.lua, daily_add: 'f:<day>' counts the failed attempts)
-- KEYS[11..18] the group block (groups.lua: a task of a group leaves its group's running count)
-- KEYS[19] (optional) the task's unique-key lock, released when it still names this task
-- then    the index block of the task's id (index.lua): the id is marked 'F'
--
-- ARGV[1] task id
-- ARGV[2] 16-digit fencing token
-- ARGV[3] the record to keep (with last error, attempt count and time)
-- ARGV[4] most dead tasks to keep
-- ARGV[5] oldest dead task to keep, in ms
-- ARGV[6] "1" = only if the server's lease has lapsed (the recoverer's call), else "0"
-- ARGV[7] server id (owner of KEYS[1])
-- then    the index block's descriptor
--
-- Returns 1 (2 when the task has dependents, now told through the outbox), or 0 when the token
-- is stale or (ARGV[6]) the lease was renewed meanwhile.
--
-- Faults (prelude.lua): every read and check (the unique lock, the dependents, the types of the
-- failure records and outbox, the counters, the daily count) and the write to the dead set come
-- before the task leaves the active hash; a wrong-type key or a non-integer counter raises
-- CORRUPT naming the key and the task stays active, never a stale refusal.

local ix = ix_open()
local lock = ix.base >= 19 and KEYS[19] or nil
local g = groups_open(11)
local v = rcall('HGET', KEYS[1], ARGV[1])
if not v or string.sub(v, 1, 16) ~= ARGV[2] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[6] == '1' then
  local deadline = rcall('ZSCORE', KEYS[2], ARGV[7])
  if deadline and tonumber(deadline) > now then return 0 end
end
local release = lock and rcall('GET', lock) == ARGV[1]
local refs = rcall('HGET', KEYS[7], ARGV[1])
if group_of(string.sub(v, 18)) then
  groups_load()
  groups_leaving(g, string.sub(v, 18))
end
counter(KEYS[4])
counter(KEYS[5])
daily_check(KEYS[10], 'f', day_of(now))
want(KEYS[6], 'zset')
want(KEYS[9], 'list')
if refs then want(KEYS[8], 'list') end
want(KEYS[3], 'zset')
-- First write (it undoes itself when its bucket refuses); nothing below can fail.
ix_set_all(ix, {1}, {ARGV[1]}, 'F' .. stamp6(now))
redis.call('ZADD', KEYS[3], now, ARGV[3])
redis.call('HDEL', KEYS[1], ARGV[1])
if g.rel_order then groups_release(g) end
redis.call('INCR', KEYS[5])
daily_add(KEYS[10], 'f', day_of(now), 1)
if release then redis.call('DEL', lock) end
redis.call('ZADD', KEYS[6], now, ARGV[1])
redis.call('RPUSH', KEYS[9], ARGV[1] .. stamp6(now))
local result = 1
if refs then
  redis.call('HDEL', KEYS[7], ARGV[1])
  redis.call('RPUSH', KEYS[8], 'F' .. ARGV[1] .. refs)
  result = 2
end
local trimmed = redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. (now - tonumber(ARGV[5])))
local over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[4])
if over > 0 then
  trimmed = trimmed + redis.call('ZREMRANGEBYRANK', KEYS[3], 0, over - 1)
end
if trimmed > 0 then redis.call('INCRBY', KEYS[4], trimmed) end
ix_close(ix)
return result
