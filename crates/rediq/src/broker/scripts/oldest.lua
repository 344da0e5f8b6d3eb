-- oldest.lua — read only: the pending task that became pending first, and the Redis time.
--
-- KEYS[1] pending zset (score = priority * 2^42 + sequence)
--
-- Returns {record or nil, now in Unix ms}. The sequence grows with every task that becomes
-- pending (enqueue, forward, rerun; a requeued task keeps its old one), so the task that has
-- waited longest is the head of one of the priority bands. The script visits the head of each
-- non-empty band (one ZRANGEBYSCORE per band, at most 101) and keeps the smallest sequence.
local band = 4398046511104
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local best, best_seq
local from = '-inf'
for _ = 0, 101 do
  local r = redis.call('ZRANGEBYSCORE', KEYS[1], from, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #r == 0 then break end
  local score = tonumber(r[2])
  local prio = math.floor(score / band)
  local seq = score - prio * band
  if not best_seq or seq < best_seq then
    best, best_seq = r[1], seq
  end
  from = string.format('%.0f', (prio + 1) * band)
end
return { best or false, now }
