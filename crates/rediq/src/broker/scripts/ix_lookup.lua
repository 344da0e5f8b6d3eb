-- ix_lookup.lua — what a queue knows of some task ids (reads only).
--
-- KEYS[1]   failed ids zset (dead-lettered or cancelled ids -> time)
-- then      the index block of the ids, in ARGV order (index.lua)
--
-- ARGV[1..m] the 16-byte ids
-- then       the index block's descriptor
--
-- Returns one string per id: 'L' live (pending, delayed, retry, active or waiting), 'C'
-- completed (within the finished-task memory), 'F' dead-lettered or cancelled, '' unknown.
local ix = ix_open()
local out = {}
for i = 1, ix.m do
  local id = ARGV[i]
  local v = ix_get(ix, i, id)
  -- The index decides while it knows the id; the failure records answer for a failed id it
  -- forgot (they are kept an hour longer).
  if not v and rcall('ZSCORE', KEYS[1], id) then v = 'F' end
  out[i] = v or ''
end
return out
