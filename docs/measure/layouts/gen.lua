-- gen.lua — writes synthetic tasks for the layout measurements (docs/measure/layouts).
--
-- ARGV[1] what:  zset | list | stream_auto | stream_ms | index | fifo | sample
-- ARGV[2] i0, the first task number (0-based); ARGV[3] n, how many tasks from i0
-- ARGV[4] k: bands (zset ignores it, always one key), or B buckets (index), or unused
-- ARGV[5] key prefix (default "rediq:{q}:")
--
-- Task i has the record (57 bytes):
--   byte 1 = 0x01 (format), byte 2 = priority 50,
--   16 id bytes, UUIDv7-like: 6 bytes big-endian Unix ms (T0 + floor(i / 8), i.e. ids created at
--   8000 per second), then 10 random bytes (version nibble 7, variant bits 10),
--   39 bytes MessagePack body = {"t":"bench","p":<bin 26 bytes '{"n":12,"s":"hello world"}'>}.
-- The random bytes come from math.random seeded with i0 + 1, so a call with the same i0 and n
-- writes the same ids again (the index and the pending layout get the same ids); callers use
-- chunks starting at multiples of 8.
--
-- Keys: zset  <pre>p            member = record, score = 50 * 2^42 + i + 1
--       list  <pre>p:<band>     RPUSH record, band = i mod k
--       stream_auto / stream_ms <pre>s:<band>  XADD * / XADD <ms>-<i mod 8>, field "r" = record
--       index <pre>ix:<b>       HSET id 'P', b = (last 4 id bytes as uint32) mod k
--       fifo  <pre>fin          RPUSH id .. 6-byte ms (22 bytes)
--       sample <pre>samp:<c>    SET to the concatenated ids of tasks i0 + 100c .. i0 + 100c + 99
--                               (c = 0 .. n/100 - 1), read by ixops.lua
-- Returns the number of tasks written.
local what, i0, n, k = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4] or '1')
local pre = ARGV[5] or 'rediq:{q}:'
local T0 = 1764600000000
local BODY = '\130\161t\165bench\161p\196\026{"n":12,"s":"hello world"}'
assert(#BODY == 39, 'body is ' .. #BODY .. ' bytes')
math.randomseed(i0 + 1)
local rnd = math.random
local char, floor = string.char, math.floor

local function ms_bytes(ms)
  local t = {}
  for b = 5, 0, -1 do t[#t + 1] = char(floor(ms / 256 ^ b) % 256) end
  return table.concat(t)
end
local function make_id(i)
  local ms = T0 + floor(i / 8)
  return ms_bytes(ms) .. char(0x70 + rnd(0, 15), rnd(0, 255), 0x80 + rnd(0, 63), rnd(0, 255),
    rnd(0, 255), rnd(0, 255), rnd(0, 255), rnd(0, 255), rnd(0, 255), rnd(0, 255)), ms
end
local function bucket(id)
  local a, b, c, d = string.byte(id, 13, 16)
  return ((a * 16777216) + (b * 65536) + (c * 256) + d) % k
end

local batches = {}
local function add(key, ...)
  local t = batches[key]
  if not t then t = {}; batches[key] = t end
  for _, v in ipairs({...}) do t[#t + 1] = v end
  return t
end
local function flush(cmd, key, t)
  if #t > 0 then redis.call(cmd, key, unpack(t)) end
  batches[key] = {}
end

for i = i0, i0 + n - 1 do
  local id, ms = make_id(i)
  local rec = '\1\50' .. id .. BODY
  if what == 'zset' then
    local t = add(pre .. 'p', string.format('%d', 50 * 4398046511104 + i + 1), rec)
    if #t >= 2000 then flush('ZADD', pre .. 'p', t) end
  elseif what == 'list' then
    local key = pre .. 'p:' .. (i % k)
    local t = add(key, rec)
    if #t >= 1000 then flush('RPUSH', key, t) end
  elseif what == 'stream_auto' then
    redis.call('XADD', pre .. 's:' .. (i % k), '*', 'r', rec)
  elseif what == 'stream_ms' then
    redis.call('XADD', pre .. 's:' .. (i % k), string.format('%d-%d', ms, i % 8), 'r', rec)
  elseif what == 'index' then
    redis.call('HSET', pre .. 'ix:' .. bucket(id), id, 'P')
  elseif what == 'fifo' then
    local t = add(pre .. 'fin', id .. ms_bytes(T0 + 3600000 + i))
    if #t >= 1000 then flush('RPUSH', pre .. 'fin', t) end
  elseif what == 'sample' then
    local t = add(pre .. 'samp:' .. floor((i - i0) / 100), id)
    if #t == 100 then redis.call('SET', pre .. 'samp:' .. floor((i - i0) / 100), table.concat(t)); batches[pre .. 'samp:' .. floor((i - i0) / 100)] = nil end
  else
    return redis.error_reply('unknown what ' .. what)
  end
end
for key, t in pairs(batches) do
  if what == 'zset' then flush('ZADD', key, t)
  elseif what == 'list' or what == 'fifo' then flush('RPUSH', key, t) end
end
return n
