-- ixops.lua — 100 operations on the id index (hash buckets <pre>ix:<b>, field = 16-byte id,
-- value 'P', b = last 4 id bytes as uint32 mod B) in one call.
-- KEYS[1] the sample string (100 ids, 1600 bytes, written by gen.lua "sample")
-- ARGV[1] op: noop (bucket key computed, no command) | hsetnx | hget | hdel
-- ARGV[2] B; ARGV[3] key prefix (default "rediq:{q}:")
-- The bucket key is computed here; a real script would get it in KEYS (same cost or less).
local op, B, pre = ARGV[1], tonumber(ARGV[2]), ARGV[3] or 'rediq:{q}:'
local s = redis.call('GET', KEYS[1])
local hits = 0
for j = 0, #s / 16 - 1 do
  local id = string.sub(s, j * 16 + 1, j * 16 + 16)
  local a, b, c, d = string.byte(id, 13, 16)
  local key = pre .. 'ix:' .. (((a * 16777216) + (b * 65536) + (c * 256) + d) % B)
  if op == 'hsetnx' then
    hits = hits + redis.call('HSETNX', key, id, 'P')
  elseif op == 'hget' then
    if redis.call('HGET', key, id) then hits = hits + 1 end
  elseif op == 'hdel' then
    hits = hits + redis.call('HDEL', key, id)
  end
end
return hits
