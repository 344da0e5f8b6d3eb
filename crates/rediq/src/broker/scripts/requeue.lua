-- requeue.lua — leased tasks go back to the front of pending (active -> pending).
-- Used at graceful shutdown (the attempt does not count: the record is unchanged) and by the
-- recoverer when a server's lease lapsed (the record comes with its attempt count raised).
--
-- KEYS[1] the server's active hash
-- KEYS[2] leases zset
-- KEYS[3] pending zset
-- KEYS[4] wake marker zset
-- KEYS[5] failed counter (a lapsed lease counts a failed attempt per task given back)
--
-- ARGV[1] "1" = only if the server's lease has lapsed (recoverer), "0" = any (shutdown)
-- ARGV[2] server id (owner of KEYS[1])
-- ARGV[3] n; then 3 values per task: id, 16-digit fencing token, new record ("" = keep it)
--
-- A task put back goes to the front of its priority: score priority * 2^42 (new tasks get
-- priority * 2^42 + sequence, sequence >= 1), and tasks put back with equal priority are ordered
-- by their record, whose head is the time-ordered id: oldest first.
-- Returns the 1-based positions of the tasks that went back; entries whose token is stale are
-- left alone. With
-- ARGV[1] = "1" nothing happens while the lease is still valid, and a lapsed lease whose active
-- hash is empty afterwards is removed (the server is gone and owns nothing).
--
-- Faults (prelude.lua): the entries are read, the failed counter checked and the tasks written
-- to pending before they leave the active hash; a wrong-type key or a non-integer counter raises
-- CORRUPT naming the key and every task stays active. A wrong-type wake marker is replaced.
local now
if ARGV[1] == '1' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local deadline = rcall('ZSCORE', KEYS[2], ARGV[2])
  if deadline and tonumber(deadline) > now then return {} end
end
local n = tonumber(ARGV[3])
local moved, back, which = {}, {}, {}
for i = 1, n do
  local b = 4 + (i - 1) * 3
  local id = ARGV[b]
  local v = rcall('HGET', KEYS[1], id)
  if v and string.sub(v, 1, 16) == ARGV[b + 1] then
    local bar = string.find(v, '|', 17, true)
    local record = ARGV[b + 2]
    if record == '' then record = string.sub(v, bar + 1) end
    moved[#moved + 1] = id
    which[#which + 1] = i
    back[#back + 1] = string.format('%d', (string.byte(record, 2) or 50) * 4398046511104)
    back[#back + 1] = record
  end
end
if #moved > 0 then
  if now then counter(KEYS[5]) end
  rcall('ZADD', KEYS[3], unpack(back))
  -- Nothing below can fail.
  redis.call('HDEL', KEYS[1], unpack(moved))
  wake(KEYS[4])
  if now then redis.call('INCRBY', KEYS[5], #moved) end
end
if now and rcall('HLEN', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return which
