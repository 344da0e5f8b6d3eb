-- Side indexes over the ids of KEYS[1] (a pending zset): ARGV[1] kind:
--  "hash": one hash id -> "p"            (KEYS[2])
--  "slots": per-hour hash, field = 10 ms slot of the id's creation time, value = ids concatenated
--           (KEYS[2] is a prefix)
--  "seconds": per-second string of ids (KEYS[2] prefix), like the completion records
local kind = ARGV[1]
local recs = redis.call('ZRANGE', KEYS[1], 0, -1)
local acc = {}
for i = 1, #recs do
  local id = string.sub(recs[i], 3, 18)
  if kind == 'hash' then
    redis.call('HSET', KEYS[2], id, 'p')
  else
    local ms = 0
    for b = 1, 6 do ms = ms * 256 + string.byte(id, b) end
    local key, field
    if kind == 'slots' then
      key = KEYS[2] .. math.floor(ms / 3600000); field = tostring(math.floor(ms / 10) % 360000)
    else
      key = KEYS[2] .. math.floor(ms / 1000); field = ''
    end
    local k = key .. '\0' .. field
    local t = acc[k]
    if not t then t = {key, field}; acc[k] = t end
    t[#t + 1] = id
  end
end
for _, t in pairs(acc) do
  local ids = table.concat(t, '', 3)
  if kind == 'slots' then redis.call('HSET', t[1], t[2], ids) else redis.call('SET', t[1], ids) end
end
return #recs
