-- enqueue.lua — new tasks enter a queue: due now (pending) or later (delayed).
--
-- KEYS[1]   pending zset   (member = record, score = priority * 2^42 + sequence: lower runs first,
--                           FIFO among equal priorities)
-- KEYS[2]   delayed zset   (member = record, score = due time in Unix ms, Redis clock)
-- KEYS[3]   sequence counter of the queue
-- KEYS[4]   wake marker zset (a blocked fetcher pops it)
-- KEYS[5]   enqueued counters hash (task type -> tasks enqueued, ever)
-- KEYS[6]   failed ids zset (dead-lettered or cancelled ids -> time)
-- KEYS[7..] unique-key locks, referenced by index from ARGV
-- then      the index block of the tasks' ids, in call order (index.lua)
--
-- ARGV[1]   mode: "each" = every task stands alone (a conflict rejects only that task);
--                 "all"  = all or nothing (one conflict rejects the whole call, nothing changes)
-- ARGV[2]   n, the number of tasks
-- ARGV[3 .. 2+n]   the records
-- ARGV[3+n] m, the number of tasks with a delay or a unique key; then 5 values for each:
--           task position (1-based), delay in ms (0 = none), unique-lock index into KEYS
--           counted from KEYS[7] as 1 (0 = none), unique-lock TTL in seconds, task type index
-- then      t, the number of task types in the call; then t pairs: task type, how many tasks
--           of that type the call carries (a task whose unique key is held is not counted)
-- then      the task type index of every task, 2 bytes each (big-endian), when t > 1 ('' when
--           t = 1)
-- then      the index block's descriptor (index.lua)
--
-- Returns {position, answer, ...} for the tasks not written ({} when every task was written):
-- the answer is the 16-byte id of the task holding its unique key ('' if it vanished), or one
-- byte when the queue already knows the task's id — 'L' live (pending, delayed, retry, active
-- or waiting), 'C' completed, 'F' dead-lettered or cancelled: the enqueue is idempotent, and a
-- task that was already written (say, by a call whose reply was lost) is not written twice.
-- A task whose id appears twice in one call is written once. A record starts with a format byte, the priority byte and
-- the 16 id bytes (see record.rs), so the priority and id are read from it directly. The common
-- task (no delay, no unique key) costs one argument and no work beyond its share of one ZADD.
--
-- Faults (prelude.lua): the sequence counter, the unique locks, the types of the pending and
-- delayed sets and the enqueued counters are all dealt with before the first task is written, so
-- a wrong-type key or a non-integer counter raises CORRUPT naming the key and no task is written
-- (the locks this call took are released again; the sequence may have advanced). A wrong-type
-- wake marker is replaced: it carries no data, and an error after the tasks were written would
-- invite the caller to write them twice.
local ix = ix_open()
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
  local hi, lo = string.byte(type_map, 2 * i - 1, 2 * i)
  return hi * 256 + lo
end

-- Which ids the queue knows already: they are not written, and hold no unique key.
local known, seen = {}, {}
for i = 1, n do
  local id = string.sub(ARGV[2 + i], 3, 18)
  if seen[id] then
    known[i] = 'L'
  else
    seen[id] = true
    known[i] = ix_get(ix, i, id)
    -- A dead-lettered or cancelled task may still be 'L' in the index until ix_evict.lua.
    if known[i] ~= 'C' and rcall('ZSCORE', KEYS[6], id) then known[i] = 'F' end
  end
end

local rejected = {}
if ARGV[1] == 'all' then
  for i, x in pairs(extra) do
    if x[2] > 0 and not known[i] then
      local holder = rcall('GET', KEYS[6 + x[2]])
      if holder then
        rejected[#rejected + 1] = tostring(i)
        rejected[#rejected + 1] = holder
      end
    end
  end
  if #rejected > 0 then return rejected end
end

local first = rcall('INCRBY', KEYS[3], n) - n
local pend, delayed, taken, wrote = {}, {}, {}, {}
local now
-- Raises after releasing the locks this call took (they were absent before: SET NX succeeded).
local function undo(key, cmd, ...)
  local r = redis.pcall(cmd, key, ...)
  if type(r) == 'table' and r.err then
    for i = 1, #taken do redis.call('DEL', taken[i]) end
    rcall(cmd, key, ...)
  end
  return r
end
for i = 1, n do
  local record = ARGV[2 + i]
  local x = extra[i]
  local ok = true
  local delay = 0
  if known[i] then
    rejected[#rejected + 1] = tostring(i)
    rejected[#rejected + 1] = known[i]
    counts[type_of(i)] = counts[type_of(i)] - 1
    ok = false
  elseif x then
    delay = x[1]
    if x[2] > 0 then
      if redis.call('SET', KEYS[6 + x[2]], string.sub(record, 3, 18), 'NX', 'EX', x[3]) then
        taken[#taken + 1] = KEYS[6 + x[2]]
      else
        rejected[#rejected + 1] = tostring(i)
        rejected[#rejected + 1] = undo(KEYS[6 + x[2]], 'GET') or ''
        counts[x[4]] = counts[x[4]] - 1
        ok = false
      end
    end
  end
  if ok then
    wrote[#wrote + 1] = i
    if delay > 0 then
      if not now then
        local t = redis.call('TIME')
        now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      end
      delayed[#delayed + 1] = now + delay
      delayed[#delayed + 1] = record
    else
      -- Integer text: a Lua number reaches Redis 7.0 formatted with "%.17g", which is slow.
      pend[#pend + 1] = string.format('%d', (string.byte(record, 2) or 50) * 4398046511104 + first + i)
      pend[#pend + 1] = record
    end
  end
end

-- The tasks are written last; before them, every key written after the first of them is
-- checked, and the counters (which may refuse a non-integer field) are raised.
local function check(key, t)
  local got = redis.call('TYPE', key)['ok']
  if got ~= 'none' and got ~= t then
    for i = 1, #taken do redis.call('DEL', taken[i]) end
    want(key, t)
  end
end
if #pend > 0 then check(KEYS[1], 'zset') end
if #delayed > 0 then check(KEYS[2], 'zset') end
if #counts > 1 then
  -- Several counters: check them all first, so that none is raised when a later one refuses.
  local fields = {}
  for j = 1, #counts do fields[j] = ARGV[types + j * 2 - 1] end
  local have = undo(KEYS[5], 'HMGET', unpack(fields))
  for j = 1, #counts do
    if have[j] and not string.find(have[j], '^%-?%d+$') then
      for i = 1, #taken do redis.call('DEL', taken[i]) end
      corrupt(KEYS[5], 'holds a non-integer count for ' .. fields[j])
    end
  end
end
for j = 1, #counts do
  if counts[j] > 0 then undo(KEYS[5], 'HINCRBY', ARGV[types + j * 2 - 1], counts[j]) end
end
-- Nothing below can fail (the index buckets were read above).
for _, i in ipairs(wrote) do ix_put(ix, i, string.sub(ARGV[2 + i], 3, 18), 'L', true) end
if #pend > 0 then
  redis.call('ZADD', KEYS[1], unpack(pend))
  wake(KEYS[4])
end
if #delayed > 0 then
  redis.call('ZADD', KEYS[2], unpack(delayed))
end
ix_close(ix)
return rejected
