-- dep_resolved.lua — an outbox entry has been delivered to every dependent it names (resolver,
-- in the dependency's queue): drop the entry and the references it delivered.
--
-- KEYS[1] outbox list
-- KEYS[2] the dependency's list of dependent references
--
-- ARGV[1] the outbox entry ("S"/"F" .. dependency id)
-- ARGV[2] how many references (from the head of KEYS[2]) were delivered
--
-- Only the resolver that removes the entry trims the references, and only as many as it read:
-- a reference appended meanwhile (a task re-run from the dead-letter queue and depended on
-- again) stays. Returns 1, or 0 when another resolver got there first.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('LTRIM', KEYS[2], tonumber(ARGV[2]), -1)
return 1
