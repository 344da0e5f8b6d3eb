-- requeue.lua — leased tasks go back to the front of pending (active -> pending).
-- Used at graceful shutdown (the attempt does not count: the record is unchanged) and by the
-- recoverer when a server's lease lapsed (the record comes with its attempt count raised).
--
-- KEYS[1] the server's active hash
-- KEYS[2] leases zset
-- KEYS[3] wake marker zset
-- KEYS[4] failed counter (a lapsed lease counts a failed attempt per task given back)
-- KEYS[5] daily counts hash (prelude.lua, daily_add: 'f:<day>', the same failed attempts)
-- then    the band block (bands.lua) of the bands the tasks go back to
--
-- ARGV[1] "1" = only if the server's lease has lapsed (recoverer), "0" = any (shutdown)
-- ARGV[2] server id (owner of KEYS[1])
-- ARGV[3] n; then 3 values per task: id, 16-digit fencing token, new record ("" = keep it)
-- then    the band block's descriptor
--
-- A task put back goes to the front of its band (or group): it was taken from the front. Tasks put back
-- are ordered by id among themselves, also across calls (bands_give_back): oldest first.
-- Returns the 1-based positions of the tasks that went back; entries whose token is stale are
-- left alone. With
-- ARGV[1] = "1" nothing happens while the lease is still valid, and a lapsed lease whose active
-- hash is empty afterwards is removed (the server is gone and owns nothing).
--
-- Faults (prelude.lua): the entries are read, the failed counters and band lists checked and the
-- tasks written to their bands before they leave the active hash; a wrong-type key or a non-integer counter raises
-- CORRUPT naming the key and every task stays active. A wrong-type wake marker is replaced.
local bands = bands_open(#KEYS, #ARGV)
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
    bands_group(bands, back, band_of(record), record, true)
    local was = string.sub(v, bar + 1)
    if group_of(was) then
      groups_load()
      groups_leaving(bands.g, was)
    end
  end
end
bands_check(bands)
if #moved > 0 then
  if now then
    counter(KEYS[4])
    daily_check(KEYS[5], 'f', day_of(now))
  end
  -- Nothing below can fail.
  for p, records in pairs(back) do bands_give_back(bands, p, records, 64) end
  if bands.g.order then groups_flush(bands.g) end
  if bands.g.rel_order then groups_release(bands.g) end
  redis.call('HDEL', KEYS[1], unpack(moved))
  wake(KEYS[3])
  if now then
    redis.call('INCRBY', KEYS[4], #moved)
    daily_add(KEYS[5], 'f', day_of(now), #moved)
  end
end
if now and rcall('HLEN', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return which
