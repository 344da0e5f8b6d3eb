-- dep_register.lua — a dependent asks one of its dependencies (in the dependency's queue) to
-- tell it when it completes or fails.
--
-- KEYS[1]   the completion-record bucket of the dependency's creation second (16-byte ids)
-- KEYS[2]   failed ids zset (dead-lettered or cancelled; id -> time)
-- KEYS[3]   dependents hash (id -> references of the tasks that depend on it, concatenated)
-- KEYS[4]   waiting hash (tasks waiting for their own dependencies)
-- KEYS[5]   flush counter of the queue
-- KEYS[6..] the active hashes of the servers holding a lease on the queue
--
-- ARGV[1]   dependency id (16 bytes)
-- ARGV[2]   reference to append: dependent id (16 bytes), queue name length (1 byte), queue name
-- ARGV[3]   "1" when the caller saw the dependency in the pending, delayed or retry set
-- ARGV[4]   the flush counter the caller read before looking (checked with ARGV[3] = "1")
--
-- Returns "done" (already completed: nothing registered), "failed" (dead-lettered or
-- cancelled), "registered" (the completion or failure will reach the dependent through the
-- outbox), "unknown" (no trace of the id here) or "again" (the queue was flushed while the
-- caller looked: look again).
--
-- Checked in this order on purpose: a completion record wins over a failure record (a dead task
-- that was re-run and then completed did complete).
local id = ARGV[1]

-- Records are 16 bytes each: only a match at a record boundary counts.
local function recorded(bucket)
  local s = redis.call('GET', bucket)
  if not s then return false end
  local from = 1
  while true do
    local p = string.find(s, id, from, true)
    if not p then return false end
    if (p - 1) % 16 == 0 then return true end
    from = p + 1
  end
end

if recorded(KEYS[1]) then return 'done' end
if redis.call('ZSCORE', KEYS[2], id) then return 'failed' end
local live = false
if ARGV[3] == '1' then
  if (redis.call('GET', KEYS[5]) or '0') ~= ARGV[4] then return 'again' end
  live = true
end
if not live and redis.call('HEXISTS', KEYS[4], id) == 1 then live = true end
if not live then
  for i = 6, #KEYS do
    if redis.call('HEXISTS', KEYS[i], id) == 1 then
      live = true
      break
    end
  end
end
if not live then return 'unknown' end
-- The settling script moves the references into its outbox entry; a registration after that
-- finds the completion or failure record above instead.
redis.call('HSET', KEYS[3], id, (redis.call('HGET', KEYS[3], id) or '') .. ARGV[2])
return 'registered'
