-- enqueue.lua — new tasks enter a queue: due now (pending) or later (delayed).
--
-- KEYS[1]   pending zset   (member = record, score = priority * 2^42 + sequence: lower runs first,
--                           FIFO among equal priorities)
-- KEYS[2]   delayed zset   (member = record, score = due time in Unix ms, Redis clock)
-- KEYS[3]   sequence counter of the queue
-- KEYS[4]   wake marker zset (a blocked fetcher pops it)
-- KEYS[5..] unique-key locks, referenced by index from ARGV
--
-- ARGV[1]   mode: "each" = every task stands alone (a conflict rejects only that task);
--                 "all"  = all or nothing (one conflict rejects the whole call, nothing changes)
-- ARGV[2]   n, the number of tasks; then 5 values per task:
--           record, priority (0-100), delay in ms (0 = due now), unique-lock index into KEYS
--           counted from KEYS[5] as 1 (0 = no unique key), unique-lock TTL in seconds
--
-- Returns one string per task: "" when enqueued, else the id bytes of the task holding its key.
-- A record starts with a format byte, the priority byte and the 16 id bytes (see record.rs).
local n = tonumber(ARGV[2])
local res = {}

if ARGV[1] == 'all' then
  local conflict = false
  for i = 1, n do
    local u = tonumber(ARGV[2 + (i - 1) * 5 + 4])
    res[i] = ''
    if u > 0 then
      local holder = redis.call('GET', KEYS[4 + u])
      if holder then
        res[i] = holder
        conflict = true
      end
    end
  end
  if conflict then return res end
end

local pend, pend_prio, delayed = {}, {}, {}
local now
for i = 1, n do
  local b = 2 + (i - 1) * 5
  local record = ARGV[b + 1]
  local u = tonumber(ARGV[b + 4])
  local ok = true
  res[i] = ''
  if u > 0 then
    if not redis.call('SET', KEYS[4 + u], string.sub(record, 3, 18), 'NX', 'EX', ARGV[b + 5]) then
      res[i] = redis.call('GET', KEYS[4 + u]) or ''
      ok = false
    end
  end
  if ok then
    local delay = tonumber(ARGV[b + 3])
    if delay > 0 then
      if not now then
        local t = redis.call('TIME')
        now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      end
      delayed[#delayed + 1] = string.format('%.0f', now + delay)
      delayed[#delayed + 1] = record
    else
      pend[#pend + 1] = record
      pend_prio[#pend_prio + 1] = tonumber(ARGV[b + 2])
    end
  end
end

if #pend > 0 then
  local last = redis.call('INCRBY', KEYS[3], #pend)
  local first = last - #pend
  local args = {}
  for i = 1, #pend do
    args[#args + 1] = string.format('%.0f', pend_prio[i] * 4398046511104 + first + i)
    args[#args + 1] = pend[i]
  end
  redis.call('ZADD', KEYS[1], unpack(args))
  redis.call('ZADD', KEYS[4], 0, 'w')
end
if #delayed > 0 then
  redis.call('ZADD', KEYS[2], unpack(delayed))
end
return res
