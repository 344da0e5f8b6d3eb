-- fetch.lua — lease up to N pending tasks to a server (pending -> active).
--
-- KEYS[1] foreign list    (pending members that are no record of ours, on their way to the
--                          dead-letter queue: see below)
-- KEYS[2] leases zset     (member = server id, score = lease deadline in Unix ms, Redis clock)
-- KEYS[3] the server's active hash (field = task id,
--                          value = 16-digit fencing token .. "|" .. record)
-- KEYS[4] token counter   (one fencing token per fetch; every delivery of a task gets a new one)
-- KEYS[5] wake marker zset
-- KEYS[6] paused flag (while it exists the queue hands out nothing)
-- KEYS[7] limits hash     (fields `concurrency`, `rate`, `period_ms`; see broker/limits.rs)
-- KEYS[8] rate bucket     (string "tokens|Unix ms": the rate limit's token bucket)
-- KEYS[9 .. 8+h] the active hashes of the other servers holding a lease on the queue, as the
--         caller last knew them (only read under a concurrency limit)
-- then    the band block (bands.lua, with the group block of groups.lua): every band of the
--         bands zset must be in it
--
-- ARGV[1] N, the most tasks to take
-- ARGV[2] lease duration in ms
-- ARGV[3] server id
-- ARGV[4] h, then h server ids (ARGV[5 .. 4+h]), the owners of KEYS[9 .. 8+h] in order
-- then    the band block's descriptor
--
-- Limits (flow control): with a concurrency limit C, at most C tasks of the queue are leased
-- at once across every server whose lease has not lapsed (a lapsed server's tasks are being
-- taken back: its slots count no more). The script counts them itself, HLEN of each live
-- holder's active hash, so the check and the lease are one atomic step and exact under races;
-- a live holder whose active hash the caller did not pass fails the call with
-- "HOLDERS id ..." (every live holder) before anything is written, and the caller calls again
-- with them. With a rate limit of R per P ms, a token bucket (R/P tokens per ms, holding at
-- most max(1, R/10)) allows one start per token, across every server. When the limits allow
-- nothing while tasks wait, the reply is {"L", ms, held by concurrency, held by rate}: try
-- again in about that long. A reply that leased tasks while a limit held some back carries
-- the same two counts after its foreign list ({} when there is none): the tasks asked for that
-- each limit refused (for the metrics).
--
-- Groups (groups.lua): while a group may run (the turn zset is not empty, or a held group's
-- time is over) tasks are handed out round-robin: one task of each group in turn order, the
-- tasks without a group (the bands) counting as one group, then a second of each, and so on;
-- a group served goes to the end of the turn. A group at its concurrency limit (its rule or
-- override: limits hash fields `g_concurrency`, `g_rate`, `g_period_ms`, or the group's field of
-- the group limits hash) is moved to the full set, one out of rate tokens to the wait zset
-- until its next token; neither costs its tasks an attempt. Such a reply carries the held
-- counts of the group limits too: {token, records, foreign or {}, held_c, held_r, held_gc,
-- held_gr} (and {"L", ms, held_c, held_r, held_gc, held_gr} when nothing could be leased), so
-- the caller knows the queue has groups.
--
-- Tasks are taken from the head of the lowest band first (priority 0 runs first), then the
-- next band, until N. The lease belongs to the server, not to each task: one ZADD per fetch
-- instead of one entry per task. The server's heartbeat extends it; when it lapses, the
-- recoverer takes back everything in the server's active hash.
-- Returns {token, {record, ...}}, or {} when the queue is empty or paused; a third element
-- {member, ...} lists members that are no record of ours (shorter than the head, or another
-- format byte): they are not leased, since two of them could share one active field (their
-- "id") and overwrite each other, but moved to the foreign list, from which the broker sets
-- them aside one by one (bury.lua; the janitor finishes what a crash interrupted). When tasks
-- remain the wake marker is set again, so that a second blocked server wakes up too.
--
-- Faults (prelude.lua): every step that can fail (reading the bands, INCR of the token counter,
-- ZADD of the lease, HSET into the active hash, the foreign list's type) comes before the tasks
-- leave their band (LRANGE first, LTRIM last), so a key of the wrong type or a non-integer
-- counter raises CORRUPT naming the key and nothing moves (at most the token counter or the
-- lease advanced). A wrong-type wake marker is replaced.
-- (N = 0 asks for nothing: LRANGE 0 -1 below would read whole bands.)
if tonumber(ARGV[1]) < 1 or redis.call('EXISTS', KEYS[6]) == 1 then return {} end
local b = bands_open(#KEYS, #ARGV)
local g = b.g
local live = bands_all_live(b)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- The round robin runs while a group may run, or a held group's time is over. A queue that
-- never had groups pays one EXISTS for the two keys.
local grouped, w = false, nil
if redis.call('EXISTS', g.turn, g.wait) > 0 then
  grouped = rcall('ZCARD', g.turn) > 0
  if not grouped then
    w = rcall('ZRANGE', g.wait, 0, 0, 'WITHSCORES')
    grouped = w[2] ~= nil and tonumber(w[2]) <= now
  end
end
if #live == 0 and not grouped then
  groups_load()
  return groups_idle(g, w, now)
end

local need = tonumber(ARGV[1])
local lim = rcall('HMGET', KEYS[7], 'concurrency', 'rate', 'period_ms')
-- A limit field is a positive integer of at most 15 digits (broker/limits.rs writes no other),
-- checked before anything is written: anything else raises CORRUPT naming its hash.
local function limit_of(key, v, field)
  if not v or v == '' then return nil end
  if #v > 15 or not string.find(v, '^[1-9]%d*$') then
    corrupt(key, 'field ' .. field .. ' holds ' .. string.format('%q', v) .. ', not a positive integer')
  end
  return tonumber(v)
end
local conc = limit_of(KEYS[7], lim[1], 'concurrency')
local rate = limit_of(KEYS[7], lim[2], 'rate')
local period = limit_of(KEYS[7], lim[3], 'period_ms')
local bucket, held_c, held_r, held_gc, held_gr = nil, 0, 0, 0, 0
if conc then
  local h = tonumber(ARGV[4])
  local passed = {}
  for i = 1, h do passed[ARGV[4 + i]] = KEYS[8 + i] end
  local holders = rcall('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  local running, missing, alive = rcall('HLEN', KEYS[3]), false, {}
  for i = 1, #holders, 2 do
    local id = holders[i]
    if id ~= ARGV[3] and tonumber(holders[i + 1]) > now then
      alive[#alive + 1] = id
      if passed[id] then running = running + rcall('HLEN', passed[id]) else missing = true end
    end
  end
  if missing then error({ err = 'HOLDERS ' .. table.concat(alive, ' ') }) end
  if conc - running < need then
    held_c = need - math.max(0, conc - running)
    need = conc - running
  end
  -- Nothing to lease until a running task ends: poll again shortly.
  if need < 1 then return { 'L', 50, held_c, 0 } end
end

-- A token bucket as stored ('tokens|Unix ms'), refilled until now: rate per period tokens,
-- holding at most max(1, rate / 10). One that does not parse is a full one (it only paces).
local function refill(v, r, p)
  local cap = math.max(1, math.floor(r / 10))
  local tokens, last = cap, now
  if v then
    local tk, at = string.match(v, '^([%d.]+)|(%d+)')
    tk, at = tonumber(tk), tonumber(at)
    if tk and at then tokens, last = tk, at end
  end
  return math.min(cap, tokens + math.max(0, now - last) * r / p)
end
if rate and period then
  local tokens = refill(rcall('GET', KEYS[8]), rate, period)
  if math.floor(tokens) < need then
    held_r = need - math.floor(tokens)
    need = math.floor(tokens)
  end
  if need < 1 then
    return { 'L', math.max(1, math.ceil((1 - tokens) * period / rate)), held_c, held_r }
  end
  bucket = tokens
end

-- Read (LRANGE) band after band; nothing leaves a band before every check has passed.
-- `reads` keeps, per band read, {band, records read, asked for}.
local bout, reads = {}, {}
local function read_bands(n)
  for i = 1, #live do
    local p = live[i]
    local got = rcall('LRANGE', b.keys[p], 0, n - 1)
    reads[#reads + 1] = { p, #got, n }
    for j = 1, #got do bout[#bout + 1] = got[j] end
    n = n - #got
    if n == 0 then break end
  end
end

-- The round robin's plan (read only): which groups give how many tasks, in which order.
-- (Made in the grouped branch only: every table costs a queue without groups time.)
local out, order, cand, gs, take, park, due, run_of
local bands_at, bands_score
if not grouped then
  read_bands(need)
  out = bout
else
  groups_load()
  out, order, cand, gs, take, park, due, run_of = {}, {}, {}, {}, {}, {}, {}, {}
  if rcall('ZCARD', g.wait) > 0 then
    due = rcall('ZRANGEBYSCORE', g.wait, '-inf', now, 'LIMIT', 0, 100)
  end
  -- A few more than asked for: a group found held leaves the turn, and the next one serves.
  cand = rcall('ZRANGE', g.turn, 0, need + 7)
  local seen = {}
  for i = 1, #cand do seen[cand[i]] = true end
  for i = 1, #due do
    if not seen[due[i]] then
      cand[#cand + 1] = due[i]
      seen[due[i]] = 'due'
    end
  end
  bands_score = rcall('ZSCORE', g.turn, '')
  if #live > 0 and not seen[''] and not bands_score then
    cand[#cand + 1] = ''
    seen[''] = 'due'
  end
  local names = {}
  for i = 1, #cand do
    if cand[i] ~= '' then names[#names + 1] = cand[i] end
  end
  local gl = rcall('HMGET', KEYS[7], 'g_concurrency', 'g_rate', 'g_period_ms')
  local rule = { limit_of(KEYS[7], gl[1], 'g_concurrency'), limit_of(KEYS[7], gl[2], 'g_rate'),
    limit_of(KEYS[7], gl[3], 'g_period_ms') }
  -- Running counts, overrides and buckets are read only where a group limit may apply.
  local seqs, runs, overrides, buckets = {}, {}, {}, {}
  if #names > 0 then
    seqs = rcall('HMGET', g.seq, unpack(names))
    runs = rcall('HMGET', g.run, unpack(names))
    local any_override = rcall('EXISTS', g.limits) == 1
    if any_override then overrides = rcall('HMGET', g.limits, unpack(names)) end
    if any_override or rule[2] then buckets = rcall('HMGET', g.rate, unpack(names)) end
  end
  local cap, j = {}, 0
  for i = 1, #cand do
    local name = cand[i]
    if name == '' then
      bands_at = i
      if #live > 0 then
        read_bands(need)
        cap[i] = #bout
      else
        cap[i] = 0
      end
    else
      j = j + 1
      local s = group_parse(g, name, seqs[j])
      s.due = seen[name] == 'due'
      gs[i] = s
      local lc, lr, lp = rule[1], rule[2], rule[3]
      if overrides[j] then
        local c1, r1, p1 = string.match(overrides[j], '^(%d*)|(%d*)|(%d*)$')
        if not c1 then
          corrupt(g.limits, 'holds ' .. string.format('%q', overrides[j]) .. ' for group '
            .. string.format('%q', name) .. ', not "concurrency|rate|period_ms"')
        end
        lc = limit_of(g.limits, c1, 'concurrency of ' .. name)
        lr = limit_of(g.limits, r1, 'rate of ' .. name)
        lp = limit_of(g.limits, p1, 'period_ms of ' .. name)
      end
      local running = 0
      if runs[j] then
        if not is_count(runs[j]) then
          corrupt(g.run, 'holds a non-integer count for group ' .. string.format('%q', name))
        end
        running = tonumber(runs[j])
      end
      run_of[name] = running
      local c = s.c
      if c > 0 and lc and lc - running < c then c = lc - running end
      if c > 0 and lr and lp then
        s.rate, s.period = lr, lp
        s.tokens = refill(buckets[j], lr, lp)
        if math.floor(s.tokens) < c then c = math.floor(s.tokens) end
      end
      if s.c > 0 and c < 1 then
        -- Held: at the concurrency limit until one of its tasks ends, or out of tokens until
        -- the next one.
        if lc and lc - running < 1 then
          park[i] = 'full'
          held_gc = held_gc + 1
        else
          park[i] = now + math.max(1, math.ceil((1 - s.tokens) * lp / lr))
          held_gr = held_gr + 1
        end
      end
      cap[i] = math.max(0, c)
    end
  end
  -- Round after round, one task of each group that has one left, until `need`.
  local act = {}
  for i = 1, #cand do
    take[i] = 0
    if cap[i] > 0 then act[#act + 1] = i end
  end
  while need > 0 and #act > 0 do
    local nxt = {}
    for _, i in ipairs(act) do
      if need == 0 then break end
      take[i] = take[i] + 1
      need = need - 1
      order[#order + 1] = i
      if cap[i] > take[i] then nxt[#nxt + 1] = i end
    end
    act = nxt
  end
  -- The records of each group: its fields from the head on, stepping over holes (cancelled
  -- tasks), at most 1,000 holes per group and call.
  -- First one HMGET for every group's first fields (holes are rare), then group by group for
  -- a group that met one.
  local recs, first, owner = {}, {}, {}
  for i = 1, #cand do
    local s = gs[i]
    if s and take[i] > 0 then
      s.fields, s.newh, recs[i] = {}, s.h, {}
      for x = 0, math.min(take[i], s.t - s.h + 1) - 1 do
        first[#first + 1] = cand[i] .. '|' .. (s.h + x)
        owner[#owner + 1] = i
      end
    end
  end
  if #first > 0 then
    local vals = rcall('HMGET', g.tasks, unpack(first))
    for x = 1, #first do
      local i = owner[x]
      local s = gs[i]
      s.newh = s.newh + 1
      if vals[x] then
        recs[i][#recs[i] + 1] = vals[x]
        s.fields[#s.fields + 1] = first[x]
      end
    end
  end
  for i = 1, #cand do
    local s = gs[i]
    if s and take[i] > 0 then
      local name, got, fields = cand[i], recs[i], s.fields
      local h, holes = s.newh, #s.fields < take[i] and take[i] - #s.fields or 0
      while #got < take[i] and h <= s.t and holes < 1000 do
        local n = math.min(take[i] - #got, s.t - h + 1)
        local f = {}
        for x = 0, n - 1 do f[#f + 1] = name .. '|' .. (h + x) end
        local vals = rcall('HMGET', g.tasks, unpack(f))
        for x = 1, n do
          if #got == take[i] then break end
          if vals[x] then
            got[#got + 1] = vals[x]
            fields[#fields + 1] = f[x]
          else
            holes = holes + 1
          end
          h = h + 1
        end
      end
      s.fields, s.newh = fields, h
      s.left = (h > s.t) and 0 or math.max(1, s.c - #got)
      recs[i] = got
    end
  end
  -- Handed out in round-robin order.
  local nb, pos = 0, {}
  for _, i in ipairs(order) do
    if i == bands_at then
      nb = nb + 1
      out[#out + 1] = bout[nb]
    else
      pos[i] = (pos[i] or 0) + 1
      local r = recs[i][pos[i]]
      if r then out[#out + 1] = r end
    end
  end
  -- The bands give only the first nb of what was read.
  local left = nb
  for x = 1, #reads do
    local used = math.min(reads[x][2], left)
    left = left - used
    reads[x][4] = used
  end
  if bands_at then take[bands_at] = nb end
end

local leased, foreign = out, nil
for i = 1, #out do
  local record = out[i]
  -- A record of ours: format 1 with a body, or format 2 with its group and a body.
  local f, ok = str_byte(record, 1), false
  if f == 1 then
    ok = #record >= 19
  elseif f == 2 then
    local n = str_byte(record, 19)
    ok = n ~= nil and n > 0 and #record > 19 + n
  end
  if not ok then
    if not foreign then
      foreign, leased = {}, {}
      for j = 1, i - 1 do leased[j] = out[j] end
    end
    foreign[#foreign + 1] = record
  elseif foreign then
    leased[#leased + 1] = record
  end
end
if foreign then want(KEYS[1], 'list') end
if grouped then
  want(g.full, 'set')
  want(g.wait, 'zset')
end
if #out == 0 and not grouped then
  -- (groups_idle only reads, and a band left listed though empty would be listed again.)
  groups_load()
  local answer = groups_idle(g, w, now)
  for i = 1, #reads do redis.call('ZREM', b.zset, tostring(reads[i][1])) end
  return answer
end

local token
if #out > 0 then
  token = rcall('INCR', KEYS[4])
  rcall('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
  local prefix = string.format('%016d', token) .. '|'
  local active = {}
  for i = 1, #leased do
    active[2 * i - 1] = str_sub(leased[i], 3, 18)
    active[2 * i] = prefix .. leased[i]
  end
  if #active > 0 then rcall('HSET', KEYS[3], unpack(active)) end
end
-- Nothing below can fail: the bands were read as lists above (SET replaces any type), and
-- every key of the group block was read or checked as its type.
if bucket then
  redis.call('SET', KEYS[8], string.format('%.6f', bucket - #leased) .. '|' .. now,
    'PX', string.format('%d', math.max(1000, 2 * period)))
end
for i = 1, #reads do
  local p, n, asked = reads[i][1], reads[i][4] or reads[i][2], reads[i][3]
  if n > 0 then redis.call('LTRIM', b.keys[p], n, -1) end
  -- Emptied: it had fewer than asked for, and all of them were taken.
  if reads[i][2] < asked and n == reads[i][2] then redis.call('ZREM', b.zset, tostring(p)) end
end
if foreign then
  for i = 1, #foreign, 4000 do
    redis.call('RPUSH', KEYS[1], unpack(foreign, i, math.min(i + 3999, #foreign)))
  end
end

local more
if not grouped then
  -- Tasks remain when the last band read was not emptied or a band after it is live.
  local lastr = reads[#reads]
  more = lastr[2] == lastr[3] or #reads < #live
else
  -- The bands hold nothing more: every band was read, the last had fewer than asked for, and
  -- all that was read was taken.
  local lr = reads[#reads]
  local bands_emptied = #live == 0 or (bands_at ~= nil and #reads == #live
    and lr[2] < lr[3] and lr[4] == lr[2])
  for i = 1, #due do redis.call('ZREM', g.wait, due[i]) end
  -- The running count of each group, from the records leased.
  local ran = {}
  for i = 1, #leased do
    local name = group_of(leased[i])
    -- Only the candidates' counts were read (a grouped record found in a band, which no
    -- script of ours writes, is leased uncounted rather than written over a count unread).
    if name and run_of[name] then ran[name] = (ran[name] or 0) + 1 end
  end
  -- One command per key for all the groups of the call, not one per group.
  local function each(cmd, key, args, step)
    for x = 1, #args, step do
      redis.call(cmd, key, unpack(args, x, math.min(x + step - 1, #args)))
    end
  end
  local run_set = {}
  for name, n in pairs(ran) do
    run_set[#run_set + 1] = name
    run_set[#run_set + 1] = (run_of[name] or 0) + n
  end
  each('HSET', g.run, run_set, 4000)
  -- Served groups go to the end of the turn, in the order of their last task in this call.
  local last_at = {}
  for x, i in ipairs(order) do last_at[i] = x end
  local to_end, dels, seq_set, seq_del, rate_set, out_turn, full, wait = {}, {}, {}, {}, {}, {}, {}, {}
  for i = 1, #cand do
    local name, s = cand[i], gs[i]
    if s then
      if s.fields then
        for x = 1, #s.fields do dels[#dels + 1] = s.fields[x] end
      end
      if s.newh then
        if s.left == 0 then
          seq_del[#seq_del + 1] = name
        else
          seq_set[#seq_set + 1] = name
          seq_set[#seq_set + 1] = s.newh .. ' ' .. s.t .. ' ' .. s.left
        end
        if s.rate then
          rate_set[#rate_set + 1] = name
          rate_set[#rate_set + 1] =
            string.format('%.6f', s.tokens - take[i]) .. '|' .. now .. '|' .. s.period
        end
      end
      local left = s.left or s.c
      if left == 0 then
        out_turn[#out_turn + 1] = name
      elseif park[i] == 'full' then
        out_turn[#out_turn + 1] = name
        full[#full + 1] = name
      elseif park[i] then
        out_turn[#out_turn + 1] = name
        wait[#wait + 1] = park[i]
        wait[#wait + 1] = name
      elseif take[i] > 0 or s.due then
        to_end[#to_end + 1] = i
      end
    elseif i == bands_at then
      -- The bands: to the end of the turn while they hold tasks.
      if bands_emptied then
        out_turn[#out_turn + 1] = ''
      elseif take[i] > 0 or not bands_score then
        to_end[#to_end + 1] = i
      end
    end
  end
  if bands_score and #live == 0 then out_turn[#out_turn + 1] = '' end
  each('HDEL', g.tasks, dels, 4000)
  each('HSET', g.seq, seq_set, 4000)
  each('HDEL', g.seq, seq_del, 4000)
  each('HSET', g.rate, rate_set, 4000)
  each('ZREM', g.turn, out_turn, 4000)
  each('SADD', g.full, full, 4000)
  each('ZADD', g.wait, wait, 4000)
  table.sort(to_end, function(x, y) return (last_at[x] or 0) < (last_at[y] or 0) end)
  local turn_add = {}
  for _, i in ipairs(to_end) do
    turn_add[#turn_add + 1] = groups_next(g)
    turn_add[#turn_add + 1] = cand[i]
  end
  each('ZADD', g.turn, turn_add, 4000)
  -- No group left to take turns with: the bands alone need no round robin.
  local left = redis.call('ZCARD', g.turn)
  if left == 1 and redis.call('ZSCORE', g.turn, '') then
    redis.call('ZREM', g.turn, '')
    left = 0
  end
  more = left > 0 or not bands_emptied
  if #out == 0 then
    if left > 0 then return { 'L', 1, held_c, held_r, held_gc, held_gr } end
    local w = redis.call('ZRANGE', g.wait, 0, 0, 'WITHSCORES')
    if w[2] then
      return { 'L', math.max(1, math.min(50, tonumber(w[2]) - now)), held_c, held_r, held_gc, held_gr }
    end
    if held_gc > 0 or redis.call('SCARD', g.full) > 0 then
      return { 'L', 50, held_c, held_r, held_gc, held_gr }
    end
    return {}
  end
end
if more then wake(KEYS[5]) end
if grouped then return { token, leased, foreign or {}, held_c, held_r, held_gc, held_gr } end
if held_c + held_r > 0 then return {token, leased, foreign or {}, held_c, held_r} end
if foreign then return {token, leased, foreign} end
return {token, out}
