-- fetch.lua — lease up to N pending tasks to a server (pending -> active).
--
-- KEYS[1] foreign list    (pending members that are no record of ours, on their way to the
--                          dead-letter queue: see below)
-- KEYS[2] leases zset     (member = server id, score = lease deadline in Unix ms, Redis clock)
-- KEYS[3] the server's active hash (field = task id,
--                          value = 16-digit fencing token .. "|" .. record)
-- KEYS[4] token counter   (one fencing token per fetch; every delivery of a task gets a new one)
-- KEYS[5] wake marker zset
-- KEYS[6] paused flag (while it exists the queue hands out nothing)
-- then    the band block (bands.lua): every band of the bands zset must be in it
--
-- ARGV[1] N, the most tasks to take
-- ARGV[2] lease duration in ms
-- ARGV[3] server id
-- ARGV[4] the band block's descriptor
--
-- Tasks are taken from the head of the lowest band first (priority 0 runs first), then the
-- next band, until N. The lease belongs to the server, not to each task: one ZADD per fetch
-- instead of one entry per task. The server's heartbeat extends it; when it lapses, the
-- recoverer takes back everything in the server's active hash.
-- Returns {token, {record, ...}}, or {} when the queue is empty or paused; a third element
-- {member, ...} lists members that are no record of ours (shorter than the head, or another
-- format byte): they are not leased, since two of them could share one active field (their
-- "id") and overwrite each other, but moved to the foreign list, from which the broker sets
-- them aside one by one (bury.lua; the janitor finishes what a crash interrupted). When tasks
-- remain the wake marker is set again, so that a second blocked server wakes up too.
--
-- Faults (prelude.lua): every step that can fail (reading the bands, INCR of the token counter,
-- ZADD of the lease, HSET into the active hash, the foreign list's type) comes before the tasks
-- leave their band (LRANGE first, LTRIM last), so a key of the wrong type or a non-integer
-- counter raises CORRUPT naming the key and nothing moves (at most the token counter or the
-- lease advanced). A wrong-type wake marker is replaced.
-- (N = 0 asks for nothing: LRANGE 0 -1 below would read whole bands.)
if tonumber(ARGV[1]) < 1 or redis.call('EXISTS', KEYS[6]) == 1 then return {} end
local b = bands_open(#KEYS, #ARGV)
local live = bands_all_live(b)
if #live == 0 then return {} end

-- Read (LRANGE) band after band; nothing leaves a band before every check has passed.
local need = tonumber(ARGV[1])
local out, taken, last = {}, {}, 0
for i = 1, #live do
  local p = live[i]
  local got = rcall('LRANGE', b.keys[p], 0, need - 1)
  taken[#taken + 1] = { p, #got, #got < need }
  for j = 1, #got do out[#out + 1] = got[j] end
  need = need - #got
  last = i
  if need == 0 then break end
end
if #out == 0 then
  for i = 1, #taken do redis.call('ZREM', b.zset, tostring(taken[i][1])) end
  return {}
end

local leased, foreign = out, nil
for i = 1, #out do
  local record = out[i]
  -- A record is the format byte 1, the priority and 16 id bytes, then a body.
  if str_byte(record, 1) ~= 1 or #record < 19 then
    if not foreign then
      foreign, leased = {}, {}
      for j = 1, i - 1 do leased[j] = out[j] end
    end
    foreign[#foreign + 1] = record
  elseif foreign then
    leased[#leased + 1] = record
  end
end
if foreign then want(KEYS[1], 'list') end

local token = rcall('INCR', KEYS[4])
local t = redis.call('TIME')
rcall('ZADD', KEYS[2], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2]), ARGV[3])
local prefix = string.format('%016d', token) .. '|'
local active = {}
for i = 1, #leased do
  active[2 * i - 1] = str_sub(leased[i], 3, 18)
  active[2 * i] = prefix .. leased[i]
end
if #active > 0 then rcall('HSET', KEYS[3], unpack(active)) end
-- Nothing below can fail: the bands were read as lists above.
for i = 1, #taken do
  local p, n, emptied = taken[i][1], taken[i][2], taken[i][3]
  if n > 0 then redis.call('LTRIM', b.keys[p], n, -1) end
  if emptied then redis.call('ZREM', b.zset, tostring(p)) end
end
if foreign then
  for i = 1, #foreign, 4000 do
    redis.call('RPUSH', KEYS[1], unpack(foreign, i, math.min(i + 3999, #foreign)))
  end
end
-- Tasks remain when the last band read was not emptied or a band after it is live.
if not taken[#taken][3] or last < #live then
  wake(KEYS[5])
end
if foreign then return {token, leased, foreign} end
return {token, out}
