-- cancel.lua — a task is cancelled: removed, never retried (pending/delayed/retry -> gone, or
-- active -> gone once the server running it has dropped its handler).
--
-- KEYS[1] where the task is: the pending, delayed or retry zset (ARGV[1] = "waiting"), or the
--         active hash of the server running it (ARGV[1] = "active")
-- KEYS[2] cancelled counter
-- KEYS[3] (optional) the task's unique-key lock, released when it still names this task
--
-- ARGV[1] "waiting" or "active"
-- ARGV[2] waiting: the record exactly as stored; active: the task id
-- ARGV[3] the task id (waiting) or the 16-digit fencing token (active)
--
-- Returns 1, or 0 when the task is no longer there (it moved on meanwhile, or the token is stale).
local id
if ARGV[1] == 'waiting' then
  if redis.call('ZREM', KEYS[1], ARGV[2]) == 0 then return 0 end
  id = ARGV[3]
else
  local v = redis.call('HGET', KEYS[1], ARGV[2])
  if not v or string.sub(v, 1, 16) ~= ARGV[3] then return 0 end
  redis.call('HDEL', KEYS[1], ARGV[2])
  id = ARGV[2]
end
if KEYS[3] and redis.call('GET', KEYS[3]) == id then
  redis.call('DEL', KEYS[3])
end
redis.call('INCR', KEYS[2])
return 1
