-- flush.lua — removes every task of a queue, in every state, and reports how many of each.
--
-- KEYS[1] pending zset of versions before the band lists (counted and deleted like a band)
-- KEYS[2] delayed zset     KEYS[3] retry zset
-- KEYS[4] dead zset        KEYS[5] completed zset   KEYS[6] leases zset
-- KEYS[7] waiting hash     KEYS[8] needs hash       KEYS[9] dependents hash
-- KEYS[10] outbox list     KEYS[11] id index meta hash (index.lua)
-- KEYS[12] foreign list (garbage popped from pending on its way to the dead-letter queue:
--          counted and removed with the pending tasks)
-- KEYS[13 .. 12+m]         the active hashes of the m servers holding a lease (ARGV[1] = m)
-- KEYS[13+m ..]            unique-key locks of the removed tasks
-- then    the band block (bands.lua): every band of the bands zset must be in it; its group
--         block's pending tasks count as pending and go too, with the round robin's state
--         and the running counts (the active hashes go); group limits and buckets stay
--
-- ARGV[1] m; then, per unique-key lock in KEYS order, the id of the task it belongs to (a lock
--         is deleted only while it still names that task)
-- then    the band block's descriptor
--
-- Servers running a flushed task find its entry gone: their acknowledgements are refused like
-- any stale one. Tasks of other queues that depend on a removed task fail through the outbox
-- ("dependency <id> failed"); early facts (news for dependents still being written, which
-- may live in other queues' registrations) stay. The id index starts a new generation: the
-- queue forgets every id it knew (the caller deletes the old generation's buckets, which no
-- script reads any more). The queue's counters and pause flag stay.
-- Returns {pending, delayed, retry, dead, completed, active, waiting, old index generation}.
--
-- Fails with "BANDS p ..." (nothing removed) when a live band is not in the block.
--
-- Faults (prelude.lua): every key is read (counts, locks, dependents) and the outbox and index
-- meta hash checked before anything is deleted; a wrong-type key or a non-integer field raises
-- CORRUPT naming the key and nothing is removed.
local m = tonumber(ARGV[1])
local bands = bands_open(#KEYS, #ARGV)
local live = bands_all_live(bands)
local counts = {}
for i = 1, 5 do
  counts[i] = rcall('ZCARD', KEYS[i])
end
local band_keys = {}
for _, key in pairs(bands.keys) do
  counts[1] = counts[1] + rcall('LLEN', key)
  band_keys[#band_keys + 1] = key
end
local active = 0
for i = 13, 12 + m do
  active = active + rcall('HLEN', KEYS[i])
end
counts[1] = counts[1] + rcall('LLEN', KEYS[12]) + rcall('HLEN', bands.g.tasks)
counts[6] = active
counts[7] = rcall('HLEN', KEYS[7])
local release = {}
for i = 13 + m, bands.first - 1 do
  if rcall('GET', KEYS[i]) == ARGV[i - m - 11] then
    release[#release + 1] = KEYS[i]
  end
end
-- HGETALL alternates id and references.
local dependents = rcall('HGETALL', KEYS[9])
if #dependents > 0 then want(KEYS[10], 'list') end
local gen = rcall('HGET', KEYS[11], 'g')
if gen and not string.find(gen, '^%d+$') then corrupt(KEYS[11], 'holds a non-integer index field') end
-- Nothing below can fail.
for i = 1, #release do redis.call('DEL', release[i]) end
for i = 1, #dependents, 2000 do
  local news = {}
  for j = i, math.min(i + 1999, #dependents), 2 do
    news[#news + 1] = 'F' .. dependents[j] .. dependents[j + 1]
  end
  redis.call('RPUSH', KEYS[10], unpack(news))
end
redis.call('HSET', KEYS[11], 'g', (tonumber(gen) or 0) + 1)
-- The new generation starts at the first level again (index.lua's default).
redis.call('HDEL', KEYS[11], 'l', 's', 'n')
-- The leases set stays: a server that fetched after the caller listed the lease holders keeps
-- its lease entry, so its tasks stay recoverable. Lapsed leases of empty hashes are dropped by
-- the recoverer.
redis.call('DEL', unpack(KEYS, 1, 5))
redis.call('DEL', bands.zset, unpack(band_keys))
redis.call('DEL', KEYS[7], KEYS[8], KEYS[9], KEYS[12])
local g = bands.g
redis.call('DEL', g.tasks, g.seq, g.turn, g.wait, g.full, g.run)
if m > 0 then redis.call('DEL', unpack(KEYS, 13, 12 + m)) end
counts[#counts + 1] = tonumber(gen) or 0
return counts
