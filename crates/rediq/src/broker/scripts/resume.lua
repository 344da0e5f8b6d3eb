-- resume.lua — resumes a paused queue and wakes its blocked fetchers.
--
-- KEYS[1] pause flag (string)
-- KEYS[2] wake marker zset
--
-- Faults (prelude.lua): the wake marker carries no data, so one of the wrong type is replaced
-- (`wake`); nothing here can fail, so the queue is never left resumed with an error reported
-- (the caller would think it still paused) nor paused with its fetchers asleep.
wake(KEYS[2])
redis.call('DEL', KEYS[1])
return 1
