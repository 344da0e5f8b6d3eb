-- cron_fire.lua — one tick of a periodic entry fires exactly once, across all schedulers.
--
-- KEYS[1] cron next-run zset (member = entry id, score = its next tick, Unix ms)
-- KEYS[2] cron last-run hash (entry id -> the last tick that fired, Unix ms)
-- KEYS[3] wake marker zset
-- KEYS[4] enqueued counters hash (task type -> tasks enqueued, ever)
-- KEYS[5] (optional) the unique-key lock of the fired task
-- then    the band block of the fired task's band (bands.lua)
-- then    the index block of the fired task's id (index.lua)
--
-- ARGV[1] entry id
-- ARGV[2] the tick being fired (must still be the entry's next tick: that is the claim)
-- ARGV[3] the tick after it (0 = none)
-- ARGV[4] record of the task to enqueue (fresh id)
-- ARGV[5] unique-key TTL in seconds
-- ARGV[6] "1" = fire, "0" = only move on (a missed tick under the skip policy)
-- ARGV[7] task type of the fired task
-- then    the band block's descriptor, then the index block's descriptor
--
-- Every scheduler that sees the tick due calls this; the first one moves the entry's next tick
-- on and enqueues, every later one finds a different next tick and does nothing.
-- Returns 1 fired, 0 already claimed (or entry removed/paused), 2 skipped, 3 fired but the task
-- was dropped because its unique key is held.
--
-- Faults (prelude.lua): the keys written are checked before the tick moves on, so a key of the
-- wrong type or a non-integer count raises CORRUPT naming the key and the tick stays due
-- (it fires once the key is repaired) instead of being used up without its task.
local ix = ix_open()
local bands = bands_open(ix.base, #ARGV - 1)
-- The optional lock comes before the band block.
local lock = bands.first > 5 and KEYS[5] or nil
local cur = rcall('ZSCORE', KEYS[1], ARGV[1])
if not cur or tonumber(cur) ~= tonumber(ARGV[2]) then return 0 end
local was
if ARGV[6] ~= '0' then
  was = ix_get(ix, 1, string.sub(ARGV[4], 3, 18))
  want(KEYS[2], 'hash')
  pend_ready(bands, ARGV[4])
  bands_check(bands)
  local n = rcall('HGET', KEYS[4], ARGV[7])
  -- At most 18 digits: HINCRBY would also refuse a count that overflows.
  if n and not is_count(n) then
    corrupt(KEYS[4], 'holds a non-integer count for ' .. ARGV[7])
  end
end
-- Nothing below can fail.
if tonumber(ARGV[3]) > 0 then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
if ARGV[6] == '0' then return 2 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local record = ARGV[4]
if lock and not redis.call('SET', lock, string.sub(record, 3, 18), 'NX', 'EX', ARGV[5]) then
  return 3
end
redis.call('HINCRBY', KEYS[4], ARGV[7], 1)
pend_push(bands, record)
ix_put(ix, 1, string.sub(record, 3, 18), 'L', not was)
ix_close(ix)
wake(KEYS[3])
return 1
