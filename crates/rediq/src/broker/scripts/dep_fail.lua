-- dep_fail.lua — a dependency of a waiting task was dead-lettered or cancelled (resolver, in the
-- dependent's queue): the dependent goes to the dead-letter queue with the reason, and its own
-- dependents are told the same through this queue's outbox (transitively, one queue at a time).
--
-- KEYS[1] waiting hash      KEYS[2] needs hash         KEYS[3] early facts zset
-- KEYS[4] dead zset         KEYS[5] failed ids zset    KEYS[6] dependents hash
-- KEYS[7] outbox list
-- KEYS[8] finished list (id + finish time: the id index forgets the dependent after it)
-- KEYS[9] (optional) the dependent's unique-key lock, released when it still names it
-- then    the index block of the dependent's id (index.lua): the id is marked 'F'
--
-- ARGV[1] dependent id (16 bytes)
-- ARGV[2] dependency id (16 bytes)
-- ARGV[3] the dependent's waiting record as the caller read it ("" = it was not there)
-- ARGV[4] the dead record to keep (the reason "dependency <id> failed" as its error)
-- then    the index block's descriptor
--
-- The dead set is not trimmed here: its limits are the settings of this queue's own servers,
-- whose janitor trims it. Idempotent. Returns 1 (dead-lettered), 0 (not waiting: noted as an
-- early fact when dep_begin.lua marked it as being written, else nothing) or -1 (its record
-- changed since the caller read it: read again).
--
-- Faults (prelude.lua): the waiting record, the lock and the dependents are read, and every key
-- written later (needs, dead set, failed ids, outbox) checked, before the dependent leaves the
-- waiting hash; a wrong-type key raises CORRUPT naming the key and the dependent stays waiting,
-- so the resolver sets the news aside and delivers it again once the key is repaired.
local ix = ix_open()
local lock_key = ix.base >= 9 and KEYS[9] or nil
local id = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local record = rcall('HGET', KEYS[1], id)
if not record then
  -- Kept only while the dependent is being written (see dep_satisfy.lua).
  if rcall('ZSCORE', KEYS[3], 'W' .. id) then
    rcall('ZADD', KEYS[3], now, 'F' .. id .. ARGV[2])
  end
  return 0
end
if record ~= ARGV[3] then return -1 end
local lock = lock_key and rcall('GET', lock_key) == id
local refs = rcall('HGET', KEYS[6], id)
want(KEYS[2], 'hash')
want(KEYS[4], 'zset')
want(KEYS[5], 'zset')
want(KEYS[8], 'list')
if refs then want(KEYS[7], 'list') end
-- First write (it undoes itself when its bucket refuses); nothing below can fail.
ix_set_all(ix, {1}, {id}, 'F' .. stamp6(now))
redis.call('ZADD', KEYS[4], now, ARGV[4])
redis.call('ZADD', KEYS[5], now, id)
redis.call('RPUSH', KEYS[8], id .. stamp6(now))
if refs then
  redis.call('HDEL', KEYS[6], id)
  redis.call('RPUSH', KEYS[7], 'F' .. id .. refs)
end
if lock then redis.call('DEL', lock_key) end
redis.call('HDEL', KEYS[1], id)
redis.call('HDEL', KEYS[2], id)
ix_close(ix)
return 1
