-- records_trim.lua — drops completion-record buckets past the dependency retention, and the
-- oldest ones while the queue holds more records than allowed (janitor).
--
-- KEYS[1]   index of completion-record buckets (bucket key -> time of its last write)
-- KEYS[2]   number of completion records
-- KEYS[3..] candidate buckets, oldest last write first (as the caller read the index)
--
-- ARGV[1]   dependency retention in ms
-- ARGV[2]   most completion records kept
--
-- Stops at the first candidate that is neither past the retention nor needed to get under the
-- cap. A bucket written in the last minute is never dropped for the cap: a dependent may be
-- registering with a task that has just completed. Returns {buckets dropped, records dropped}.
--
-- Faults (prelude.lua): the count, the index and every candidate bucket are checked before the
-- first bucket goes; a wrong-type key or a non-integer count raises CORRUPT naming it and
-- nothing is dropped (dropping buckets and then failing would leave the count too high).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local horizon = now - tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
counter(KEYS[2])
want(KEYS[1], 'zset')
for i = 3, #KEYS do want(KEYS[i], 'string') end
local count = tonumber(redis.call('GET', KEYS[2]) or '0')
local dropped, records = 0, 0
for i = 3, #KEYS do
  local written = redis.call('ZSCORE', KEYS[1], KEYS[i])
  if written and (tonumber(written) < horizon or (count > cap and tonumber(written) < now - 60000)) then
    local n = math.floor(redis.call('STRLEN', KEYS[i]) / 16)
    redis.call('DEL', KEYS[i])
    redis.call('ZREM', KEYS[1], KEYS[i])
    count = count - n
    records = records + n
    dropped = dropped + 1
  elseif written then
    break
  end
end
if records > 0 then
  if count > 0 then redis.call('SET', KEYS[2], count) else redis.call('DEL', KEYS[2]) end
end
return {dropped, records}
