-- cancel.lua — a task is cancelled: removed, never retried (pending/delayed/retry -> gone,
-- waiting for dependencies -> gone, or active -> gone once the server running it has dropped its
-- handler). Tasks that depend on it fail ("dependency <id> failed") through the outbox.
--
-- KEYS[1] where the task is: its band's list (ARGV[1] = "pending", bands.lua), its group's
--         tasks hash (ARGV[1] = "grouped", groups.lua), the delayed or
--         retry zset (ARGV[1] = "queued"), the waiting hash (ARGV[1] = "blocked"), or the active hash of the server running it
--         (ARGV[1] = "active")
-- KEYS[2] cancelled counter
-- KEYS[3] failed ids zset (id -> time)
-- KEYS[4] dependents hash (id -> references of the tasks that depend on it)
-- KEYS[5] outbox list
-- KEYS[6] needs hash (the dependencies a waiting task still waits for)
-- KEYS[7] finished list (id + finish time: the id index forgets the task after it)
-- KEYS[8..15] the group block (groups.lua)
-- KEYS[16] (optional) the task's unique-key lock, released when it still names this task
-- then    the index block of the task's id (index.lua): the id is marked 'F'
--
-- ARGV[1] "pending", "grouped", "queued", "blocked" or "active"
-- ARGV[2] pending, grouped, queued: the record exactly as stored; blocked, active: the task id
--         (16 bytes)
-- ARGV[3] the task id (pending, queued), the record as read (blocked), or the 16-digit fencing token
--         (active)
-- ARGV[4] grouped: the task's field in the group's tasks hash
-- then    the index block's descriptor
--
-- Returns 1, or 0 when the task is no longer there (it moved on meanwhile, or the token is stale).
-- A pending task is found (LPOS) and removed (LREM) in its band's list: both walk the list from
-- its head, so cancelling a pending task costs O(its position in the band). A band it leaves
-- empty stays in the bands zset until fetch.lua finds it empty.
--
-- Faults (prelude.lua): the task is found, the lock, dependents and counters read and checked,
-- and the failure record written before the task leaves its place; a wrong-type key or a
-- non-integer counter raises CORRUPT naming the key and nothing moves.
local ix = ix_open()
local lock = ix.base >= 16 and KEYS[16] or nil
local g = groups_open(8)
local id, gs, gname
if ARGV[1] == 'pending' then
  if not rcall('LPOS', KEYS[1], ARGV[2]) then return 0 end
  id = ARGV[3]
elseif ARGV[1] == 'grouped' then
  if rcall('HGET', KEYS[1], ARGV[4]) ~= ARGV[2] then return 0 end
  id = ARGV[3]
  gname = group_of(ARGV[2])
  if not gname then return 0 end
  groups_load()
  gs = group_state(g, gname)
  want(g.turn, 'zset')
  want(g.full, 'set')
elseif ARGV[1] == 'queued' then
  if not rcall('ZSCORE', KEYS[1], ARGV[2]) then return 0 end
  id = ARGV[3]
elseif ARGV[1] == 'blocked' then
  if rcall('HGET', KEYS[1], ARGV[2]) ~= ARGV[3] then return 0 end
  id = ARGV[2]
else
  local v = rcall('HGET', KEYS[1], ARGV[2])
  if not v or string.sub(v, 1, 16) ~= ARGV[3] then return 0 end
  id = ARGV[2]
  if group_of(string.sub(v, 18)) then
    groups_load()
    groups_leaving(g, string.sub(v, 18))
  end
end
local release = lock and rcall('GET', lock) == id
local refs = rcall('HGET', KEYS[4], id)
if ARGV[1] == 'blocked' then want(KEYS[6], 'hash') end
if refs then want(KEYS[5], 'list') end
want(KEYS[7], 'list')
counter(KEYS[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
want(KEYS[3], 'zset')
-- First write (it undoes itself when its bucket refuses); nothing below can fail.
ix_set_all(ix, {1}, {id}, 'F' .. stamp6(now))
redis.call('ZADD', KEYS[3], now, id)
if ARGV[1] == 'pending' then
  redis.call('LREM', KEYS[1], 1, ARGV[2])
elseif ARGV[1] == 'grouped' then
  -- A hole in the group's run of fields: fetch steps over it.
  redis.call('HDEL', KEYS[1], ARGV[4])
  if gs.c <= 1 then
    redis.call('HDEL', g.seq, gname)
    redis.call('ZREM', g.turn, gname)
    redis.call('SREM', g.full, gname)
  else
    redis.call('HSET', g.seq, gname, gs.h .. ' ' .. gs.t .. ' ' .. (gs.c - 1))
  end
elseif ARGV[1] == 'queued' then
  redis.call('ZREM', KEYS[1], ARGV[2])
else
  redis.call('HDEL', KEYS[1], ARGV[2])
  if ARGV[1] == 'blocked' then redis.call('HDEL', KEYS[6], ARGV[2]) end
  if g.rel_order then groups_release(g) end
end
if release then redis.call('DEL', lock) end
redis.call('RPUSH', KEYS[7], id .. stamp6(now))
redis.call('INCR', KEYS[2])
if refs then
  redis.call('HDEL', KEYS[4], id)
  redis.call('RPUSH', KEYS[5], 'F' .. id .. refs)
end
ix_close(ix)
return 1
