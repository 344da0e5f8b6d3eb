-- rerun.lua — dead tasks run again (dead -> pending), their attempt count reset.
--
-- KEYS[1] dead zset
-- KEYS[2] wake marker zset
-- KEYS[3] failed ids zset (a task run again is no longer failed for tasks that depend on it)
-- then    the band block (bands.lua) of the bands of the records to run
-- then    the index block of the new records' ids, in ARGV order (index.lua)
--
-- ARGV[1] n; then 2 values per task: the dead record exactly as stored, and the record to run
--         (attempt count and error cleared; same id and priority)
-- then    the band block's descriptor, then the index block's descriptor
--
-- A dead record whose id the index knows as live or completed is skipped (the task runs, or
-- ran, under that id again since it died: running the record would run it twice).
-- A record that is no longer in the dead set (re-run or trimmed meanwhile) is skipped, so a
-- task is never re-run twice by concurrent calls. The task goes behind the pending tasks of its
-- band. Returns how many tasks went back.
--
-- Faults (prelude.lua): the dead set is read, the failure records and band lists checked and
-- the tasks written to their bands before they leave the dead set; a wrong-type key raises
-- CORRUPT naming the key and nothing moves. A wrong-type wake
-- marker is replaced.
local ix = ix_open()
local bands = bands_open(ix.base, #ARGV - 1)
local n = tonumber(ARGV[1])
if n == 0 then return 0 end
local olds = {}
for i = 1, n do olds[i] = ARGV[2 * i] end
local there = rcall('ZMSCORE', KEYS[1], unpack(olds))
local back, gone, ids, seen, at, was = {}, {}, {}, {}, {}, {}
for i = 1, n do
  local new = ARGV[2 * i + 1]
  local id = string.sub(ARGV[2 * i + 1], 3, 18)
  -- Two pairs naming the same dead record: only the first one runs. A dead record whose id is
  -- live again (enqueued again after the index forgot it) or completed since stays dead: running
  -- it would run, or complete, the task twice.
  local state = there[i] and not seen[olds[i]] and ix_get(ix, i, id)
  if there[i] and not seen[olds[i]] and state ~= 'L' and state ~= 'C' then
    seen[olds[i]] = true
    gone[#gone + 1] = olds[i]
    bands_group(bands, back, band_of(new), new)
    ids[#ids + 1] = id
    at[#ids] = i
    was[#ids] = state
  end
end
if #ids == 0 then return 0 end
bands_check(bands)
want(KEYS[3], 'zset')
-- Nothing below can fail.
for p, records in pairs(back) do bands_push(bands, p, 'RPUSH', records) end
if bands.g.order then groups_flush(bands.g) end
redis.call('ZREM', KEYS[3], unpack(ids))
redis.call('ZREM', KEYS[1], unpack(gone))
for j = 1, #ids do ix_put(ix, at[j], ids[j], 'L', not was[j]) end
ix_close(ix)
wake(KEYS[2])
return #ids
