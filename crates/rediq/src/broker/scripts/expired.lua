-- expired.lua — read-only: the tasks whose lease has expired, for the recoverer to decide on.
--
-- KEYS[1] lease zset
-- KEYS[2] active hash
--
-- ARGV[1] most tasks to return
--
-- Returns {id, active value, id, active value, ...}; the active value is token .. score .. record.
-- Nothing changes here: the recoverer then calls requeue.lua or kill.lua, which check again.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now), 'LIMIT', 0, tonumber(ARGV[1]))
if #ids == 0 then return {} end
local vals = redis.call('HMGET', KEYS[2], unpack(ids))
local out = {}
for i = 1, #ids do
  out[#out + 1] = ids[i]
  out[#out + 1] = vals[i] or ''
end
return out
