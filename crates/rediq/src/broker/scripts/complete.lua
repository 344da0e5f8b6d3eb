-- complete.lua — acknowledge successfully handled tasks (active -> removed, or -> completed).
--
-- KEYS[1]   the server's active hash
-- KEYS[2]   completed zset   (member = record, score = when it may be trimmed, Unix ms)
-- KEYS[3]   processed counter
-- KEYS[4]   finished list (16 id bytes + 6 bytes of finish time, Unix ms; see ix_evict.lua)
-- KEYS[5]   dependents hash (id -> references of the tasks that depend on it)
-- KEYS[6]   outbox list (the resolver tells the dependents)
-- KEYS[7]   the calling server's acknowledgement receipt (string, kept 10 minutes)
-- KEYS[8]   daily counts hash (prelude.lua, daily_add: 'p:<day>' counts the completions)
-- KEYS[9..16] the group block (groups.lua: a task of a group leaves its group's running count)
-- KEYS[17..] unique-key locks, referenced by index from ARGV
-- then      the index block, without ids (index.lua): this script writes only its done hash
--
-- ARGV[1]   retention of completed tasks in ms (0 = delete at once)
-- ARGV[2]   n; then the n task ids
-- then      r; then r runs of 16-digit fencing token, number of tasks: the tokens of the
--           tasks in order (a batch is mostly the tasks of a few fetches: one value per task)
-- then      u; then u pairs: position of a task with a unique key (1-based), its lock's index
--           into KEYS counted from KEYS[17] as 1
-- then      the call's nonce (the same on every retry of one batch)
-- then      the index block's descriptor
--
-- A task is acknowledged only if the active entry still carries the caller's token: an ack for
-- a delivery that was taken back (the server's lease lapsed) is refused (fencing). A completed
-- task with dependents gets an outbox entry in the same script, so its completion and the news
-- for its dependents cannot be separated by a crash; the entry carries the dependents'
-- references, moved out of the dependents hash, so it names exactly who was registered then.
-- The index's done hash marks each completed id 'C' (one HSET for the batch) and the finished
-- list remembers when, so that an enqueue of the same id stays idempotent and a dependency
-- registered later finds it done, for as long as ix_evict.lua keeps it (the dependency
-- retention, at most the newest dependency_max_records ids).
-- Returns {outbox entries written, length of the finished list, 1-based positions of refused
-- (stale) acks ...}.
--
-- Receipt: the reply is also kept under the server's receipt key with the call's nonce. A call
-- whose reply was lost (a timeout while Redis stalled) is retried with the same nonce and gets
-- the first reply back instead of seeing its own acknowledgements as refused: a completion that
-- landed is never logged or counted as a stale ack. One key per server and queue, overwritten by
-- every call.
--
-- Faults (prelude.lua): every read (the active entries, unique locks, dependents) and a check of
-- every key written later (counters, the daily count, completed set, done hash, finished list, outbox) come before
-- the tasks leave the active hash, so a wrong-type key or a non-integer counter raises CORRUPT
-- naming the key and every task stays active. The checks cost a few commands per call, not per
-- task.
local n = tonumber(ARGV[2])
local runs_at = 3 + n
local locks_at = runs_at + 1 + 2 * tonumber(ARGV[runs_at])
local nonce = ARGV[locks_at + 1 + 2 * tonumber(ARGV[locks_at])]
local receipt = KEYS[7]
-- The receipt carries nothing but the last reply: one of the wrong type is no receipt (the SET
-- at the end replaces it), never a reason to refuse the acknowledgements.
local prev = redis.pcall('GET', receipt)
if type(prev) ~= 'string' then prev = nil end
if prev and str_sub(prev, 1, #nonce + 1) == nonce .. '|' then
  local reply = {}
  for x in string.gmatch(str_sub(prev, #nonce + 2), '%d+') do reply[#reply + 1] = tonumber(x) end
  return reply
end
local ix = ix_open()
local g = groups_open(9)
local ids, tokens, lock_of = {}, {}, {}
for i = 1, n do ids[i] = ARGV[2 + i] end
do
  local i = 1
  for r = 1, tonumber(ARGV[runs_at]) do
    local tok = ARGV[runs_at + 2 * r - 1]
    for _ = 1, tonumber(ARGV[runs_at + 2 * r]) do
      tokens[i] = tok
      i = i + 1
    end
  end
  for j = 1, tonumber(ARGV[locks_at]) do
    lock_of[tonumber(ARGV[locks_at + 2 * j - 1])] = tonumber(ARGV[locks_at + 2 * j])
  end
end
local vals = rcall('HMGET', KEYS[1], unpack(ids))

local retention = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stamp = stamp6(now)

local ok, stale, done, release = {}, {}, {}, {}
for i = 1, n do
  local v = vals[i]
  if v and str_sub(v, 1, 16) == tokens[i] then
    ok[#ok + 1] = ids[i]
    local u = lock_of[i]
    if u and rcall('GET', KEYS[16 + u]) == ids[i] then
      release[#release + 1] = KEYS[16 + u]
    end
    -- Only a grouped record (format 2) is copied out: most acks skip it.
    if str_byte(v, 18) == 2 then
      groups_load()
      groups_leaving(g, str_sub(v, 18))
    end
    if retention > 0 then
      done[#done + 1] = now + retention
      done[#done + 1] = str_sub(v, string.find(v, '|', 17, true) + 1)
    end
  else
    stale[#stale + 1] = i
  end
end
local pushed, finished = 0, 0
if #ok > 0 then
  local news, which = {}, {}
  if redis.call('EXISTS', KEYS[5]) == 1 then
    local refs = rcall('HMGET', KEYS[5], unpack(ok))
    for i = 1, #ok do
      if refs[i] then
        news[#news + 1] = 'S' .. ok[i] .. refs[i]
        which[#which + 1] = ok[i]
      end
    end
    if #news > 0 then want(KEYS[6], 'list') end
  end
  want(KEYS[4], 'list')
  want(ix.done, 'hash')
  if #done > 0 then want(KEYS[2], 'zset') end
  counter(KEYS[3])
  daily_check(KEYS[8], 'p', day_of(now))
  -- Nothing below can fail: every key written was checked above.
  ix_done_all(ix, ok, stamp)
  redis.call('INCRBY', KEYS[3], #ok)
  daily_add(KEYS[8], 'p', day_of(now), #ok)
  redis.call('HDEL', KEYS[1], unpack(ok))
  if g.rel_order then groups_release(g) end
  for i = 1, #release do redis.call('DEL', release[i]) end
  if #done > 0 then redis.call('ZADD', KEYS[2], unpack(done)) end
  local marks = {}
  for j = 1, #ok do marks[j] = ok[j] .. stamp end
  finished = redis.call('RPUSH', KEYS[4], unpack(marks))
  if #news > 0 then
    redis.call('HDEL', KEYS[5], unpack(which))
    redis.call('RPUSH', KEYS[6], unpack(news))
    pushed = #news
  end
end
ix_close(ix)
table.insert(stale, 1, finished)
table.insert(stale, 1, pushed)
redis.call('SET', receipt, nonce .. '|' .. table.concat(stale, ','), 'PX', 600000)
return stale
