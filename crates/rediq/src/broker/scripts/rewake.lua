-- rewake.lua — sets a queue's wake marker, replacing one of the wrong type.
--
-- KEYS[1] wake marker zset
--
-- The marker carries no data, so every script that sets it replaces a wrong-type one
-- (prelude.lua's `wake`); this does the same for the fetcher, whose blocking wait over every
-- queue's marker fails while one of them has the wrong type. Setting it wakes the queue's
-- fetchers once: they find its tasks, if any. Returns 1.
wake(KEYS[1])
return 1
