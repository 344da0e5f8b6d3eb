-- enqueue.lua — new tasks enter a queue: due now (pending) or later (delayed).
--
-- KEYS[1]   pending zset   (member = record, score = priority * 2^42 + sequence: lower runs first,
--                           FIFO among equal priorities)
-- KEYS[2]   delayed zset   (member = record, score = due time in Unix ms, Redis clock)
-- KEYS[3]   sequence counter of the queue
-- KEYS[4]   wake marker zset (a blocked fetcher pops it)
-- KEYS[5]   enqueued counters hash (task type -> tasks enqueued, ever)
-- KEYS[6..] unique-key locks, referenced by index from ARGV
--
-- ARGV[1]   mode: "each" = every task stands alone (a conflict rejects only that task);
--                 "all"  = all or nothing (one conflict rejects the whole call, nothing changes)
-- ARGV[2]   n, the number of tasks
-- ARGV[3 .. 2+n]   the records
-- ARGV[3+n] m, the number of tasks with a delay or a unique key; then 5 values for each:
--           task position (1-based), delay in ms (0 = none), unique-lock index into KEYS
--           counted from KEYS[6] as 1 (0 = none), unique-lock TTL in seconds, task type index
-- then      t, the number of task types in the call; then t pairs: task type, how many tasks
--           of that type the call carries (a task whose unique key is held is not counted)
--
-- Returns {position, holder id, ...} for the tasks rejected because their unique key is held
-- ({} when every task was written). A record starts with a format byte, the priority byte and
-- the 16 id bytes (see record.rs), so the priority and id are read from it directly. The common
-- task (no delay, no unique key) costs one argument and no work beyond its share of one ZADD.
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

local rejected = {}
if ARGV[1] == 'all' then
  for i, x in pairs(extra) do
    if x[2] > 0 then
      local holder = redis.call('GET', KEYS[5 + x[2]])
      if holder then
        rejected[#rejected + 1] = tostring(i)
        rejected[#rejected + 1] = holder
      end
    end
  end
  if #rejected > 0 then return rejected end
end

local first = redis.call('INCRBY', KEYS[3], n) - n
local pend, delayed = {}, {}
local now
for i = 1, n do
  local record = ARGV[2 + i]
  local x = extra[i]
  local ok = true
  local delay = 0
  if x then
    delay = x[1]
    if x[2] > 0 then
      if not redis.call('SET', KEYS[5 + x[2]], string.sub(record, 3, 18), 'NX', 'EX', x[3]) then
        rejected[#rejected + 1] = tostring(i)
        rejected[#rejected + 1] = redis.call('GET', KEYS[5 + x[2]]) or ''
        counts[x[4]] = counts[x[4]] - 1
        ok = false
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
      -- Integer text: a Lua number reaches Redis 7.0 formatted with "%.17g", which is slow.
      pend[#pend + 1] = string.format('%d', (string.byte(record, 2) or 50) * 4398046511104 + first + i)
      pend[#pend + 1] = record
    end
  end
end

if #pend > 0 then
  redis.call('ZADD', KEYS[1], unpack(pend))
  redis.call('ZADD', KEYS[4], 0, 'w')
end
if #delayed > 0 then
  redis.call('ZADD', KEYS[2], unpack(delayed))
end
for j = 1, #counts do
  if counts[j] > 0 then redis.call('HINCRBY', KEYS[5], ARGV[types + j * 2 - 1], counts[j]) end
end
return rejected
