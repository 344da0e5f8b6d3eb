-- extend.lua — a live server extends the leases of the tasks it still holds.
--
-- KEYS[1] lease zset
-- KEYS[2] active hash
--
-- ARGV[1] lease duration in ms
-- ARGV[2] n; then 2 values per task: id, 12-digit fencing token
--
-- Only leases whose active entry still carries the caller's token are extended (XX: never
-- re-creates a lease). Returns the 1-based positions of tasks this server no longer holds.
local n = tonumber(ARGV[2])
local ids = {}
for i = 1, n do ids[i] = ARGV[3 + (i - 1) * 2] end
local vals = redis.call('HMGET', KEYS[2], unpack(ids))
local t = redis.call('TIME')
local deadline = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1]))
local args, lost = {}, {}
for i = 1, n do
  local v = vals[i]
  if v and string.sub(v, 1, 12) == ARGV[4 + (i - 1) * 2] then
    args[#args + 1] = deadline
    args[#args + 1] = ids[i]
  else
    lost[#lost + 1] = i
  end
end
if #args > 0 then redis.call('ZADD', KEYS[1], 'XX', unpack(args)) end
return lost
