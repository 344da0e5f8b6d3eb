-- dep_register.lua — a dependent asks one of its dependencies (in the dependency's queue) to
-- tell it when it completes or fails.
--
-- KEYS[1]   the completion-record bucket of the dependency's creation second (16-byte ids)
-- KEYS[2]   failed ids zset (dead-lettered or cancelled; id -> time)
-- KEYS[3]   dependents hash (id -> references of the tasks that depend on it, concatenated)
-- KEYS[4]   waiting hash (tasks waiting for their own dependencies)
-- KEYS[5]   flush counter of the queue
-- KEYS[6]   leases zset of the queue (server id -> lease deadline)
-- KEYS[7..] the active hashes of the servers the caller saw holding a lease on the queue
--
-- ARGV[1]   dependency id (16 bytes)
-- ARGV[2]   reference to append: dependent id (16 bytes), queue name length (1 byte), queue name
-- ARGV[3]   "1" when the caller saw the dependency in the pending, delayed or retry set
-- ARGV[4]   the flush counter the caller read before looking (checked with ARGV[3] = "1")
-- ARGV[5..] the server ids of KEYS[7..], in the same order
--
-- Returns "done" (already completed: nothing registered), "failed" (dead-lettered or
-- cancelled), "registered" (the completion or failure will reach the dependent through the
-- outbox), "unknown" (no trace of the id here) or "again" (the queue was flushed while the
-- caller looked: look again) or "holders" (the lease holders changed since the caller read
-- them: a task may sit in an active hash the caller did not pass; read them and call again).
--
-- The active hashes must be passed in KEYS (a cluster routes by them), so the caller reads the
-- holders first; the script checks them against the leases zset, atomically with the lookup.
-- A server's active hash only receives tasks in the script that takes or renews its lease, and
-- a lease is removed only once its hash is empty, so when the holders match, every active task
-- of the queue is in one of the hashes passed.
--
-- Checked in this order on purpose: a completion record wins over a failure record (a dead task
-- that was re-run and then completed did complete).
--
-- Faults (prelude.lua): everything is read before the one write (the reference appended to the
-- dependents hash), which either lands or changes nothing; a wrong-type key raises CORRUPT
-- naming it, and the caller's enqueue fails with nothing registered.
local id = ARGV[1]

-- Records are 16 bytes each: only a match at a record boundary counts.
local function recorded(bucket)
  local s = rcall('GET', bucket)
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
if rcall('ZSCORE', KEYS[2], id) then return 'failed' end
local live = false
if ARGV[3] == '1' then
  if (rcall('GET', KEYS[5]) or '0') ~= ARGV[4] then return 'again' end
  live = true
end
if not live and rcall('HEXISTS', KEYS[4], id) == 1 then live = true end
if not live then
  local holders = rcall('ZRANGE', KEYS[6], 0, -1)
  if #holders ~= #KEYS - 6 then return 'holders' end
  local seen = {}
  for i = 5, #ARGV do seen[ARGV[i]] = true end
  for _, h in ipairs(holders) do
    if not seen[h] then return 'holders' end
  end
  for i = 7, #KEYS do
    if rcall('HEXISTS', KEYS[i], id) == 1 then
      live = true
      break
    end
  end
end
if not live then return 'unknown' end
-- The settling script moves the references into its outbox entry; a registration after that
-- finds the completion or failure record above instead.
rcall('HSET', KEYS[3], id, (rcall('HGET', KEYS[3], id) or '') .. ARGV[2])
return 'registered'
