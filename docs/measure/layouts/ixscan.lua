-- ixscan.lua — the index buckets' sizes: ARGV[1] B, ARGV[2] prefix (default "rediq:{q}:").
-- Returns {buckets, entries, smallest, largest, buckets over 128 entries, over 512}.
local B, pre = tonumber(ARGV[1]), ARGV[2] or 'rediq:{q}:'
local total, lo, hi, o128, o512 = 0, math.huge, 0, 0, 0
for b = 0, B - 1 do
  local h = redis.call('HLEN', pre .. 'ix:' .. b)
  total = total + h
  if h < lo then lo = h end
  if h > hi then hi = h end
  if h > 128 then o128 = o128 + 1 end
  if h > 512 then o512 = o512 + 1 end
end
return {B, total, lo, hi, o128, o512}
