-- complete.lua — acknowledge successfully handled tasks (active -> removed, or -> completed).
--
-- KEYS[1]   the server's active hash
-- KEYS[2]   completed zset   (member = record, score = when it may be trimmed, Unix ms)
-- KEYS[3]   processed counter
-- KEYS[4..] unique-key locks, referenced by index from ARGV
--
-- ARGV[1]   retention of completed tasks in ms (0 = delete at once)
-- ARGV[2]   n; then 3 values per task: id, 16-digit fencing token, unique-lock index (0 = none)
--
-- A task is acknowledged only if the active entry still carries the caller's token: an ack for
-- a delivery that was taken back (the server's lease lapsed) is refused (fencing).
-- Returns the 1-based positions of refused (stale) acks.
local n = tonumber(ARGV[2])
local ids = {}
for i = 1, n do ids[i] = ARGV[3 + (i - 1) * 3] end
local vals = redis.call('HMGET', KEYS[1], unpack(ids))

local retention = tonumber(ARGV[1])
local expire_at
if retention > 0 then
  local t = redis.call('TIME')
  expire_at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + retention
end

local ok, stale, done = {}, {}, {}
for i = 1, n do
  local b = 3 + (i - 1) * 3
  local v = vals[i]
  if v and string.sub(v, 1, 16) == ARGV[b + 1] then
    ok[#ok + 1] = ids[i]
    local u = tonumber(ARGV[b + 2])
    if u > 0 and redis.call('GET', KEYS[3 + u]) == ids[i] then
      redis.call('DEL', KEYS[3 + u])
    end
    if expire_at then
      done[#done + 1] = expire_at
      done[#done + 1] = string.sub(v, string.find(v, '|', 17, true) + 1)
    end
  else
    stale[#stale + 1] = i
  end
end
if #ok > 0 then
  redis.call('HDEL', KEYS[1], unpack(ok))
  redis.call('INCRBY', KEYS[3], #ok)
  if #done > 0 then redis.call('ZADD', KEYS[2], unpack(done)) end
end
return stale
