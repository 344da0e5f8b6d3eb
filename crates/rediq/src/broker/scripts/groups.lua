-- groups.lua — where the pending tasks of groups (tenants) live, and the round robin across
-- groups; prepended (after prelude.lua, before bands.lua) to every script that pushes, pops or
-- lets go of tasks of a group.
--
-- A task with a group (record format 2, see record.rs: byte 19 is the group's length, the name
-- follows) is not pushed to a priority band but to its group: a group's pending tasks are the
-- fields '<group>|<seq>' of one hash, seq running from the group's head to its tail (FIFO:
-- pushed at tail + 1, given back at head - 1; a cancelled task leaves a hole that fetch steps
-- over). Every key of this block is fixed (no key per group), so every script names all its
-- keys in KEYS without asking the caller which groups exist.
--
-- The group block, 8 keys of the queue in this order (broker/keys.rs, `QueueKeys::groups`):
--   tasks   hash  '<group>|<seq>' -> record
--   seq     hash  group -> 'head tail count' (count = tasks pending in the group; the field
--                 exists exactly while count > 0)
--   turn    zset  the groups that may run now, score = turn: fetch serves the lowest score and
--                 gives it a score past every other, which makes a round robin. The member ''
--                 stands for the tasks without a group (the bands), which take part in the
--                 round robin as one group while a queue has groups.
--   wait    zset  group -> Unix ms until which it is held: paused by a handler
--                 (Error::rate_limited) or waiting for its next rate token
--   full    set   groups at their concurrency limit with tasks pending; the end of one of
--                 their running tasks puts them back in turn
--   run     hash  group -> tasks of the group leased now (the field exists while > 0)
--   limits  hash  group -> 'concurrency|rate|period_ms' ('' = none): the limits of a named
--                 group, in place of the queue's rule for every group (broker/limits.rs)
--   rate    hash  group -> 'tokens|Unix ms|period ms': each group's token bucket (the janitor
--                 drops buckets that have filled up again: g_prune.lua)
-- A group with pending tasks is in exactly one of turn, wait and full; a group without is in
-- none (or still listed in one, stale, until a fetch or a limit change finds it so).

local GROUP_KEYS = 8

local function groups_open(first)
  return {
    tasks = KEYS[first], seq = KEYS[first + 1], turn = KEYS[first + 2],
    wait = KEYS[first + 3], full = KEYS[first + 4], run = KEYS[first + 5],
    limits = KEYS[first + 6], rate = KEYS[first + 7],
    -- The tables of state (st, push, order, rel, rel_order) are made when first needed: most
    -- calls of the scripts that open the block meet no group.
  }
end

-- The group of a record, or nil (format 1, or a record too short to hold its group).
local function group_of(record)
  if str_byte(record, 1) ~= 2 then return nil end
  local n = str_byte(record, 19)
  if not n or n == 0 or #record < 19 + n then return nil end
  return str_sub(record, 20, 19 + n)
end

-- The helpers below are made by groups_load on first use: a script runs its whole text on
-- every call, and each function made costs about a microsecond there, which calls that meet
-- no group (most) need not pay.
local groups_next, group_parse, group_state, groups_ready, groups_add, groups_flush
local groups_leaving, groups_release, groups_hold, groups_idle

local function groups_load()
  if groups_add then return end
  -- A turn score past every member's: read once per script (a read, so it may come before
  -- any write), then counted up locally.
  groups_next = function(g)
    if not g.next then
      local top = rcall('ZRANGE', g.turn, -1, -1, 'WITHSCORES')
      g.next = (top[2] and tonumber(top[2]) or 0) + 1
    end
    local s = g.next
    g.next = s + 1
    return s
  end

  -- Parses a group's 'head tail count' (nil = no tasks pending); a value that does not parse
  -- raises CORRUPT naming the seq hash.
  group_parse = function(g, name, v)
    if not v then return { h = 0, t = -1, c = 0 } end
    local h, t, c = string.match(v, '^(%-?%d+) (%-?%d+) (%d+)$')
    if not h or #v > 50 then
      corrupt(g.seq, 'holds ' .. string.format('%q', v) .. ' for group ' .. string.format('%q', name)
        .. ', not "head tail count"')
    end
    return { h = tonumber(h), t = tonumber(t), c = tonumber(c) }
  end

  -- The state of a group, read once per script.
  group_state = function(g, name)
    if not g.st then g.st = {} end
    local s = g.st[name]
    if not s then
      s = group_parse(g, name, rcall('HGET', g.seq, name))
      g.st[name] = s
    end
    return s
  end

  -- Reads and checks everything a push to group `name` writes: call it before the script's
  -- first write (groups_add calls it too).
  groups_ready = function(g, name)
    local s = group_state(g, name)
    if not g.checked then
      want(g.tasks, 'hash')
      want(g.turn, 'zset')
      want(g.wait, 'zset')
      want(g.full, 'set')
      g.checked = true
    end
    return s
  end

  -- Notes a record bound for its group: at the tail, or at the head when `front` (given back:
  -- shutdown, a lapsed lease, a handler's slow-down). Safe after the first write only for a
  -- group readied before it (groups_ready).
  groups_add = function(g, name, record, front)
    local s = groups_ready(g, name)
    if not g.push then g.push, g.order = {}, {} end
    local p = g.push[name]
    if not p then
      p = { back = {}, front = {} }
      g.push[name] = p
      g.order[#g.order + 1] = name
      -- A group that had no task pending joins the round robin, unless it is held.
      if s.c == 0 and not s.held then
        s.held = redis.call('ZSCORE', g.wait, name) or redis.call('SISMEMBER', g.full, name) == 1
        if not s.held then s.score = groups_next(g) end
      end
    end
    if front then p.front[#p.front + 1] = record else p.back[#p.back + 1] = record end
  end

  -- Writes what groups_add noted.
  groups_flush = function(g)
    for _, name in ipairs(g.order) do
      local s, p = g.st[name], g.push[name]
      local was = s.c
      local args = {}
      if #p.front > 0 then
        table.sort(p.front, function(x, y) return str_sub(x, 3, 18) < str_sub(y, 3, 18) end)
        for i = #p.front, 1, -1 do
          s.h = s.h - 1
          args[#args + 1] = name .. '|' .. s.h
          args[#args + 1] = p.front[i]
        end
      end
      for i = 1, #p.back do
        s.t = s.t + 1
        args[#args + 1] = name .. '|' .. s.t
        args[#args + 1] = p.back[i]
      end
      for i = 1, #args, 4000 do
        redis_call('HSET', g.tasks, unpack(args, i, math.min(i + 3999, #args)))
      end
      s.c = s.c + #p.front + #p.back
      redis_call('HSET', g.seq, name, s.h .. ' ' .. s.t .. ' ' .. s.c)
      if was == 0 and s.score then redis_call('ZADD', g.turn, 'NX', s.score, name) end
    end
    g.push, g.order = nil, nil
  end

  -- Notes that a leased task of a group leaves the active hash: its group has one task less
  -- running. Reads and checks what groups_release writes.
  groups_leaving = function(g, record)
    local name = group_of(record)
    if not g.rel then g.rel, g.rel_order = {}, {} end
    local r = g.rel[name]
    if not r then
      local v = rcall('HGET', g.run, name)
      if v and not is_count(v) then
        corrupt(g.run, 'holds a non-integer count for group ' .. string.format('%q', name))
      end
      if not g.rel_checked then
        want(g.turn, 'zset')
        -- Most calls find no group held at its limit: then no SREM per group.
        g.any_full = rcall('SCARD', g.full) > 0
        if g.any_full then groups_next(g) end
        g.rel_checked = true
      end
      r = { n = 0, was = tonumber(v or '0') }
      g.rel_order[#g.rel_order + 1] = name
      g.rel[name] = r
    end
    r.n = r.n + 1
  end

  -- Writes what groups_leaving noted: the running counts go down (one HSET and one HDEL for all the groups of
  -- the call), and a group held at its concurrency limit runs again.
  groups_release = function(g)
    local set, del = {}, {}
    for _, name in ipairs(g.rel_order) do
      local left = g.rel[name].was - g.rel[name].n
      if left > 0 then
        set[#set + 1] = name
        set[#set + 1] = left
      else
        del[#del + 1] = name
      end
      if g.any_full and redis_call('SREM', g.full, name) == 1 then
        redis_call('ZADD', g.turn, 'NX', groups_next(g), name)
      end
    end
    if #set > 0 then redis_call('HSET', g.run, unpack(set)) end
    if #del > 0 then redis_call('HDEL', g.run, unpack(del)) end
    g.rel, g.rel_order = nil, nil
  end

  -- Holds a group until `untl` (Unix ms; a later hold already set stands): it leaves the round
  -- robin, and its tasks wait. Checked by groups_add/groups_leaving (wait's type).
  groups_hold = function(g, name, untl)
    local cur = tonumber(redis.call('ZSCORE', g.wait, name) or '0')
    if untl > cur then redis_call('ZADD', g.wait, untl, name) end
    redis_call('ZREM', g.turn, name)
    redis_call('SREM', g.full, name)
  end

  -- The answer of a fetch when nothing may run now: with groups held, ask again when the first
  -- is due (at most 50 ms, so that an idle server that sleeps on this answer, not on the wake
  -- marker, still sees a new task soon); with groups at their concurrency limit, in 50 ms (one
  -- comes back when a task of it ends, which may be on another server; a server's own ends wake
  -- its fetcher at once); else nothing to do. `w` is the first of the wait zset, if read.
  groups_idle = function(g, w, now)
    if not w then w = rcall('ZRANGE', g.wait, 0, 0, 'WITHSCORES') end
    if w[2] then return { 'L', math.max(1, math.min(50, tonumber(w[2]) - now)), 0, 0, 0, 0 } end
    if rcall('SCARD', g.full) > 0 then return { 'L', 50, 0, 0, 0, 0 } end
    return {}
  end
end

-- The entry points, for every script (each a test and a call, so a call that meets no group
-- makes no function):
--   pend_ready/bands_group/pend_push (bands.lua) load the helpers for a grouped record;
--   `if b.g.order then groups_flush(b.g) end` writes what groups_add noted (nothing here can
--     fail; tasks given back go to the head, oldest (lowest id) first);
--   `if group_of(record) then groups_load() groups_leaving(g, record) end` notes, before the
--     script's first write, that a leased grouped task leaves its active hash;
--   `if g.rel_order then groups_release(g) end` writes what groups_leaving noted.
