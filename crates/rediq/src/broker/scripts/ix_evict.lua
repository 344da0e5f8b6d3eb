-- ix_evict.lua — forget the oldest finished ids: the bound on what the index remembers of
-- completed tasks (the finished list holds them in completion order).
--
-- KEYS[1]   finished list (16 id bytes + 6 bytes of finish time, Unix ms, oldest first)
-- then      the index block of the k ids of ARGV (index.lua)
--
-- ARGV[1]   k, the number of entries the caller read from the head of the list
-- ARGV[2 .. 1+k]  those entries
-- ARGV[2+k] retention in ms: entries finished longer ago go
-- ARGV[3+k] keep: the most entries the list may hold (the oldest beyond it go)
-- then      the index block's descriptor
--
-- Returns how many entries went (from the head), or -1 when the head is no longer what the
-- caller read (read again). An id leaves the index only when its entry there is this finish:
-- its done-hash entry 'C' followed by the same 6-byte time (its bucket entry 'L' goes with
-- it), or its bucket entry 'F' (or 'C', as earlier versions wrote it) and the same time.
-- An id that is live again (re-run, or enqueued again after it was forgotten) or that finished
-- again since keeps its entry; only the list entry goes.
--
-- Faults (prelude.lua): the list, the done hash and the buckets of the ids not completed are
-- read before the first removal; the removal from the buckets comes first and is put back when
-- a bucket refuses (ix_del_all), so a wrong-type key raises CORRUPT naming it and nothing
-- changes. Cost: one HMGET of the done hash per call and one HDEL per id (plus one HGET per
-- id that was not completed), where each id cost two reads and a removal before.
local ix = ix_open()
local k = tonumber(ARGV[1])
local head = rcall('LRANGE', KEYS[1], 0, k - 1)
if #head < k then return -1 end
for i = 1, k do
  if head[i] ~= ARGV[1 + i] then return -1 end
end
local len = redis.call('LLEN', KEYS[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - tonumber(ARGV[2 + k])
local keep = tonumber(ARGV[3 + k])
local e = 0
for i = 1, k do
  local at = 0
  for j = 17, 22 do at = at * 256 + (string.byte(head[i], j) or 0) end
  if at < cutoff or len - (i - 1) > keep then e = i else break end
end
-- The done entries of the ids that go, in one read (a done hash of the wrong type raises
-- CORRUPT before any removal).
local ids = {}
for i = 1, e do ids[i] = str_sub(head[i], 1, 16) end
local done = ix_done_of(ix, ids)
local drop_at, drop, olds, undone = {}, {}, {}, {}
for i = 1, e do
  local at = str_sub(head[i], 17, 22)
  if done[i] == 'C' .. at then
    -- Completed at this time: the done entry goes, and the bucket's 'L' (or nothing, for a
    -- task that was never indexed) with it, unread: a completed id is never live, dead or
    -- cancelled again while the done hash holds it (an enqueue or a rerun of it finds it
    -- known; kill, cancel and dep_fail act only on a task found where a live one is).
    undone[#undone + 1] = ids[i]
    drop_at[#drop_at + 1], drop[#drop + 1], olds[#olds + 1] = i, ids[i], 'L'
  else
    local v = rcall('HGET', ix_key(ix, i, ids[i]), ids[i])
    if v == 'C' .. at or v == 'F' .. at then
      drop_at[#drop_at + 1], drop[#drop + 1], olds[#olds + 1] = i, ids[i], v
    end
  end
end
-- First removal: the bucket entries (put back if a bucket refuses); nothing below can fail.
ix_del_all(ix, drop_at, drop, olds)
for from = 1, #undone, 4000 do
  redis.call('HDEL', ix.done, unpack(undone, from, math.min(from + 3999, #undone)))
end
if e > 0 then redis.call('LTRIM', KEYS[1], e, -1) end
ix_close(ix)
return e
