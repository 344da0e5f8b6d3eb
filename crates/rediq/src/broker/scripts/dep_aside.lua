-- dep_aside.lua — sets aside an outbox entry that could not be delivered (resolver, in the
-- dependency's queue), so that the entries behind it flow; it is tried again with backoff until
-- it is delivered. Nothing is dropped: an entry that fails forever stays set aside, with its
-- reason, for an operator to see.
--
-- KEYS[1] outbox list
-- KEYS[2] set-aside zset   (entry -> when to try it again, Unix ms; a malformed entry, never
--         tried again, is scored 2^52 + the time it was set aside: after every due time, in age
--         order, so that only the newest MAX_MALFORMED of them are kept)
-- KEYS[3] set-aside reasons hash (entry -> attempts .. "|" .. first failure (Unix ms) .. "|" .. reason)
--
-- ARGV[1] the entry, exactly as read from the outbox or the set-aside zset
-- ARGV[2] why it could not be delivered
-- ARGV[3] "retry" (backoff: 1 s, doubling, at most 60 s) or "never" (it cannot be parsed)
--
-- Entries that can be parsed are never dropped (a dependent would wait forever); malformed ones
-- carry no deliverable news, and at most MAX_MALFORMED of them are kept, so that garbage
-- written into an outbox cannot grow the set without bound.
--
-- Returns the number of failed attempts so far (1 = set aside just now), or 0 when the entry is
-- neither in the outbox nor set aside any more (another resolver delivered it meanwhile).
--
-- Faults (prelude.lua): the types of all three keys are checked before the first write; a
-- wrong-type key raises CORRUPT naming it and the entry stays where it was.
for i, kind in ipairs({'list', 'zset', 'hash'}) do want(KEYS[i], kind) end
local MAX_MALFORMED = 1000
local NEVER = 4503599627370496 -- 2^52: later than any due time
local entry = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local removed = redis.call('LREM', KEYS[1], 1, entry)
if removed == 0 and not redis.call('ZSCORE', KEYS[2], entry) then return 0 end
local attempts, first = 0, now
local prev = redis.call('HGET', KEYS[3], entry)
if prev then
  local a, f = string.match(prev, '^(%d+)|(%d+)|')
  attempts, first = tonumber(a) or 0, tonumber(f) or now
end
attempts = attempts + 1
local at
if ARGV[3] == 'retry' then
  at = now + math.min(1000 * 2 ^ math.min(attempts - 1, 16), 60000)
else
  at = NEVER + now
end
redis.call('ZADD', KEYS[2], string.format('%d', at), entry)
redis.call('HSET', KEYS[3], entry, attempts .. '|' .. string.format('%d', first) .. '|' .. ARGV[2])
if ARGV[3] ~= 'retry' then
  local over = redis.call('ZCOUNT', KEYS[2], string.format('%d', NEVER), '+inf') - MAX_MALFORMED
  if over > 0 then
    local oldest = redis.call('ZRANGEBYSCORE', KEYS[2], string.format('%d', NEVER), '+inf', 'LIMIT', 0, over)
    redis.call('ZREM', KEYS[2], unpack(oldest))
    redis.call('HDEL', KEYS[3], unpack(oldest))
  end
end
return attempts
