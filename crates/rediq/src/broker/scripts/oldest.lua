-- oldest.lua — read only: the head of every priority band of pending, and the Redis time.
--
-- KEYS[1] pending zset (score = priority * 2^42 + sequence)
--
-- Returns {now in Unix ms, record, record, ...}: the first record of each non-empty band (one
-- ZRANGEBYSCORE per band, at most 101). Within a band the head has waited longest (FIFO, and a
-- task put back goes to the front because it was there); across bands the caller compares the
-- records' own times.
local band = 4398046511104
local t = redis.call('TIME')
local out = { tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) }
local from = '-inf'
for _ = 0, 101 do
  local r = redis.call('ZRANGEBYSCORE', KEYS[1], from, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #r == 0 then break end
  out[#out + 1] = r[1]
  local prio = math.floor(tonumber(r[2]) / band)
  from = string.format('%d', (prio + 1) * band)
end
return out
