-- dep_enqueue.lua — writes a task that has dependencies, once each dependency has answered
-- (dep_register.lua): it waits, or is pending at once (every dependency done), or goes straight
-- to the dead-letter queue (a dependency failed).
--
-- KEYS[1]  waiting hash      (id -> record)
-- KEYS[2]  needs hash        (id -> delay_ms .. "|" .. 16-byte ids of the dependencies not met)
-- KEYS[3]  early facts zset  ("S"/"F" .. dependent id .. dependency id -> time)
-- KEYS[4]  delayed zset      KEYS[5] wake marker zset KEYS[6] dead zset
-- KEYS[7]  failed ids zset
-- KEYS[8]  enqueued counters hash (task type -> tasks enqueued, ever)
-- KEYS[9]  (optional) the task's unique-key lock
-- then     the band block of the task's band (bands.lua)
-- then     the index block of the task's id (index.lua)
--
-- ARGV[1]  task id (16 bytes)
-- ARGV[2]  record
-- ARGV[3]  delay in ms (0 = none; counted from the moment the last dependency completes)
-- ARGV[4]  unique-lock TTL in seconds (with KEYS[9]); a task that waits holds its lock without
--          a TTL (it is live however long it waits) until dep_satisfy.lua releases it
-- ARGV[5]  dead record to write ("" unless the caller already knows a dependency failed; the
--          record carries the reason)
-- ARGV[6]  the 16-byte ids of the dependencies registered but not yet met, concatenated
-- ARGV[7]  task type
-- then     the band block's descriptor, then the index block's descriptor
--
-- A completion or failure that reached this queue before the task was written waits in KEYS[3]
-- ("early facts", kept only while dep_begin.lua's mark says the task is being written) and is
-- consumed here, so the order in which registration, completion and this script run does not
-- matter. Once the task is written (or refused: dead, duplicate) the mark and the facts go.
--
-- Returns {"known", state byte} when the queue knows the id already (index.lua's 'L' or 'C',
-- or 'F' for a dead-lettered or cancelled id: nothing written), {"dup", holder id} when the
-- unique key is held (nothing written), {"failed",
-- dependency id} when an early fact says a dependency failed (nothing written: call again with
-- ARGV[5]), or {"dead"}, {"pending"}, {"delayed"}, {"waiting"}.
--
-- Faults (prelude.lua): the early facts and the lock are read, and every key written later
-- checked (the enqueued counters and the field of this type, and the keys of the state the task
-- goes to), before the first write; a wrong-type key or a non-integer counter raises CORRUPT
-- naming the key, and nothing is written: no lock taken, no early fact forgotten (a task that
-- waited in the waiting hash without its needs entry would never be released, a lock taken
-- without a TTL would be held forever). The wake marker carries no data: a wrong-type one is
-- replaced.
local ix = ix_open()
local id, record = ARGV[1], ARGV[2]
local was = ix_get(ix, 1, id)
local bands = bands_open(ix.base, #ARGV - 1)
-- The optional lock comes before the band block.
local lock = bands.first > 9 and KEYS[9] or nil
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- The news for this task that arrived before it was written, and dep_begin.lua's mark: both go
-- once the task is written or refused for good. Only after every check (want(KEYS[3]) first).
local function forget_early()
  local facts = {'W' .. id}
  local deps = ARGV[6]
  for i = 1, #deps, 16 do
    local d = string.sub(deps, i, i + 15)
    facts[#facts + 1] = 'S' .. id .. d
    facts[#facts + 1] = 'F' .. id .. d
  end
  for i = 1, #facts, 1000 do
    redis.call('ZREM', KEYS[3], unpack(facts, i, math.min(i + 999, #facts)))
  end
end

-- The enqueued counter of this type is an integer field of a hash (HINCRBY refuses anything
-- else).
local function check_enqueued()
  local v = rcall('HGET', KEYS[8], ARGV[7])
  if v and not is_count(v) then
    corrupt(KEYS[8], 'holds a non-integer value for ' .. ARGV[7])
  end
end

want(KEYS[3], 'zset')
-- Enqueueing is idempotent: an id the queue knows (another producer wrote this very task since
-- the caller looked) is not written again.
if not was and rcall('ZSCORE', KEYS[7], id) then was = 'F' end
if was then
  forget_early()
  return {'known', was}
end
if ARGV[5] ~= '' then
  check_enqueued()
  want(KEYS[6], 'zset')
  want(KEYS[7], 'zset')
  -- Nothing below can fail.
  redis.call('HINCRBY', KEYS[8], ARGV[7], 1)
  redis.call('ZADD', KEYS[6], now, ARGV[5])
  redis.call('ZADD', KEYS[7], now, id)
  forget_early()
  return {'dead'}
end

local rest, failed = {}, nil
local deps = ARGV[6]
for i = 1, #deps, 16 do
  local d = string.sub(deps, i, i + 15)
  if redis.call('ZSCORE', KEYS[3], 'F' .. id .. d) then
    failed = d
    break
  elseif not redis.call('ZSCORE', KEYS[3], 'S' .. id .. d) then
    rest[#rest + 1] = d
  end
end
if failed then return {'failed', failed} end

local holder = lock and rcall('GET', lock)
if holder then
  forget_early()
  return {'dup', holder}
end
check_enqueued()
local delay = tonumber(ARGV[3])
if #rest > 0 then
  want(KEYS[1], 'hash')
  want(KEYS[2], 'hash')
elseif delay > 0 then
  want(KEYS[4], 'zset')
else
  pend_ready(bands, record)
  bands_check(bands)
end

-- Nothing below can fail (the lock was seen free: SET overwrites whatever type; the wake
-- marker is replaced).
if lock then
  if #rest > 0 then
    redis.call('SET', lock, id)
  else
    redis.call('SET', lock, id, 'EX', ARGV[4])
  end
end
redis.call('HINCRBY', KEYS[8], ARGV[7], 1)
if #rest > 0 then
  redis.call('HSET', KEYS[1], id, record)
  redis.call('HSET', KEYS[2], id, delay .. '|' .. table.concat(rest))
  forget_early()
  ix_put(ix, 1, id, 'L', not was)
  ix_close(ix)
  return {'waiting'}
end
if delay > 0 then
  redis.call('ZADD', KEYS[4], now + delay, record)
  forget_early()
  ix_put(ix, 1, id, 'L', not was)
  ix_close(ix)
  return {'delayed'}
end
pend_push(bands, record)
wake(KEYS[5])
forget_early()
ix_put(ix, 1, id, 'L', not was)
ix_close(ix)
return {'pending'}
