-- requeue.lua — leased tasks go back to pending at their old place (active -> pending).
-- Used at graceful shutdown (the attempt does not count: the record is unchanged) and by the
-- recoverer for expired leases (the record comes with its attempt count raised).
--
-- KEYS[1] lease zset
-- KEYS[2] active hash
-- KEYS[3] pending zset
-- KEYS[4] wake marker zset
--
-- ARGV[1] "1" = only tasks whose lease has expired (recoverer), "0" = any (shutdown)
-- ARGV[2] n; then 3 values per task: id, 12-digit fencing token, new record ("" = keep the stored one)
--
-- Returns how many tasks went back. Entries whose token is stale (or whose lease was renewed,
-- with ARGV[1] = "1") are left alone.
local n = tonumber(ARGV[2])
local now
if ARGV[1] == '1' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local moved, back = {}, {}
for i = 1, n do
  local b = 3 + (i - 1) * 3
  local id = ARGV[b]
  local v = redis.call('HGET', KEYS[2], id)
  if v and string.sub(v, 1, 12) == ARGV[b + 1] then
    local due = true
    if now then
      local deadline = redis.call('ZSCORE', KEYS[1], id)
      due = (not deadline) or tonumber(deadline) <= now
    end
    if due then
      local record = ARGV[b + 2]
      if record == '' then record = string.sub(v, 29) end
      moved[#moved + 1] = id
      back[#back + 1] = string.sub(v, 13, 28)
      back[#back + 1] = record
    end
  end
end
if #moved > 0 then
  redis.call('ZREM', KEYS[1], unpack(moved))
  redis.call('HDEL', KEYS[2], unpack(moved))
  redis.call('ZADD', KEYS[3], unpack(back))
  redis.call('ZADD', KEYS[4], 0, 'w')
end
return #moved
