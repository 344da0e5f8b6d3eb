-- oldest.lua — read only: the head of every band of pending, and the Redis time.
--
-- KEYS    the band block (bands.lua): every band of the bands zset must be in it
-- ARGV[1] the band block's descriptor
--
-- Returns {now in Unix ms, record, record, ...}: the first record of each non-empty band
-- (one LINDEX per band, at most 101). Within a band the head has waited longest (FIFO, and a
-- task put back goes to the front because it was there); across bands the caller compares the
-- records' own times. Fails with "BANDS p ..." when a live band is not in the block.
local b = bands_open(#KEYS, #ARGV)
local live = bands_all_live(b)
local t = redis.call('TIME')
local out = { tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) }
for i = 1, #live do
  local head = rcall('LINDEX', b.keys[live[i]], 0)
  if head then out[#out + 1] = head end
end
return out
