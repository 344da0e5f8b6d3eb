-- dep_register.lua — a dependent asks one of its dependencies (in the dependency's queue) to
-- tell it when it completes or fails.
--
-- KEYS[1]   failed ids zset (dead-lettered or cancelled; id -> time)
-- KEYS[2]   dependents hash (id -> references of the tasks that depend on it, concatenated)
-- then      the index block of the dependency's id (index.lua)
--
-- ARGV[1]   dependency id (16 bytes)
-- ARGV[2]   reference to append: dependent id (16 bytes), queue name length (1 byte), queue name
-- then      the index block's descriptor
--
-- Returns "done" (completed, within the finished-task memory: nothing registered), "failed"
-- (dead-lettered or cancelled), "registered" (the completion or failure will reach the
-- dependent through the outbox) or "unknown" (no trace of the id here).
--
-- The id index knows every live task of the queue (pending, delayed, retry, active, waiting),
-- so one lookup, atomic with the registration, replaces the scans of earlier versions: O(1)
-- whatever the backlog. A completion wins over a failure record (a dead task that was re-run
-- and then completed did complete).
--
-- Faults (prelude.lua): everything is read before the one write (the reference appended to the
-- dependents hash), which either lands or changes nothing; a wrong-type key raises CORRUPT
-- naming it, and the caller's enqueue fails with nothing registered.
local ix = ix_open()
local id = ARGV[1]
local state = ix_get(ix, 1, id)
-- The index decides while it knows the id (an id enqueued again after it was forgotten is live
-- whatever an older failure record says); the failure records, kept an hour longer, answer
-- for a failed id it forgot.
if state == 'C' then return 'done' end
if state == 'F' then return 'failed' end
if not state then
  if rcall('ZSCORE', KEYS[1], id) then return 'failed' end
  return 'unknown'
end
-- The settling script moves the references into its outbox entry and marks the id in the
-- index in the same step, so a registration after that finds 'C' or the failure record above.
rcall('HSET', KEYS[2], id, (rcall('HGET', KEYS[2], id) or '') .. ARGV[2])
return 'registered'
