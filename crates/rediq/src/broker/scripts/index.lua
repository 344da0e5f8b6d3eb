-- index.lua — the id index of a queue, prepended (after prelude.lua) to every script that adds,
-- finds or forgets a task by its id.
--
-- Why: a task lives in a sorted set or list scored by priority or due time, so "is task X
-- known here?" would be a scan of the backlog (0.6 s of Redis time at 500,000 pending). The
-- index answers it in O(1): hash buckets `rediq:{q}:ix:<gen>:<b>`, field = the 16 id bytes,
-- value = one state byte:
--   'L'  live: pending, delayed, retry, active or waiting for dependencies
--   'F'  dead-lettered or cancelled, followed by the 6-byte finish time: kept while the id is
--        in the finished list (see ix_evict.lua); a dependency looks in the failed ids too,
--        which are kept an hour longer
-- A completed id keeps its bucket entry 'L' and is also in the done hash
-- `rediq:{q}:ix:<gen>:done` (field = id, value = 'C' and the 6-byte finish time) until
-- ix_evict.lua forgets both: its state is 'C'. Why a hash of its own: complete.lua marks a
-- whole batch with one HSET there, where a mark in each id's bucket cost one call per task
-- (the buckets of a batch's ids are all different), a third of the acknowledgement's Redis
-- time; the price is ~85 bytes per remembered completion instead of ~6 (bounded by the
-- finished-task memory). Entries written by earlier versions as 'C' and the finish time in the
-- bucket still read as completed.
--
-- Buckets grow by linear hashing: with level l and split pointer s, an id whose hash is h
-- lives in bucket h mod 2^l, or h mod 2^(l+1) when that is below s. When the index holds more
-- than LOAD entries per bucket on average, bucket s is split into s and s + 2^l and s moves
-- on; at 2^l the level goes up. Buckets stay small enough (~40–100 entries) for Redis to keep
-- them listpack-encoded: ~27 bytes per id.
--
-- Every key a script touches is passed in KEYS, so the caller computes the bucket keys from
-- the level and generation it last read; the index block sits at the end of KEYS and ARGV:
--   KEYS[..]  meta hash (l = level, s = split pointer, n = entries, g = generation), the done
--             hash of generation g, then for each id of the call (in the order the script asks
--             for them) two keys: its bucket at level l and at level l + 1; then W pairs of
--             split keys: buckets s0 + j and s0 + j + 2^l (j = 0 .. W-1), the caller's guess
--             of the next splits
--   ARGV[#ARGV] "l|g|m|W|s0": the caller's level and generation, m ids, W split pairs
-- A caller whose level or generation is out of date gets the error IXSTALE before anything
-- is read or written and calls again with fresh ones (levels change log2(n) times in the
-- life of a queue; the generation changes when the queue is flushed).
--
-- Faults: ix_open reads the meta hash (a wrong type or non-integer field raises CORRUPT before
-- the script writes anything); ix_get reads a bucket with rcall, so a script that looks an id
-- up before writing has checked its bucket; ix_add_all and ix_set_all undo their own writes
-- when a bucket refuses, so a script may make them its first writes. Splits only move entries
-- between buckets and use pcall: a bucket that cannot be split is left as it is, never an
-- error after a task moved.

local IX_LOAD = 40
-- The level of a new (or flushed) index: 64 buckets. Starting lower would change the level on
-- every early call of a busy producer, and every change sends the calls in flight back once.
local IX_MIN_LEVEL = 6

local function ix_open()
  local d = ARGV[#ARGV]
  local L, G, m, W, s0 = string.match(d, '^(%d+)|(%d+)|(%d+)|(%d+)|(%d+)$')
  if not L then error({ err = 'ERR index block "' .. tostring(d) .. '" is malformed' }) end
  L, G, m, W, s0 = tonumber(L), tonumber(G), tonumber(m), tonumber(W), tonumber(s0)
  local base = #KEYS - (2 + 2 * m + 2 * W)
  local meta = KEYS[base + 1]
  local have = rcall('HMGET', meta, 'l', 's', 'n', 'g')
  for j = 1, 4 do
    if have[j] and not string.find(have[j], '^%d+$') then
      corrupt(meta, 'holds a non-integer index field')
    end
  end
  local ix = {
    l = tonumber(have[1] or IX_MIN_LEVEL), s = tonumber(have[2] or '0'),
    n = tonumber(have[3] or '0'), g = tonumber(have[4] or '0'),
    meta = meta, done = KEYS[base + 2], base = base, m = m, W = W, s0 = s0, dn = 0,
  }
  ix.mod = 2 ^ ix.l
  ix.stale = 'IXSTALE ' .. ix.l .. ' ' .. ix.g .. ' ' .. ix.s
  -- A caller one level behind (the level went up while its call was on the way) passed, as
  -- each id's second key, the id's bucket at this level: usable for every id whose bucket was
  -- not split yet at this level (ix_key checks), so calls in flight survive a level change.
  -- Its split keys belong to the old level: no splits.
  if ix.g == G and ix.l == L + 1 then
    ix.behind, ix.W = true, 0
  elseif ix.l ~= L or ix.g ~= G then
    error({ err = ix.stale })
  end
  -- A caller whose split keys miss the pointer is not sent back (racing producers could then
  -- send each other back forever): it just splits nothing, and enqueue.lua's reply brings its
  -- view up to date for the next call.
  return ix
end

-- The hash of an id: its bytes 1..4 XOR its bytes 11..14, as an unsigned 32-bit number. Bytes
-- 11..14 are random in a UUIDv7 (or v4); bytes 1..4 are the fast-moving time of a UUIDv1 or v6
-- (whose bytes 11..16 are the host's MAC address, the same for every id of a producer). The
-- last two bytes are left out: Rediq writes the queue hint there.
local bxor = bit.bxor

local function ix_hash(id)
  local a, b, c, d = str_byte(id, 1, 4)
  local e, f, g, h = str_byte(id, 11, 14)
  local x = bxor(((a or 0) * 16777216) + ((b or 0) * 65536) + ((c or 0) * 256) + (d or 0),
    ((e or 0) * 16777216) + ((f or 0) * 65536) + ((g or 0) * 256) + (h or 0))
  if x < 0 then x = x + 4294967296 end
  return x
end

-- The bucket key of the i-th id of the call. Raises IXSTALE for a caller one level behind
-- whose id lives in a bucket it could not name (see ix_open); every script asks for an id's key
-- before its first write that concerns it, or inside ix_add_all/ix_set_all, which undo.
local function ix_key(ix, i, id)
  if ix_hash(id) % ix.mod < ix.s then
    if ix.behind then error({ err = ix.stale }) end
    return KEYS[ix.base + 2 * i + 2]
  end
  if ix.behind then return KEYS[ix.base + 2 * i + 2] end
  return KEYS[ix.base + 2 * i + 1]
end

-- Raises CORRUPT naming the first of the buckets of ids[j] (call positions at[j]) that is not a
-- hash: the slow path after a batch of writes to the index failed.
local function ix_blame(ix, at, ids)
  for j = 1, #ids do
    want(ix_key(ix, at[j], ids[j]), 'hash')
  end
  error({ err = 'ERR the id index refused a write: ' .. tostring(ix.last_err) })
end

-- After a protected loop failed: re-raises an IXSTALE as it is, else names the bucket.
local function ix_refused(ix, err, at, ids)
  if type(err) == 'table' and type(err.err) == 'string' and string.sub(err.err, 1, 8) == 'IXSTALE ' then
    error(err)
  end
  ix.last_err = type(err) == 'table' and err.err or err
  ix_blame(ix, at, ids)
end

-- Adds ids[j] (the at[j]-th id of the call) with the state, unless the index knows it: returns
-- a table, true where it was added. Runs as one protected loop (one pcall, not one per id, which
-- cost as much as the write): when a bucket refuses (wrong type), the entries this call added
-- are removed again and CORRUPT names the bucket, so a caller may use it as its first write.
local function ix_add_all(ix, at, ids, state)
  local added, keys = {}, {}
  local ok, err = pcall(function()
    for j = 1, #ids do
      keys[j] = ix_key(ix, at[j], ids[j])
      added[j] = redis_call('HSETNX', keys[j], ids[j], state) == 1
    end
  end)
  if not ok then
    for j = 1, #keys do
      if added[j] then redis_call('HDEL', keys[j], ids[j]) end
    end
    ix_refused(ix, err, at, ids)
  end
  for j = 1, #ids do
    if added[j] then ix.dn = ix.dn + 1 end
  end
  return added
end

-- Sets the state of ids[j] (the at[j]-th id of the call), known or not, as one protected loop
-- like ix_add_all; when a bucket refuses, the entries are put back as they were ('L' for the
-- ones that existed: the callers only move ids on from live) and CORRUPT names the bucket.
local function ix_set_all(ix, at, ids, state)
  local fresh, keys = {}, {}
  local ok, err = pcall(function()
    for j = 1, #ids do
      keys[j] = ix_key(ix, at[j], ids[j])
      fresh[j] = redis_call('HSET', keys[j], ids[j], state) == 1
    end
  end)
  if not ok then
    for j = 1, #keys do
      if fresh[j] then
        redis_call('HDEL', keys[j], ids[j])
      elseif fresh[j] == false then
        redis_call('HSET', keys[j], ids[j], 'L')
      end
    end
    ix_refused(ix, err, at, ids)
  end
  for j = 1, #ids do
    if fresh[j] then ix.dn = ix.dn + 1 end
  end
end

-- Forgets ids[j] (the at[j]-th id of the call), whose bucket entry is olds[j] (or none), as
-- one protected loop like ix_add_all: when a bucket refuses, the entries removed are put back
-- as they were and CORRUPT names the bucket, so a caller may make it its first removal.
local function ix_del_all(ix, at, ids, olds)
  local gone, keys = {}, {}
  local ok, err = pcall(function()
    for j = 1, #ids do
      keys[j] = ix_key(ix, at[j], ids[j])
      gone[j] = redis_call('HDEL', keys[j], ids[j]) == 1
    end
  end)
  if not ok then
    for j = 1, #keys do
      if gone[j] then redis_call('HSET', keys[j], ids[j], olds[j]) end
    end
    ix_refused(ix, err, at, ids)
  end
  for j = 1, #ids do
    if gone[j] then ix.dn = ix.dn - 1 end
  end
end

-- The done-hash entries of ids, in order (nil where an id has none), read in slices that
-- unpack can take. A read: a done hash of the wrong type raises CORRUPT.
local function ix_done_of(ix, ids)
  local done = {}
  for from = 1, #ids, 4000 do
    local part = rcall('HMGET', ix.done, unpack(ids, from, math.min(from + 3999, #ids)))
    for j = 1, #part do done[from + j - 1] = part[j] end
  end
  return done
end

-- The state byte of the i-th id, or nil when the index does not know it. (A finished id's
-- value is its state byte followed by the 6-byte finish time of its finished-list entry, see
-- ix_evict.lua.) A read: a bucket or done hash of the wrong type raises CORRUPT.
local function ix_get(ix, i, id)
  local v = rcall('HGET', ix_key(ix, i, id), id)
  if (not v or v == 'L') and rcall('HGET', ix.done, id) then return 'C' end
  if v then return string.sub(v, 1, 1) end
  return nil
end

-- The state byte of an id whose bucket holds v (nil when it lacks the id), after the script's
-- first write: a done hash of the wrong type reads as "not completed" instead of raising.
local function ix_state_of(ix, id, v)
  if not v or v == 'L' then
    local d = redis.pcall('HGET', ix.done, id)
    if type(d) == 'string' then return 'C' end
  end
  return v and str_sub(v, 1, 1)
end

-- Marks ids completed at the 6-byte time stamp: one HSET into the done hash, which the caller
-- checked with want(ix.done, 'hash') before its first write (nothing here can fail then).
local function ix_done_all(ix, ids, stamp)
  local pairs_ = {}
  local v = 'C' .. stamp
  for j = 1, #ids do
    pairs_[2 * j - 1] = ids[j]
    pairs_[2 * j] = v
  end
  for from = 1, #pairs_, 4000 do
    redis.call('HSET', ix.done, unpack(pairs_, from, math.min(from + 3999, #pairs_)))
  end
end

-- Sets the state of the i-th id (new tells whether it was unknown before).
local function ix_put(ix, i, id, state, new)
  redis.call('HSET', ix_key(ix, i, id), id, state)
  if new then ix.dn = ix.dn + 1 end
end

-- Writes the entry count and splits buckets while the index is over its load, as far as the
-- caller's split keys reach. Never raises. Returns the index's shape afterwards as
-- "<level> <generation> <split>", for a caller that passes it back (enqueue.lua does, so that
-- a busy producer's split keys keep up with the splits it causes).
local function ix_close(ix)
  if ix.dn == 0 then return ix.l .. ' ' .. ix.g .. ' ' .. ix.s end
  ix.n = math.max(0, ix.n + ix.dn)
  local l, s = ix.l, ix.s
  while ix.n > IX_LOAD * (2 ^ l + s) do
    local j = s - ix.s0
    if l ~= ix.l or j < 0 or j >= ix.W then break end
    local old = KEYS[ix.base + 2 * ix.m + 2 * j + 3]
    local new = KEYS[ix.base + 2 * ix.m + 2 * j + 4]
    -- One protected step: a bucket of the wrong type, or one too big for a single command
    -- (moved in slices of 500 fields: unpack stops at 8,000 values), stops the splitting and
    -- leaves the pointer where it was; the entries stay findable in the old bucket (copies
    -- already made in the new one are overwritten by the next split of it).
    local ok = pcall(function()
      local all = redis.call('HGETALL', old)
      local twin = s + 2 ^ l
      local moved, fields = {}, {}
      for f = 1, #all, 2 do
        if ix_hash(all[f]) % (2 ^ (l + 1)) == twin then
          moved[#moved + 1] = all[f]
          moved[#moved + 1] = all[f + 1]
          fields[#fields + 1] = all[f]
        end
      end
      for from = 1, #fields, 500 do
        local to = math.min(from + 499, #fields)
        redis.call('HSET', new, unpack(moved, 2 * from - 1, 2 * to))
      end
      for from = 1, #fields, 500 do
        redis.call('HDEL', old, unpack(fields, from, math.min(from + 499, #fields)))
      end
    end)
    if not ok then break end
    s = s + 1
    if s == 2 ^ l then l, s = l + 1, 0 end
  end
  redis.call('HSET', ix.meta, 'n', ix.n, 'l', l, 's', s)
  return l .. ' ' .. ix.g .. ' ' .. s
end
