-- g_unhold.lua — after a change of group limits, the groups held under the old ones take their
-- turn again (groups.lua): the next fetch holds them again if the new limits say so.
--
-- KEYS[1] groups at their concurrency limit (set)
-- KEYS[2] held groups (zset: group -> until when)
-- KEYS[3] the turn (zset)
-- KEYS[4] the groups' `head tail count` (hash: a group with tasks pending has a field)
-- KEYS[5] wake marker zset
--
-- ARGV[1] the group whose override changed, or "" for every group (the rule changed)
--
-- A group held by a handler's slow-down (Error::rate_limited) is let go too: a limit change is
-- an operator's act, and the worst it costs is one more slow-down answer, no attempt. Held
-- groups with no task pending are only forgotten. Returns how many groups take their turn
-- again. Types are checked before the first write.
local function score(v) return v[2] and tonumber(v[2]) or 0 end
local next_turn = score(redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')) + 1
local held = {}
if ARGV[1] == '' then
  for _, g in ipairs(redis.call('SMEMBERS', KEYS[1])) do held[#held + 1] = g end
  for _, g in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do held[#held + 1] = g end
else
  if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 or redis.call('ZSCORE', KEYS[2], ARGV[1]) then
    held[1] = ARGV[1]
  end
end
if #held == 0 then return 0 end
local pending = redis.call('HMGET', KEYS[4], unpack(held))
-- Nothing below can fail: every key was read as its type above.
local back, seen = {}, {}
for i = 1, #held do
  local g = held[i]
  if pending[i] and not seen[g] then
    seen[g] = true
    back[#back + 1] = next_turn
    back[#back + 1] = g
    next_turn = next_turn + 1
  end
end
if ARGV[1] == '' then
  redis.call('DEL', KEYS[1], KEYS[2])
else
  redis.call('SREM', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
for i = 1, #back, 4000 do
  redis.call('ZADD', KEYS[3], 'NX', unpack(back, i, math.min(i + 3999, #back)))
end
if #back > 0 then
  local r = redis.pcall('ZADD', KEYS[5], 0, 'w')
  if type(r) == 'table' and r.err then
    redis.call('DEL', KEYS[5])
    redis.call('ZADD', KEYS[5], 0, 'w')
  end
end
return #back / 2
