-- enqueue.lua — new tasks enter a queue: due now (pending) or later (delayed).
--
-- KEYS[1]   delayed zset   (member = record, score = due time in Unix ms, Redis clock)
-- KEYS[2]   wake marker zset (a blocked fetcher pops it)
-- KEYS[3]   enqueued counters hash (task type -> tasks enqueued, ever)
-- KEYS[4..] unique-key locks, referenced by index from ARGV
-- then      the band block of the bands of the tasks due now (bands.lua: pending tasks are
--           pushed at the tail of their band's list, FIFO among equal priorities)
-- then      the index block of the tasks' ids, in call order (index.lua)
--
-- ARGV[1]   mode: "each" = every task stands alone (a conflict rejects only that task);
--                 "all"  = all or nothing (one conflict rejects the whole call, nothing changes)
-- ARGV[2]   n, the number of tasks
-- ARGV[3 .. 2+n]   the records
-- ARGV[3+n] m, the number of tasks with a delay or a unique key; then 5 values for each:
--           task position (1-based), delay in ms (0 = none), unique-lock index into KEYS
--           counted from KEYS[4] as 1 (0 = none), unique-lock TTL in seconds, task type index
-- then      t, the number of task types in the call; then t pairs: task type, how many tasks
--           of that type the call carries (a task whose unique key is held is not counted)
-- then      the task type index of every task, 2 bytes each (big-endian), when t > 1 ('' when
--           t = 1)
-- then      the band block's descriptor, then the index block's descriptor
--
-- Returns {position, answer, ...} for the tasks not written ({} when every task was written):
-- the answer is the 16-byte id of the task holding its unique key ('' if it vanished), or one
-- byte when the queue already knows the task's id — 'L' live (pending, delayed, retry, active
-- or waiting), 'C' completed, 'F' dead-lettered or cancelled: the enqueue is idempotent, and a
-- task that was already written (say, by a call whose reply was lost) is not written twice.
-- A task whose id appears twice in one call is written once. The last pair is {"0", the index's
-- shape "<level> <generation> <split>"} (see ix_close). A record starts with a format byte, the
-- priority byte and the 16 id bytes (see record.rs), so the priority and id are read from it
-- directly. The common task (no delay, no unique key) costs one argument, two bucket keys, one
-- HSETNX into the id index and its share of one RPUSH and of one HMGET of the done hash.
--
-- Faults (prelude.lua): the types of the band lists, the bands zset and the delayed set and the
-- enqueued counters are checked before the first write; the first write is the ids into the
-- index (ix_add_all undoes its own entries when a bucket refuses), then the unique locks, so a
-- wrong-type key or a non-integer counter raises CORRUPT naming the key and nothing is written. A wrong-type
-- wake marker is replaced: it carries no data, and an error after the tasks were written would
-- invite the caller to write them twice.
local ix = ix_open()
local bands = bands_open(ix.base, #ARGV - 1)
local n = tonumber(ARGV[2])
local m = tonumber(ARGV[3 + n])
local extra = {}
for j = 0, m - 1 do
  local b = 4 + n + j * 5
  extra[tonumber(ARGV[b])] = { tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), ARGV[b + 3], tonumber(ARGV[b + 4]) }
end
local types = 4 + n + m * 5
local counts = {}
for j = 1, tonumber(ARGV[types]) do
  counts[j] = tonumber(ARGV[types + j * 2])
end
local type_map = ARGV[types + #counts * 2 + 1]
local function type_of(i)
  if #counts == 1 then return 1 end
  local hi, lo = str_byte(type_map, 2 * i - 1, 2 * i)
  return hi * 256 + lo
end

-- The first position of each id in the call: a later copy is the same task.
local ids, first_at, at, uniq = {}, {}, {}, {}
for i = 1, n do
  local id = str_sub(ARGV[2 + i], 3, 18)
  ids[i] = id
  if not first_at[id] then
    first_at[id] = i
    at[#at + 1] = i
    uniq[#uniq + 1] = id
  end
end

-- The unique locks are read first (a lock of the wrong type raises CORRUPT before any write);
-- "all": a lock held for a task the queue does not know yet rejects the whole call.
local rejected = {}
for i, x in pairs(extra) do
  if x[2] > 0 then
    local holder = rcall('GET', KEYS[3 + x[2]])
    if holder and ARGV[1] == 'all' and first_at[ids[i]] == i and not ix_get(ix, i, ids[i]) then
      rejected[#rejected + 1] = tostring(i)
      rejected[#rejected + 1] = holder
    end
  end
end
if #rejected > 0 then return rejected end

-- Every key written after the index is checked first.
local any_delayed = false
local pend = {}
for i = 1, n do
  if extra[i] and extra[i][1] > 0 then
    any_delayed = true
  else
    local name = group_of(ARGV[2 + i])
    if name then
      groups_load()
      groups_ready(bands.g, name)
    else
      local p = band_of(ARGV[2 + i])
      if not pend[p] then
        pend[p] = {}
        bands_ready(bands, p)
      end
    end
  end
end
bands_check(bands)
if any_delayed then want(KEYS[1], 'zset') end
do
  local fields = {}
  for j = 1, #counts do fields[j] = ARGV[types + j * 2 - 1] end
  local have = rcall('HMGET', KEYS[3], unpack(fields))
  for j = 1, #counts do
    if have[j] and not is_count(have[j]) then
      corrupt(KEYS[3], 'holds a non-integer count for ' .. fields[j])
    end
  end
end

-- A completed id is known by its done entry even without a bucket entry of its own (a task
-- that was never indexed: moved from an earlier version's pending set); one HMGET per call,
-- which also checks the done hash's type before the first write.
local known = {}
local add_at, add = {}, {}
do
  local done = ix_done_of(ix, uniq)
  for j = 1, #uniq do
    if done[j] then
      known[at[j]] = 'C'
    else
      add_at[#add_at + 1] = at[j]
      add[#add + 1] = uniq[j]
    end
  end
end

-- First write: the ids into the index. An id it knows already is not written again.
local added = ix_add_all(ix, add_at, add, 'L')
for j = 1, #add do
  if not added[j] then
    local v = redis.call('HGET', ix_key(ix, add_at[j], add[j]), add[j])
    known[add_at[j]] = ix_state_of(ix, add[j], v) or 'L'
  end
end

local delayed = {}
local any_pending = false
local now
for i = 1, n do
  local record = ARGV[2 + i]
  local x = extra[i]
  local ok = true
  local delay = 0
  local j = first_at[ids[i]]
  if j ~= i or known[i] then
    -- Known to the queue, or a second copy in this call.
    rejected[#rejected + 1] = tostring(i)
    rejected[#rejected + 1] = known[j] or 'L'
    counts[type_of(i)] = counts[type_of(i)] - 1
    ok = false
  elseif x then
    delay = x[1]
    if x[2] > 0 then
      if not redis.call('SET', KEYS[3 + x[2]], ids[i], 'NX', 'EX', x[3]) then
        rejected[#rejected + 1] = tostring(i)
        rejected[#rejected + 1] = redis.call('GET', KEYS[3 + x[2]]) or ''
        counts[x[4]] = counts[x[4]] - 1
        ok = false
        -- Not written after all: the index forgets it again.
        ix.dn = ix.dn - redis.call('HDEL', ix_key(ix, i, ids[i]), ids[i])
      end
    end
  end
  if ok then
    if delay > 0 then
      if not now then
        local t = redis.call('TIME')
        now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      end
      delayed[#delayed + 1] = now + delay
      delayed[#delayed + 1] = record
    else
      local name = group_of(record)
      if name then
        groups_add(bands.g, name, record, false)
      else
        local band = pend[band_of(record)]
        band[#band + 1] = record
      end
      any_pending = true
    end
  end
end

-- Nothing below can fail (every key was checked above).
for j = 1, #counts do
  if counts[j] > 0 then redis.call('HINCRBY', KEYS[3], ARGV[types + j * 2 - 1], counts[j]) end
end
for p, records in pairs(pend) do
  if #records > 0 then bands_push(bands, p, 'RPUSH', records) end
end
if bands.g.order then groups_flush(bands.g) end
if any_pending then wake(KEYS[2]) end
if #delayed > 0 then
  redis.call('ZADD', KEYS[1], unpack(delayed))
end
rejected[#rejected + 1] = '0'
rejected[#rejected + 1] = ix_close(ix)
return rejected
