-- delete.lua — a finished task is deleted by an operator: its record leaves the dead-letter
-- queue, or the completed tasks kept after success (dead -> gone, completed -> gone).
--
-- KEYS[1] the dead zset or the completed zset
--
-- ARGV[1] the record exactly as stored (the fence: a record re-run, trimmed or deleted
--         meanwhile is no longer there, and nothing happens)
--
-- The id index keeps what it knows of the id (failed or completed) until it forgets it as
-- usual, so a duplicate of the task is still refused for that long; tasks that depended on a
-- dead task were told it failed when it died. Returns 1, or 0 when the record is gone.
--
-- Faults (prelude.lua): a wrong-type key raises CORRUPT naming the key before anything moves.
want(KEYS[1], 'zset')
return redis.call('ZREM', KEYS[1], ARGV[1])
