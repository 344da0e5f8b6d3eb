-- complete.lua — acknowledge successfully handled tasks (active -> removed, or -> completed).
--
-- KEYS[1]   the server's active hash
-- KEYS[2]   completed zset   (member = record, score = when it may be trimmed, Unix ms)
-- KEYS[3]   processed counter
-- KEYS[4]   index of completion-record buckets (bucket key -> time of its last write)
-- KEYS[5]   number of completion records
-- KEYS[6]   dependents hash (id -> references of the tasks that depend on it)
-- KEYS[7]   outbox list (the resolver tells the dependents)
-- KEYS[8 .. 7+b]  completion-record buckets (strings of 16-byte ids), referenced by index
-- KEYS[8+b ..]    unique-key locks, referenced by index from ARGV
-- KEYS[#KEYS]     the calling server's acknowledgement receipt (string, kept 10 minutes)
--
-- ARGV[1]   retention of completed tasks in ms (0 = delete at once)
-- ARGV[2]   b, the number of bucket keys
-- ARGV[3]   n; then 4 values per task: id, 16-digit fencing token, unique-lock index (0 = none),
--           bucket index
-- then      the call's nonce (the same on every retry of one batch)
--
-- A task is acknowledged only if the active entry still carries the caller's token: an ack for
-- a delivery that was taken back (the server's lease lapsed) is refused (fencing). A completed
-- task with dependents gets an outbox entry in the same script, so its completion and the news
-- for its dependents cannot be separated by a crash; the entry carries the dependents'
-- references, moved out of the dependents hash, so it names exactly who was registered then. Completion records are appended to one
-- string per creation second (one APPEND per bucket and batch, 16 bytes per task): a sorted set
-- of ids cost 18 % of the processing throughput.
-- Returns {outbox entries written, 1-based positions of refused (stale) acks ...}.
--
-- Receipt: the reply is also kept under the server's receipt key with the call's nonce. A call
-- whose reply was lost (a timeout while Redis stalled) is retried with the same nonce and gets
-- the first reply back instead of seeing its own acknowledgements as refused: a completion that
-- landed is never logged or counted as a stale ack. One key per server and queue, overwritten by
-- every call.
--
-- Faults (prelude.lua): every read (the active entries, unique locks, dependents) and a check of
-- every key written later (counters, completed set, record buckets and index, outbox) come before
-- the tasks leave the active hash, so a wrong-type key or a non-integer counter raises CORRUPT
-- naming the key and every task stays active. The checks cost a few commands per call, not per
-- task.
local b = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local nonce = ARGV[4 + n * 4]
local receipt = KEYS[#KEYS]
-- The receipt carries nothing but the last reply: one of the wrong type is no receipt (the SET
-- at the end replaces it), never a reason to refuse the acknowledgements.
local prev = redis.pcall('GET', receipt)
if type(prev) ~= 'string' then prev = nil end
if prev and string.sub(prev, 1, #nonce + 1) == nonce .. '|' then
  local reply = {}
  for x in string.gmatch(string.sub(prev, #nonce + 2), '%d+') do reply[#reply + 1] = tonumber(x) end
  return reply
end
local ids = {}
for i = 1, n do ids[i] = ARGV[4 + (i - 1) * 4] end
local vals = rcall('HMGET', KEYS[1], unpack(ids))

local retention = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local ok, stale, done, buckets, release = {}, {}, {}, {}, {}
for i = 1, n do
  local a = 4 + (i - 1) * 4
  local v = vals[i]
  if v and string.sub(v, 1, 16) == ARGV[a + 1] then
    ok[#ok + 1] = ids[i]
    local u = tonumber(ARGV[a + 2])
    if u > 0 and rcall('GET', KEYS[7 + b + u]) == ids[i] then
      release[#release + 1] = KEYS[7 + b + u]
    end
    if retention > 0 then
      done[#done + 1] = now + retention
      done[#done + 1] = string.sub(v, string.find(v, '|', 17, true) + 1)
    end
    local j = tonumber(ARGV[a + 3])
    local list = buckets[j]
    if not list then
      list = {}
      buckets[j] = list
    end
    list[#list + 1] = ids[i]
  else
    stale[#stale + 1] = i
  end
end
local pushed = 0
if #ok > 0 then
  local news, which = {}, {}
  if redis.call('EXISTS', KEYS[6]) == 1 then
    local refs = rcall('HMGET', KEYS[6], unpack(ok))
    for i = 1, #ok do
      if refs[i] then
        news[#news + 1] = 'S' .. ok[i] .. refs[i]
        which[#which + 1] = ok[i]
      end
    end
    if #news > 0 then want(KEYS[7], 'list') end
  end
  counter(KEYS[5])
  want(KEYS[4], 'zset')
  for j in pairs(buckets) do want(KEYS[7 + j], 'string') end
  if #done > 0 then want(KEYS[2], 'zset') end
  rcall('INCRBY', KEYS[3], #ok)
  -- Nothing below can fail.
  redis.call('HDEL', KEYS[1], unpack(ok))
  for i = 1, #release do redis.call('DEL', release[i]) end
  if #done > 0 then redis.call('ZADD', KEYS[2], unpack(done)) end
  for j, list in pairs(buckets) do
    redis.call('APPEND', KEYS[7 + j], table.concat(list))
    redis.call('ZADD', KEYS[4], now, KEYS[7 + j])
  end
  redis.call('INCRBY', KEYS[5], #ok)
  if #news > 0 then
    redis.call('HDEL', KEYS[6], unpack(which))
    redis.call('RPUSH', KEYS[7], unpack(news))
    pushed = #news
  end
end
table.insert(stale, 1, pushed)
redis.call('SET', receipt, nonce .. '|' .. table.concat(stale, ','), 'PX', 600000)
return stale
