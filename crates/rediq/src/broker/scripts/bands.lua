-- bands.lua — where pending tasks live, prepended (after prelude.lua) to every script that
-- writes, pops or removes pending tasks.
--
-- Why lists: a pending task is one list element, its record, in the list of its priority band
-- `rediq:{q}:pending:<p>` (p = the record's priority byte, 0..100). Redis keeps list elements in
-- listpack nodes of a few kilobytes, so an element costs its record and a few bytes, where a
-- sorted-set member costs ~50 B of skiplist overhead before any data. New tasks are pushed at
-- the tail (RPUSH: FIFO among equal priorities), tasks given back at the head (LPUSH: they were
-- at the front already), and fetch.lua takes from the head of the lowest non-empty band.
--
-- The bands zset `rediq:{q}:bands` (member = p as text, score = p) names the bands whose list
-- may hold tasks. Invariant: every non-empty band list is in it. Every push adds its band (an
-- idempotent ZADD, so a band whose zset entry was lost, say with a corrupt zset deleted by
-- hand, is seen again at its next push); fetch.lua removes a band it emptied (or found
-- empty).
--
-- Every key a script touches is in KEYS, so the caller passes the band keys it expects the
-- script to touch in a band block, right before the index block (or at the end of KEYS and
-- ARGV when the script has none):
--   KEYS[..] the bands zset, the group block (groups.lua: a task of a group goes to its group,
--            not to a band), then one key per band of the block
--   ARGV[..] "p1,p2,...": the block's bands, in KEYS order ("" for none)
-- A script that needs a band the block lacks fails with "BANDS p ..." before it writes
-- anything; the caller adds those bands and calls again (broker/bands.rs).

-- The priority band of a record: its second byte (see record.rs), at most 100; 50 for a
-- member too short to carry one (garbage, which fetch.lua sets aside).
local function band_of(record)
  local p = string.byte(record, 2) or 50
  if p > 100 then p = 100 end
  return p
end

-- Opens the band block whose descriptor is ARGV[aend] and whose last key is KEYS[kend].
local function bands_open(kend, aend)
  local d = ARGV[aend]
  if not d or not string.find(d, '^[%d,]*$') then
    error({ err = 'ERR band block "' .. tostring(d) .. '" is malformed' })
  end
  local list = {}
  for p in string.gmatch(d, '%d+') do list[#list + 1] = tonumber(p) end
  local first = kend - #list - GROUP_KEYS
  local b = { zset = KEYS[first], first = first, keys = {}, miss = {}, missed = {}, missing = false,
    g = groups_open(first + 1) }
  for i = 1, #list do b.keys[list[i]] = KEYS[first + GROUP_KEYS + i] end
  return b
end

-- The key of band p, or nil (noted as missing, once) when the block lacks it.
local function band_key(b, p)
  local key = b.keys[p]
  if not key and not b.missed[p] then
    b.missed[p] = true
    b.miss[#b.miss + 1] = p
    b.missing = true
  end
  return key
end

-- Fails with "BANDS p ..." when a band was missing: call before the first write.
local function bands_check(b)
  if b.missing then error({ err = 'BANDS ' .. table.concat(b.miss, ' ') }) end
end

-- The bands that may hold tasks, lowest first, as numbers (a read: a wrong-type zset or a
-- member that is no band raises CORRUPT). Used through bands_all_live.
local function bands_live(b)
  local live = rcall('ZRANGE', b.zset, 0, -1)
  for i = 1, #live do
    local p = tonumber(live[i])
    if not p or p < 0 or p > 100 or p % 1 ~= 0 then
      corrupt(b.zset, 'holds a member that is no band: ' .. live[i])
    end
    live[i] = p
  end
  return live
end

-- The live bands, failing with "BANDS p ..." unless the block has every one of them (for the
-- scripts that read or remove whatever is pending: fetch, flush, oldest).
local function bands_all_live(b)
  local live = bands_live(b)
  for i = 1, #live do band_key(b, live[i]) end
  bands_check(b)
  return live
end

-- Raises unless the list of band p and the bands zset can take a push: call before the first
-- write, with every band the script will push to.
local function bands_want(b, p)
  want(b.keys[p], 'list')
  if not b.zset_checked then
    want(b.zset, 'zset')
    b.zset_checked = true
  end
end

-- Band p will be pushed to: checked (bands_want), or noted missing for bands_check.
local function bands_ready(b, p)
  if band_key(b, p) then bands_want(b, p) end
end

-- A record will be pushed: its group is readied (groups_ready), or its band (bands_ready).
local function pend_ready(b, record)
  local name = group_of(record)
  if name then
    groups_load()
    groups_ready(b.g, name)
  else
    bands_ready(b, band_of(record))
  end
end

-- Adds a record to groups[p], the records bound for band p, readying band p the first time it
-- comes up; a record of a group is noted for its group instead (at its head when `front`),
-- and written by groups_flush(b.g).
local function bands_group(b, groups, p, record, front)
  local name = group_of(record)
  if name then
    groups_load()
    groups_add(b.g, name, record, front)
    return
  end
  local g = groups[p]
  if not g then
    g = {}
    groups[p] = g
    bands_ready(b, p)
  end
  g[#g + 1] = record
end

-- Pushes records onto band p (cmd 'RPUSH' = tail in this order; 'LPUSH' = head, where they
-- end up in reverse order); checked by bands_want.
local function bands_push(b, p, cmd, records)
  for i = 1, #records, 4000 do
    redis.call(cmd, b.keys[p], unpack(records, i, math.min(i + 3999, #records)))
  end
  redis.call('ZADD', b.zset, p, tostring(p))
end

-- Pushes one record at the tail of its band or group (readied by pend_ready).
local function pend_push(b, record)
  local name = group_of(record)
  if name then
    groups_load()
    groups_add(b.g, name, record, false)
    groups_flush(b.g)
  else
    bands_push(b, band_of(record), 'RPUSH', { record })
  end
end

-- Puts tasks given back (shutdown, a lapsed lease) at the front of band p, in order of id among
-- themselves and among the tasks given back before them: each goes before the first of the
-- band's head elements whose id is greater (LINSERT), looking at most `window` elements deep
-- (past them the band is in FIFO order, so they belong first). Ids are time-ordered, so the
-- head of the band stays oldest first however many calls gave tasks back. Checked by
-- bands_want; rare, so it may cost O(window) per task.
local function bands_give_back(b, p, records, window)
  table.sort(records, function(x, y) return string.sub(x, 3, 18) < string.sub(y, 3, 18) end)
  local key = b.keys[p]
  local head = redis.call('LRANGE', key, 0, window - 1)
  local deep = #head == window
  for _, r in ipairs(records) do
    local id = string.sub(r, 3, 18)
    local at
    for j = 1, #head do
      if string.sub(head[j], 3, 18) > id then at = j break end
    end
    if at then
      redis.call('LINSERT', key, 'BEFORE', head[at], r)
      table.insert(head, at, r)
    elseif deep then
      redis.call('LINSERT', key, 'AFTER', head[#head], r)
      head[#head + 1] = r
    else
      redis.call('RPUSH', key, r)
      head[#head + 1] = r
    end
  end
  redis.call('ZADD', b.zset, p, tostring(p))
end
