-- fetch.lua — a fetch of up to n pending tasks for each candidate layout, doing what today's
-- fetch (crates/rediq/src/broker/scripts/fetch.lua) does around the pop: paused check, one
-- fencing token (INCR), TIME, the server's lease (ZADD), the record check and one HSET of
-- id -> 16-digit token .. "|" .. record into the server's active hash, a check whether tasks are
-- left, and the reply {token, records}. Only the pop differs between layouts.
--
-- KEYS[1] leases zset, KEYS[2] active hash, KEYS[3] token counter, KEYS[4] paused flag,
-- KEYS[5 ..] the pending keys, highest band first
-- ARGV[1] layout:
--   zset         ZRANGE 0 n-1, then ZREMRANGEBYRANK 0 #got-1 (today)
--   list         LPOP key n, band after band
--   list_rt      LRANGE 0 n-1, then LTRIM #got -1 (read before the write, like today's order)
--   stream_del   XRANGE - + COUNT n, then XDEL of the ids read
--   stream_trim  XRANGE - + COUNT n, then XTRIM MINID <last id + 1>
--   noop         nothing popped (the common part's fixed cost is then measured without tasks)
-- ARGV[2] n, ARGV[3] lease ms, ARGV[4] server id
if redis.call('EXISTS', KEYS[4]) == 1 then return {} end
local layout, n = ARGV[1], tonumber(ARGV[2])
local out, left = {}, 0
if layout == 'zset' then
  out = redis.call('ZRANGE', KEYS[5], 0, n - 1)
  if #out > 0 then redis.call('ZREMRANGEBYRANK', KEYS[5], 0, #out - 1) end
  left = redis.call('ZCARD', KEYS[5])
elseif layout == 'list' or layout == 'list_rt' then
  for k = 5, #KEYS do
    local want = n - #out
    if want == 0 then
      left = redis.call('LLEN', KEYS[k])
    else
      local got
      if layout == 'list' then
        got = redis.call('LPOP', KEYS[k], want)
      else
        got = redis.call('LRANGE', KEYS[k], 0, want - 1)
        if #got > 0 then redis.call('LTRIM', KEYS[k], #got, -1) end
      end
      if got then
        for j = 1, #got do out[#out + 1] = got[j] end
      end
      if #out == n then left = redis.call('LLEN', KEYS[k]) end
    end
    if left > 0 then break end
  end
elseif layout == 'stream_del' or layout == 'stream_trim' then
  for k = 5, #KEYS do
    local want = n - #out
    if want == 0 then
      left = redis.call('XLEN', KEYS[k])
    else
      local got = redis.call('XRANGE', KEYS[k], '-', '+', 'COUNT', want)
      if #got > 0 then
        if layout == 'stream_del' then
          local ids = {}
          for j = 1, #got do ids[j] = got[j][1] end
          redis.call('XDEL', KEYS[k], unpack(ids))
        else
          local ms, seq = string.match(got[#got][1], '^(%d+)%-(%d+)$')
          redis.call('XTRIM', KEYS[k], 'MINID', ms .. '-' .. string.format('%d', tonumber(seq) + 1))
        end
        for j = 1, #got do out[#out + 1] = got[j][2][2] end
      end
      if #out == n then left = redis.call('XLEN', KEYS[k]) end
    end
    if left > 0 then break end
  end
elseif layout ~= 'noop' then
  return redis.error_reply('unknown layout ' .. layout)
end
if #out == 0 and layout ~= 'noop' then return {} end

local token = redis.call('INCR', KEYS[3])
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[3]), ARGV[4])
local prefix = string.format('%016d', token) .. '|'
local active = {}
for i = 1, #out do
  local record = out[i]
  if string.byte(record, 1) == 1 and #record >= 19 then
    active[#active + 1] = string.sub(record, 3, 18)
    active[#active + 1] = prefix .. record
  end
end
if #active > 0 then redis.call('HSET', KEYS[2], unpack(active)) end
return {token, out}
