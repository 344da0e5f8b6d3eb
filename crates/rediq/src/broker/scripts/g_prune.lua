-- g_prune.lua — drops the token buckets of groups that have filled up again (groups.lua).
--
-- KEYS[1] the group rate buckets hash (group -> 'tokens|Unix ms|period ms', fetch.lua)
--
-- ARGV    the groups whose buckets the caller found full (read outside this script)
--
-- A bucket untouched for a whole period holds at least `count` new tokens, more than its cap
-- of max(1, count / 10): it is full, and a missing bucket is a full one, so dropping it changes
-- nothing. Each field is checked again here, since a fetch may have used the bucket since the
-- caller read it. A value that does not parse goes too (fetch.lua reads it as full).
-- Returns how many went. Only deletes, so nothing can fail half-way.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = {}
local vals = redis.call('HMGET', KEYS[1], unpack(ARGV))
for i = 1, #ARGV do
  local v = vals[i]
  if v then
    local at, period = string.match(v, '^[%d.]+|(%d+)|(%d+)$')
    if not at or tonumber(at) + tonumber(period) < now then gone[#gone + 1] = ARGV[i] end
  end
end
if #gone > 0 then redis.call('HDEL', KEYS[1], unpack(gone)) end
return #gone
