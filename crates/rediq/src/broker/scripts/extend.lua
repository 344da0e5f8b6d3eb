-- extend.lua — a live server extends its lease and learns which tasks it no longer holds.
--
-- KEYS[1] leases zset
-- KEYS[2] the server's active hash
--
-- ARGV[1] lease duration in ms
-- ARGV[2] server id
-- ARGV[3] n; then 2 values per task the server believes it holds: id, 16-digit fencing token
--
-- Returns the 1-based positions of tasks the server no longer holds (taken back after its lease
-- lapsed); their results will be refused.
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1]), ARGV[2])
local n = tonumber(ARGV[3])
if n == 0 then return {} end
local ids = {}
for i = 1, n do ids[i] = ARGV[4 + (i - 1) * 2] end
local vals = redis.call('HMGET', KEYS[2], unpack(ids))
local lost = {}
for i = 1, n do
  local v = vals[i]
  if not v or string.sub(v, 1, 16) ~= ARGV[5 + (i - 1) * 2] then
    lost[#lost + 1] = i
  end
end
return lost
