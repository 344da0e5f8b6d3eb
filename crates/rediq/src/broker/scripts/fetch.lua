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
-- KEYS[7] limits hash     (fields `concurrency`, `rate`, `period_ms`; see broker/limits.rs)
-- KEYS[8] rate bucket     (string "tokens|Unix ms": the rate limit's token bucket)
-- KEYS[9 .. 8+h] the active hashes of the other servers holding a lease on the queue, as the
--         caller last knew them (only read under a concurrency limit)
-- then    the band block (bands.lua): every band of the bands zset must be in it
--
-- ARGV[1] N, the most tasks to take
-- ARGV[2] lease duration in ms
-- ARGV[3] server id
-- ARGV[4] h, then h server ids (ARGV[5 .. 4+h]), the owners of KEYS[9 .. 8+h] in order
-- then    the band block's descriptor
--
-- Limits (flow control): with a concurrency limit C, at most C tasks of the queue are leased
-- at once across every server whose lease has not lapsed (a lapsed server's tasks are being
-- taken back: its slots count no more). The script counts them itself, HLEN of each live
-- holder's active hash, so the check and the lease are one atomic step and exact under races;
-- a live holder whose active hash the caller did not pass fails the call with
-- "HOLDERS id ..." (every live holder) before anything is written, and the caller calls again
-- with them. With a rate limit of R per P ms, a token bucket (R/P tokens per ms, holding at
-- most max(1, R/10)) allows one start per token, across every server. When the limits allow
-- nothing while tasks wait, the reply is {"L", ms, held by concurrency, held by rate}: try
-- again in about that long. A reply that leased tasks while a limit held some back carries
-- the same two counts after its foreign list ({} when there is none): the tasks asked for that
-- each limit refused (for the metrics).
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

local need = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lim = rcall('HMGET', KEYS[7], 'concurrency', 'rate', 'period_ms')
-- A limit field is a positive integer of at most 15 digits (broker/limits.rs writes no other),
-- checked before anything is written: anything else raises CORRUPT naming the limits hash.
local function limit(i, field)
  local v = lim[i]
  if not v then return nil end
  if #v > 15 or not string.find(v, '^[1-9]%d*$') then
    corrupt(KEYS[7], 'field ' .. field .. ' holds ' .. string.format('%q', v) .. ', not a positive integer')
  end
  return tonumber(v)
end
local conc, rate, period = limit(1, 'concurrency'), limit(2, 'rate'), limit(3, 'period_ms')
local bucket, held_c, held_r = nil, 0, 0
if conc then
  local h = tonumber(ARGV[4])
  local passed = {}
  for i = 1, h do passed[ARGV[4 + i]] = KEYS[8 + i] end
  local holders = rcall('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  local running, missing, alive = rcall('HLEN', KEYS[3]), false, {}
  for i = 1, #holders, 2 do
    local id = holders[i]
    if id ~= ARGV[3] and tonumber(holders[i + 1]) > now then
      alive[#alive + 1] = id
      if passed[id] then running = running + rcall('HLEN', passed[id]) else missing = true end
    end
  end
  if missing then error({ err = 'HOLDERS ' .. table.concat(alive, ' ') }) end
  if conc - running < need then
    held_c = need - math.max(0, conc - running)
    need = conc - running
  end
  -- Nothing to lease until a running task ends: poll again shortly.
  if need < 1 then return { 'L', 50, held_c, 0 } end
end
if rate and period then
  local cap = math.max(1, math.floor(rate / 10))
  local tokens, last = cap, now
  local v = rcall('GET', KEYS[8])
  if v then
    -- A bucket that does not parse is a full one (it only paces; nothing is lost).
    local tk, at = string.match(v, '^([%d.]+)|(%d+)$')
    tk, at = tonumber(tk), tonumber(at)
    if tk and at then tokens, last = tk, at end
  end
  tokens = math.min(cap, tokens + math.max(0, now - last) * rate / period)
  if math.floor(tokens) < need then
    held_r = need - math.floor(tokens)
    need = math.floor(tokens)
  end
  if need < 1 then
    return { 'L', math.max(1, math.ceil((1 - tokens) * period / rate)), held_c, held_r }
  end
  bucket = tokens
end

-- Read (LRANGE) band after band; nothing leaves a band before every check has passed.
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
rcall('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
local prefix = string.format('%016d', token) .. '|'
local active = {}
for i = 1, #leased do
  active[2 * i - 1] = str_sub(leased[i], 3, 18)
  active[2 * i] = prefix .. leased[i]
end
if #active > 0 then rcall('HSET', KEYS[3], unpack(active)) end
-- Nothing below can fail: the bands were read as lists above (SET replaces any type).
if bucket then
  redis.call('SET', KEYS[8], string.format('%.6f', bucket - #leased) .. '|' .. now,
    'PX', string.format('%d', math.max(1000, 2 * period)))
end
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
if held_c + held_r > 0 then return {token, leased, foreign or {}, held_c, held_r} end
if foreign then return {token, leased, foreign} end
return {token, out}
