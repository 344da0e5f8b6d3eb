-- dep_claim.lua — one resolver at a time delivers a queue's outbox (resolver, in the
-- dependency's queue). Only an optimisation: delivery is idempotent, so two resolvers at once
-- are correct, just wasteful; the claim lapses by itself, so a resolver that dies or stalls
-- holds the others off for at most its TTL, after which another takes over.
--
-- KEYS[1] claim string (holder token, with a TTL)
--
-- ARGV[1] the caller's token (one per delivery round)
-- ARGV[2] "take" (take it, or renew it when it is the caller's) or "drop" (give it up if it
--         is still the caller's)
-- ARGV[3] TTL in ms (with "take")
--
-- Returns 1 when the caller holds the claim (take) or dropped it (drop), 0 otherwise.
--
-- Faults: the claim carries no data but a token, so a claim key of the wrong type is nobody's
-- claim: "take" replaces it (SET overwrites any type) instead of holding every resolver off
-- the queue's outbox until an operator deletes it; "drop" leaves it.
local holder = redis.pcall('GET', KEYS[1])
if type(holder) == 'table' and holder.err then holder = false end
if ARGV[2] == 'drop' then
  if holder == ARGV[1] then
    redis.call('DEL', KEYS[1])
    return 1
  end
  return 0
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
