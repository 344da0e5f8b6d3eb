-- KEYS[1] target zset; ARGV[1] n; ARGV[2] "seq" (score prio*2^42+seq) or "band" (score prio*2^42)
-- ARGV[3] rate per second (ids' creation times spread at this rate); ARGV[4] seed
math.randomseed(tonumber(ARGV[4]))
local n, rate = tonumber(ARGV[1]), tonumber(ARGV[3])
local t0 = 1764600000000
local payload = string.rep('p', 42)
local batch = {}
for i = 1, n do
  local ms = t0 + math.floor((i - 1) * 1000 / rate)
  local id = {}
  for b = 5, 0, -1 do id[#id + 1] = string.char(math.floor(ms / 256 ^ b) % 256) end
  for b = 1, 10 do id[#id + 1] = string.char(math.random(0, 255)) end
  id = table.concat(id)
  local prio = 50
  local rec = '\1' .. string.char(prio) .. id .. payload
  local score = prio * 4398046511104
  if ARGV[2] == 'seq' then score = score + i end
  if ARGV[2] == 'ms' then score = score + ms end
  batch[#batch + 1] = string.format('%d', score)
  batch[#batch + 1] = rec
  if #batch >= 2000 then redis.call('ZADD', KEYS[1], unpack(batch)); batch = {} end
end
if #batch > 0 then redis.call('ZADD', KEYS[1], unpack(batch)) end
return redis.call('ZCARD', KEYS[1])
