-- extend.lua — a live server extends its lease and learns which tasks it no longer holds.
--
-- KEYS[1] leases zset
-- KEYS[2] the server's active hash
--
-- ARGV[1] lease duration in ms
-- ARGV[2] server id
-- ARGV[3] n; then 2 values per task the server believes it holds: id, 16-digit fencing token
--
-- Returns the 1-based positions of tasks taken over: their entry carries another token (the
-- task was taken back and delivered again), or it is gone while the server's lease had lapsed
-- (the recoverer may have taken it back). An entry that is gone while the lease held was
-- settled by this server itself (an acknowledgement landing between the server's snapshot and
-- this call) or removed by an operator (cancel, flush): no recoverer touches a live lease, so
-- that is not reported. With n = 0 (the server tracks nothing in this queue) an existing lease
-- is still extended, never created: a fetch whose reply the server has not handled yet (its
-- runtime busy) must not see its lease lapse, and an idle queue gets no lease. The reads come first: an error (a key of the wrong type) changes
-- nothing.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[2])
local lapsed = not deadline or tonumber(deadline) <= now
local n = tonumber(ARGV[3])
local lost = {}
if n > 0 then
  local ids = {}
  for i = 1, n do ids[i] = ARGV[4 + (i - 1) * 2] end
  local vals = redis.call('HMGET', KEYS[2], unpack(ids))
  for i = 1, n do
    local v = vals[i]
    if (v and string.sub(v, 1, 16) ~= ARGV[5 + (i - 1) * 2]) or (not v and lapsed) then
      lost[#lost + 1] = i
    end
  end
end
if n == 0 then
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[2])
else
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
end
return lost
