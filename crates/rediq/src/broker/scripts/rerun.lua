-- rerun.lua — dead tasks run again (dead -> pending), their attempt count reset.
--
-- KEYS[1] dead zset
-- KEYS[2] pending zset
-- KEYS[3] sequence counter
-- KEYS[4] wake marker zset
-- KEYS[5] failed ids zset (a task run again is no longer failed for tasks that depend on it)
--
-- ARGV[1] n; then 2 values per task: the dead record exactly as stored, and the record to run
--         (attempt count and error cleared; same id and priority)
--
-- A record that is no longer in the dead set (re-run or trimmed meanwhile) is skipped, so a
-- task is never re-run twice by concurrent calls. The task goes behind the pending tasks of its
-- priority. Returns how many tasks went back.
local n = tonumber(ARGV[1])
local first = redis.call('INCRBY', KEYS[3], n) - n
local back = {}
for i = 1, n do
  local old, new = ARGV[2 * i], ARGV[2 * i + 1]
  if redis.call('ZREM', KEYS[1], old) == 1 then
    back[#back + 1] = string.format('%d', (string.byte(new, 2) or 50) * 4398046511104 + first + i)
    back[#back + 1] = new
    redis.call('ZREM', KEYS[5], string.sub(new, 3, 18))
  end
end
if #back > 0 then
  redis.call('ZADD', KEYS[2], unpack(back))
  redis.call('ZADD', KEYS[4], 0, 'w')
end
return #back / 2
