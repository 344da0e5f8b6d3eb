-- Looks up one id (ARGV[2], hex) by ARGV[1] method; KEYS[1] pending zset, KEYS[2] index key/prefix.
local hex = ARGV[2]
local id = (hex:gsub('..', function(h) return string.char(tonumber(h, 16)) end))
local m = ARGV[1]
if m == 'noop' then return 0 end
if m == 'zscan' then
  local pat = {'??'}
  for i = 1, #id do pat[#pat + 1] = '\\' .. string.sub(id, i, i) end
  pat[#pat + 1] = '*'
  pat = table.concat(pat)
  local cursor = '0'
  repeat
    local r = redis.call('ZSCAN', KEYS[1], cursor, 'MATCH', pat, 'COUNT', 1000)
    cursor = r[1]
    for i = 1, #r[2], 2 do if string.sub(r[2][i], 3, 18) == id then return 1 end end
  until cursor == '0'
  return 0
elseif m == 'lex' then
  -- every priority band present, found by score
  local found = 0
  local lo = '-inf'
  while true do
    local first = redis.call('ZRANGEBYSCORE', KEYS[1], lo, '+inf', 'LIMIT', 0, 1)
    if #first == 0 then break end
    local p = string.byte(first[1], 2)
    local pre = '\1' .. string.char(p) .. id
    local hit = redis.call('ZRANGEBYLEX', KEYS[1], '[' .. pre, '(' .. pre .. '\255', 'LIMIT', 0, 1)
    if #hit > 0 then found = 1 break end
    lo = '(' .. string.format('%d', p * 4398046511104 + 4398046511103)
  end
  return found
elseif m == 'ms' then
  local ms = 0
  for b = 1, 6 do ms = ms * 256 + string.byte(id, b) end
  local lo = '-inf'
  while true do
    local first = redis.call('ZRANGEBYSCORE', KEYS[1], lo, '+inf', 'LIMIT', 0, 1)
    if #first == 0 then return 0 end
    local p = string.byte(first[1], 2)
    local s = string.format('%d', p * 4398046511104 + ms)
    local same = redis.call('ZRANGEBYSCORE', KEYS[1], s, s)
    for i = 1, #same do if string.sub(same[i], 3, 18) == id then return 1 end end
    lo = '(' .. string.format('%d', p * 4398046511104 + 4398046511103)
  end
elseif m == 'hash' then
  return redis.call('HEXISTS', KEYS[2], id)
else
  local ms = 0
  for b = 1, 6 do ms = ms * 256 + string.byte(id, b) end
  local s
  if m == 'slots' then
    s = redis.call('HGET', KEYS[2] .. math.floor(ms / 3600000), tostring(math.floor(ms / 10) % 360000))
  else
    s = redis.call('GET', KEYS[2] .. math.floor(ms / 1000))
  end
  if not s then return 0 end
  local from = 1
  while true do
    local p = string.find(s, id, from, true)
    if not p then return 0 end
    if (p - 1) % 16 == 0 then return 1 end
    from = p + 1
  end
end
