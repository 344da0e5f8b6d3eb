-- cron_set.lua — writes a periodic entry and its next tick, only if neither changed since the
-- caller read them (compare-and-set). Registering, pausing and resuming an entry decide from
-- what they read; a scheduler may fire a tick (cron_fire.lua moves the next tick on) between the
-- read and the write, and writing the old next tick back would arm that tick a second time.
-- With this check the caller reads again instead, so each tick still fires once.
--
-- KEYS[1] cron hash        (entry id -> stored entry)
-- KEYS[2] cron next-run zset (entry id -> next tick, Unix ms; absent while paused)
--
-- ARGV[1] entry id
-- ARGV[2] the stored entry as the caller read it ("" = absent)
-- ARGV[3] its next tick as the caller read it ("" = none)
-- ARGV[4] the entry to store
-- ARGV[5] the next tick to store ("" = none: paused, or no tick left)
--
-- Only reads come before the first write, so an error (a key of the wrong type) changes nothing.
-- Returns 1 when written, 0 when the entry or its next tick changed meanwhile.
local entry = redis.call('HGET', KEYS[1], ARGV[1]) or ''
local next = redis.call('ZSCORE', KEYS[2], ARGV[1])
if entry ~= ARGV[2] then return 0 end
if (next and tonumber(next) or -1) ~= (ARGV[3] ~= '' and tonumber(ARGV[3]) or -1) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
if ARGV[5] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return 1
