-- forward.lua — due delayed or retry tasks become pending (delayed/retry -> pending).
--
-- KEYS[1] source zset (delayed or retry; score = due time in Unix ms)
-- KEYS[2] wake marker zset
-- then    the band block (bands.lua): the caller's guess of the due tasks' bands
--
-- ARGV[1] most tasks to move in one call
-- ARGV[2] the band block's descriptor
--
-- "Due" is judged by the Redis clock, the same clock that set the due time, so a skewed client
-- or server clock can never make a task run early. The task keeps its priority (record byte 2)
-- and goes behind the tasks of its band already pending, due tasks in order of due time.
-- Returns how many tasks moved; fails with "BANDS p ..." (nothing moved) when a due task's band
-- is not in the block.
--
-- Faults (prelude.lua): the source is read and the band lists checked before the tasks are
-- written to their bands, and they are written before they leave the source; a wrong-type key
-- raises CORRUPT naming the key and every task stays where it was. A wrong-type wake marker is
-- replaced.
local b = bands_open(#KEYS, #ARGV)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = rcall('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
if #due == 0 then return 0 end
local to = {}
for i = 1, #due do bands_group(b, to, band_of(due[i]), due[i]) end
bands_check(b)
-- Nothing below can fail: the source was read as a sorted set above.
for p, records in pairs(to) do bands_push(b, p, 'RPUSH', records) end
if b.g.order then groups_flush(b.g) end
redis.call('ZREM', KEYS[1], unpack(due))
wake(KEYS[2])
return #due
