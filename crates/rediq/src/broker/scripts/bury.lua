-- bury.lua — one piece of garbage goes to the dead-letter queue (foreign -> dead, or an entry of
-- a lapsed server's active hash -> dead), as the stand-in record the broker built for it: type
-- rediq:undecodable, the raw bytes as payload, the reason as its error (record.rs).
--
-- KEYS[1] where it is: the foreign list (ARGV[1] = "pending": a pending member fetch.lua did
--         not lease because it is no record of ours, and moved there) or a server's active hash (ARGV[1] = "active": an
--         entry without the token|record shape, found by the recoverer)
-- KEYS[2] dead zset
-- KEYS[3] leases zset (read for "active" only)
--
-- ARGV[1] "pending" or "active"
-- ARGV[2] pending: the member exactly as stored; active: the field
-- ARGV[3] the dead-letter record
-- ARGV[4] active: the value exactly as read (the fence: an entry that changed meanwhile stays)
-- ARGV[5] active: the server id; the entry moves only while the server's lease has lapsed
--
-- Each piece moves on its own (garbage has no id of its own, so nothing is keyed by one), once:
-- a second server setting aside the same piece finds it gone. The dead set is trimmed by the
-- janitor. Returns 1, or 0 when the piece is no longer there (or the lease was renewed).
--
-- Faults (prelude.lua): the source is read and the dead set written before the piece leaves its
-- place; a wrong-type key raises CORRUPT naming it and nothing moves.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] == 'pending' then
  if not rcall('LPOS', KEYS[1], ARGV[2]) then return 0 end
else
  if rcall('HGET', KEYS[1], ARGV[2]) ~= ARGV[4] then return 0 end
  local deadline = rcall('ZSCORE', KEYS[3], ARGV[5])
  if deadline and tonumber(deadline) > now then return 0 end
end
rcall('ZADD', KEYS[2], now, ARGV[3])
-- Nothing below can fail.
if ARGV[1] == 'pending' then
  redis.call('LREM', KEYS[1], 1, ARGV[2])
else
  redis.call('HDEL', KEYS[1], ARGV[2])
end
return 1
