-- migrate.lua — pending tasks written by a version before the band lists move into their bands
-- (legacy pending zset -> band lists), oldest first. The janitor calls it while the old set
-- exists, so an upgrade loses nothing (and a producer of the old version still running is
-- drained the same way).
--
-- KEYS[1] the pending zset of earlier versions (score = priority * 2^42 + sequence)
-- KEYS[2] wake marker zset
-- then    the band block (bands.lua): every band, 0..100
--
-- ARGV[1] most tasks to move in one call
-- ARGV[2] the band block's descriptor
--
-- The old set's order is priority, then age. Its tasks are older than anything in the bands,
-- so they go to the front of their band (LPUSH), taken from the old set's end: call after
-- call, each chunk lands in front of the one before, and the bands end up in the order the
-- tasks would have run, ahead of tasks written since the upgrade. Returns how many moved.
--
-- Faults (prelude.lua): the old set is read and the band lists checked before anything is
-- written, and the tasks are in their bands before they leave the old set; a wrong-type key
-- raises CORRUPT naming the key and nothing moves.
local b = bands_open(#KEYS, #ARGV)
local old = rcall('ZRANGE', KEYS[1], -tonumber(ARGV[1]), -1)
if #old == 0 then return 0 end
local to = {}
-- Newest first: LPUSH leaves the last one pushed at the head.
for i = #old, 1, -1 do bands_group(b, to, band_of(old[i]), old[i]) end
bands_check(b)
-- Nothing below can fail.
for p, records in pairs(to) do bands_push(b, p, 'LPUSH', records) end
if b.g.order then groups_flush(b.g) end
redis.call('ZREMRANGEBYRANK', KEYS[1], -#old, -1)
wake(KEYS[2])
return #old
