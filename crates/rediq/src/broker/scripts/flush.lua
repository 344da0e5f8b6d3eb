-- flush.lua — removes every task of a queue, in every state, and reports how many of each.
--
-- KEYS[1] pending zset     KEYS[2] delayed zset     KEYS[3] retry zset
-- KEYS[4] dead zset        KEYS[5] completed zset   KEYS[6] leases zset
-- KEYS[7 .. 6+m]           the active hashes of the m servers holding a lease (ARGV[1] = m)
-- KEYS[7+m ..]             unique-key locks of the removed tasks
--
-- ARGV[1] m; then, per unique-key lock in KEYS order, the id of the task it belongs to (a lock
--         is deleted only while it still names that task)
--
-- Servers running a flushed task find its entry gone: their acknowledgements are refused like
-- any stale one. The queue's counters and pause flag stay. Returns
-- {pending, delayed, retry, dead, completed, active}.
local m = tonumber(ARGV[1])
local counts = {}
for i = 1, 5 do
  counts[i] = redis.call('ZCARD', KEYS[i])
end
local active = 0
for i = 7, 6 + m do
  active = active + redis.call('HLEN', KEYS[i])
end
counts[6] = active
for i = 7 + m, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i - m - 5] then
    redis.call('DEL', KEYS[i])
  end
end
-- The leases set stays: a server that fetched after the caller listed the lease holders keeps
-- its lease entry, so its tasks stay recoverable. Lapsed leases of empty hashes are dropped by
-- the recoverer.
redis.call('DEL', unpack(KEYS, 1, 5))
if m > 0 then redis.call('DEL', unpack(KEYS, 7, 6 + m)) end
return counts
