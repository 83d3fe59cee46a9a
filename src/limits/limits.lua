-- taogate limiter: admit / settle / peek for every descriptor of one request, in one call, and the
-- request's balance hold with it (see src/limits/holds.rs); sync / balance for an account's cached
-- spendable balance. Mirrors src/limits/memory.rs exactly; the same test suite runs against both.
--
-- KEYS[1..n] descriptor base keys; all share the tenant's hash tag, so they live in one Cluster slot
--           (quota period keys are derived as KEYS[i] .. ':' .. period, window hashes as
--           KEYS[i] .. ':w', in the same slot).
-- KEYS[n+1..n+4]  with a hold: the account's balance hash (its holds included), the holds zset of
--           older versions of this script, the zset of usage events the ledger already holds
--           (retired; a late capture of one is ignored) and the hash of captured usage events the
--           ledger does not hold yet (pending: event id → amount; out of the balance hash, which
--           stays small — Redis keeps a small hash as one flat list, searched end to end).
-- KEYS[#KEYS] settle only: marks the request's token correction as applied, so it applies once
--           even when a timed-out call is both run late by Redis and replayed.
-- ARGV[1]   op: 'admit' | 'settle' | 'peek' | 'sync' | 'balance' | 'seed'
-- ARGV[2]   now in ms, or -1 for Redis server time (TIME)
-- ARGV[3]   request id (concurrency member, hold id)
-- ARGV[4]   admit: tokens charged; settle: actual - charged; sync: ledger balance
-- ARGV[5]   admit: lease in ms; settle: admission time in ms; sync: ledger version
-- ARGV[6]   n, the number of descriptors
-- ARGV[5+2i], ARGV[6+2i]   descriptor i: kind tag (rpm tpm conc rpd tpd rpmo tpmo), limit
-- then, with a hold: admit: amount, floor; settle: usage event id ('' none), captured amount, the
-- hold's amount; sync: the committed usage event ids; seed: one value per descriptor (the period's
-- usage).
--
-- Every redis.call costs Redis a conversion each way besides the command: the steady path keeps
-- them few — an expiry is refreshed when a window's cell or a counter is new (not on every call),
-- a hold lives in the balance hash with its lease's end (no sorted set), and expired holds are
-- looked for only once the earliest lease in the hash has ended.
--
-- Returns admit/peek: {1, now, used_1, reset_1, …}; refused: {0, now, index, retry_ms, used_1, reset_1, …};
-- balance not cached: {2, now}; balance short: {3, now, ledger, version, pending, held};
-- quota counters of this period missing (first use, or Redis lost them): {4, now, index…} — the
-- caller rebuilds them from the usage records ('seed', with ARGV[2] = that now) and asks again;
-- settle, sync: {1}; balance: {} or {ledger, version, pending, held, pending event id…} as strings.

local CELL, CELLS, DAY = 1000, 61, 86400000
local op = ARGV[1]
local now = tonumber(ARGV[2])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local request_id = ARGV[3]
local tokens = tonumber(ARGV[4])
local arg5 = tonumber(ARGV[5])
local n = tonumber(ARGV[6])
local h = 7 + 2 * n
local hold = #ARGV >= h + 1 and (op == 'admit' or op == 'settle')
local BAL_TTL = 86400000
-- how long a retired usage event is remembered (a capture arrives well within it)
local RETIRED_MS = 600000

local floor = math.floor
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (m > 2) and (m - 3) or (m + 9)
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end
local function civil_from_days(z)
  z = z + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local m = (mp < 10) and (mp + 3) or (mp - 9)
  if m <= 2 then y = y + 1 end
  return y, m
end
-- period id and end (ms) of a quota kind at time t
local function period(kind, t)
  local day = floor(t / DAY)
  if kind == 'rpd' or kind == 'tpd' then return day, (day + 1) * DAY end
  local y, m = civil_from_days(day)
  local ny, nm = y, m + 1
  if nm == 13 then ny, nm = y + 1, 1 end
  return y * 100 + m, days_from_civil(ny, nm, 1) * DAY
end
local function shape(kind)
  if kind == 'rpm' or kind == 'tpm' then return 'window' end
  if kind == 'conc' then return 'slots' end
  return 'counter'
end
local function counts_tokens(kind)
  return kind == 'tpm' or kind == 'tpd' or kind == 'tpmo'
end

-- A window is a hash at KEYS[i] .. ':w': one field per 1 s cell (its count), 's' the sum of the
-- cells and 'lo' the lowest cell present, so a reading is one HMGET. Once 'lo' ages out (about
-- once a second under steady traffic) the hash is rebuilt from HGETALL: stale cells dropped, 's'
-- and 'lo' recomputed. Returns sum, lo (nil when empty).
local function window_state(key)
  local v = redis.call('HMGET', key, 's', 'lo')
  local used, lo = tonumber(v[1]), tonumber(v[2])
  if lo == nil then return 0, nil end
  local cutoff = floor(now / CELL) - CELLS
  if lo > cutoff then return used, lo end
  local raw = redis.call('HGETALL', key)
  local stale = {}
  used, lo = 0, nil
  for j = 1, #raw, 2 do
    local c = tonumber(raw[j])
    if c ~= nil then
      if c > cutoff then
        used = used + tonumber(raw[j + 1])
        if lo == nil or c < lo then lo = c end
      else
        stale[#stale + 1] = raw[j]
      end
    end
  end
  if lo == nil then
    redis.call('DEL', key)
    return 0, nil
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  redis.call('HSET', key, 's', used, 'lo', lo)
  return used, lo
end
-- when `excess` more must age out of a window: its live cells in order (only on a refusal)
local function window_retry(key, excess)
  local raw, cells, cutoff = redis.call('HGETALL', key), {}, floor(now / CELL) - CELLS
  for j = 1, #raw, 2 do
    local c = tonumber(raw[j])
    if c ~= nil and c > cutoff then cells[#cells + 1] = {c, tonumber(raw[j + 1])} end
  end
  table.sort(cells, function(a, b) return a[1] < b[1] end)
  local freed = 0
  for _, cv in ipairs(cells) do
    freed = freed + cv[2]
    if freed >= excess then return (cv[1] + CELLS) * CELL - now end
  end
  return CELLS * CELL
end
-- adds `cost` to the window's cell of time `t`; true when that cell is new
local function window_add(key, t, cost, lo)
  local cell = floor(t / CELL)
  local v = redis.call('HINCRBY', key, cell, cost)
  redis.call('HINCRBY', key, 's', cost)
  if lo == nil or cell < lo then redis.call('HSET', key, 'lo', cell) end
  return v == cost
end

-- reading of descriptor i at `now` for `cost`: used, reset_ms, retry_ms (nil when it fits)
local function read(key, kind, limit, cost)
  local s = shape(kind)
  if s == 'window' then
    local used, lo = window_state(key .. ':w')
    local reset = 0
    if lo then reset = (lo + CELLS) * CELL - now end
    local retry = nil
    if used + cost > limit then retry = window_retry(key .. ':w', used + cost - limit) end
    return used, reset, retry, lo
  elseif s == 'slots' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local used = redis.call('ZCARD', key)
    if used + 1 > limit then return used, 0, CELL end
    return used, 0, nil
  else
    local p, pend = period(kind, now)
    local raw = redis.call('GET', key .. ':' .. p)
    local used = tonumber(raw or '0')
    if used + cost > limit then return used, pend - now, pend - now, nil, not raw end
    return used, pend - now, nil, nil, not raw
  end
end

-- balance hash fields: ledger, ver, pending, held; per hold 'h:' .. request id (its amount) and
-- 'x:' .. request id (its lease's end); 'sx' no later than the earliest lease end among the holds
-- (absent: no hold); 't' when the hash's expiry was last pushed back; 'p:' .. usage event id only
-- where an older version of this script recorded a capture (newer ones use the pending hash).
-- Holds end at their settle, so expiring one is rare: the hash is read whole only once `sx` has
-- passed. Returns the amount released and the new `sx` (written here; nil: no hold left).
local function sweep(bal, sx)
  if sx == nil or sx > now then return 0, sx end
  local raw = redis.call('HGETALL', bal)
  local amounts, ends = {}, {}
  for j = 1, #raw, 2 do
    local tag, id = string.sub(raw[j], 1, 2), string.sub(raw[j], 3)
    if tag == 'h:' then amounts[id] = tonumber(raw[j + 1])
    elseif tag == 'x:' then ends[id] = tonumber(raw[j + 1]) end
  end
  local gone, freed, next_sx = {}, 0, nil
  for id, e in pairs(ends) do
    if e > now and amounts[id] then
      if next_sx == nil or e < next_sx then next_sx = e end
    else
      -- ended, or its hold was released by an older version of this script (which kept only 'h:')
      gone[#gone + 1] = 'x:' .. id
      if amounts[id] then
        gone[#gone + 1] = 'h:' .. id
        freed = freed + amounts[id]
      end
    end
  end
  if #gone > 0 then redis.call('HDEL', bal, unpack(gone)) end
  if freed ~= 0 then redis.call('HINCRBY', bal, 'held', -freed) end
  if next_sx then redis.call('HSET', bal, 'sx', next_sx) else redis.call('HDEL', bal, 'sx') end
  return freed, next_sx
end
-- holds taken by an older version of this script end through the sorted set `hz` (read when the
-- hash's expiry is pushed back, about once an hour, and by the balance op)
local function sweep_zset(bal, hz)
  local expired = redis.call('ZRANGEBYSCORE', hz, '-inf', now)
  local freed = 0
  for _, r in ipairs(expired) do
    local a = redis.call('HGET', bal, 'h:' .. r)
    if a then
      redis.call('HDEL', bal, 'h:' .. r)
      redis.call('HINCRBY', bal, 'held', -tonumber(a))
      freed = freed + tonumber(a)
    end
  end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', hz, '-inf', now) end
  return freed
end
local REFRESH_MS = 3600000
local function drop_pending(bal, pend, event)
  local a = redis.call('HGET', pend, event)
  if a then
    redis.call('HDEL', pend, event)
  else
    -- (recorded by an older version of this script)
    a = redis.call('HGET', bal, 'p:' .. event)
    if a then redis.call('HDEL', bal, 'p:' .. event) end
  end
  if a then redis.call('HINCRBY', bal, 'pending', -tonumber(a)) end
end

if op == 'sync' then
  local bal, retired, pend = KEYS[1], KEYS[3], KEYS[4]
  local current = tonumber(redis.call('HGET', bal, 'ver') or '-1')
  if arg5 > current then redis.call('HSET', bal, 'ledger', ARGV[4], 'ver', ARGV[5]) end
  redis.call('ZREMRANGEBYSCORE', retired, '-inf', now - RETIRED_MS)
  for i = h, #ARGV do
    drop_pending(bal, pend, ARGV[i])
    redis.call('ZADD', retired, now, ARGV[i])
  end
  redis.call('PEXPIRE', bal, BAL_TTL)
  redis.call('PEXPIRE', pend, BAL_TTL)
  redis.call('PEXPIRE', retired, RETIRED_MS)
  return {1}
end
if op == 'balance' then
  local bal, hz = KEYS[1], KEYS[2]
  local v = redis.call('HMGET', bal, 'ledger', 'ver', 'pending', 'held', 'sx')
  if not v[2] then return {} end
  local freed = sweep(bal, tonumber(v[5])) + sweep_zset(bal, hz)
  if freed ~= 0 then v = redis.call('HMGET', bal, 'ledger', 'ver', 'pending', 'held') end
  local out = {v[1], v[2], v[3] or '0', v[4] or '0'}
  for _, f in ipairs(redis.call('HKEYS', KEYS[4])) do out[#out + 1] = f end
  for _, f in ipairs(redis.call('HKEYS', bal)) do
    if string.sub(f, 1, 2) == 'p:' then out[#out + 1] = string.sub(f, 3) end
  end
  return out
end

if op == 'settle' then
  -- slot releases are idempotent; a token correction is applied once (marker kept 60 s, long
  -- enough for a call that timed out to be replayed after Redis answers again).
  if tokens ~= 0 and not redis.call('SET', KEYS[#KEYS], 1, 'NX', 'PX', 60000) then
    tokens = 0
  end
  if hold then
    -- the hold is released once (HDEL), the capture recorded once per usage event (HSETNX)
    local bal, hz = KEYS[n + 1], KEYS[n + 2]
    local released = redis.call('HDEL', bal, 'h:' .. request_id, 'x:' .. request_id)
    if released > 0 then
      redis.call('HINCRBY', bal, 'held', -tonumber(ARGV[h + 2]))
      -- taken by an older version of this script: its lease is in the sorted set
      if released == 1 then redis.call('ZREM', hz, request_id) end
    end
    local event, captured = ARGV[h], tonumber(ARGV[h + 1])
    -- (a hold was released: the balance is cached, as it was when the hold was taken)
    if event ~= '' and captured ~= 0 and (released > 0 or redis.call('HEXISTS', bal, 'ver') == 1)
        and not redis.call('ZSCORE', KEYS[n + 3], event)
        and redis.call('HSETNX', KEYS[n + 4], event, captured) == 1 then
      redis.call('HINCRBY', bal, 'pending', captured)
    end
  end
end
local function kind_of(i) return ARGV[5 + 2 * i] end
local function limit_of(i) return tonumber(ARGV[6 + 2 * i]) end

if op == 'seed' then
  -- a quota counter rebuilt from the usage records: never lowered (a replica that seeded first
  -- may already have counted admissions on top)
  for i = 1, n do
    local kind = kind_of(i)
    local p, pend = period(kind, now)
    local pkey = KEYS[i] .. ':' .. p
    local value = tonumber(ARGV[h + i - 1])
    local current = tonumber(redis.call('GET', pkey) or '-1')
    if current < value then
      redis.call('SET', pkey, value, 'PX', pend - now + CELLS * CELL)
    end
  end
  return {1}
end
local function cost_of(i)
  if counts_tokens(kind_of(i)) then return tokens end
  return 1
end

if op == 'settle' then
  local at = arg5
  for i = 1, n do
    local key, kind = KEYS[i], kind_of(i)
    local s = shape(kind)
    if s == 'slots' then
      redis.call('ZREM', key, request_id)
    elseif tokens ~= 0 and counts_tokens(kind) then
      if s == 'window' and floor(at / CELL) > floor(now / CELL) - CELLS then
        -- ('lo' is there whenever the hash is)
        local w = key .. ':w'
        local lo = tonumber(redis.call('HGET', w, 'lo'))
        if lo then window_add(w, at, tokens, lo) end
      else
        local p = period(kind, at)
        local pkey = key .. ':' .. p
        if redis.call('EXISTS', pkey) == 1 then redis.call('INCRBY', pkey, tokens) end
      end
    end
  end
  return {1}
end

local out, lows, unseeded = {}, {}, {}
local refused, refused_retry = 0, -1
for i = 1, n do
  local cost = (op == 'admit') and cost_of(i) or 0
  local used, reset, retry, lo, missing = read(KEYS[i], kind_of(i), limit_of(i), cost)
  lows[i] = lo or false
  if missing then unseeded[#unseeded + 1] = i end
  out[#out + 1] = used
  out[#out + 1] = reset
  if op == 'admit' and retry ~= nil and retry > refused_retry then
    refused, refused_retry = i, retry
  end
end
if op == 'peek' then
  table.insert(out, 1, now)
  table.insert(out, 1, 1)
  return out
end
if #unseeded > 0 then
  table.insert(unseeded, 1, now)
  table.insert(unseeded, 1, 4)
  return unseeded
end
if refused > 0 then
  table.insert(out, 1, refused_retry)
  table.insert(out, 1, refused)
  table.insert(out, 1, now)
  table.insert(out, 1, 0)
  return out
end
local lease = arg5
if hold then
  local bal, hz, amount, floor_ = KEYS[n + 1], KEYS[n + 2], tonumber(ARGV[h]), tonumber(ARGV[h + 1])
  local v = redis.call('HMGET', bal, 'ledger', 'ver', 'pending', 'held', 'sx', 't')
  if not v[2] then return {2, now} end
  local ledger, pending, held = tonumber(v[1]), tonumber(v[3] or '0'), tonumber(v[4] or '0')
  local freed, sx = sweep(bal, tonumber(v[5]))
  local touched = tonumber(v[6])
  local refresh = touched == nil or now - touched >= REFRESH_MS or now < touched
  if refresh then freed = freed + sweep_zset(bal, hz) end
  held = held - freed
  if ledger - pending - held - amount < floor_ then
    return {3, now, ledger, tonumber(v[2]), pending, held}
  end
  -- one HSET: the hold, its lease's end, and where needed the earliest end and the refresh time;
  -- the fields it adds tell whether this request's hold is new (a repeated call holds once)
  local ends = now + lease
  local set, expected = {'h:' .. request_id, ARGV[h], 'x:' .. request_id, ends}, 2
  if sx == nil or ends < sx then
    set[#set + 1], set[#set + 2] = 'sx', ends
    if sx == nil then expected = expected + 1 end
  end
  if refresh then
    set[#set + 1], set[#set + 2] = 't', now
    if touched == nil then expected = expected + 1 end
  end
  if redis.call('HSET', bal, unpack(set)) == expected then
    redis.call('HINCRBY', bal, 'held', ARGV[h])
  end
  if refresh then
    redis.call('PEXPIRE', bal, BAL_TTL)
    redis.call('PEXPIRE', KEYS[n + 4], BAL_TTL)
  end
end

for i = 1, n do
  local key, kind = KEYS[i], kind_of(i)
  local s, cost = shape(kind), cost_of(i)
  if s == 'window' then
    local cell = floor(now / CELL)
    -- a new cell pushes the expiry back: the hash outlives its newest cell
    if window_add(key .. ':w', now, cost, lows[i] or nil) then
      redis.call('PEXPIRE', key .. ':w', (CELLS + 1) * CELL)
    end
    if out[2 * i] == 0 then out[2 * i] = (cell + CELLS) * CELL - now end
    out[2 * i - 1] = out[2 * i - 1] + cost
  elseif s == 'slots' then
    redis.call('ZADD', key, now + lease, request_id)
    -- the set lives as long as its longest lease: a new set gets this one; an existing one is
    -- pushed back only (GT; Redis before 7.0 has no GT: read the expiry instead)
    if out[2 * i - 1] == 0 then
      redis.call('PEXPIRE', key, lease)
    else
      local r = redis.pcall('PEXPIRE', key, lease, 'GT')
      if type(r) == 'table' and r.err then
        if redis.call('PTTL', key) < lease then redis.call('PEXPIRE', key, lease) end
      end
    end
    out[2 * i - 1] = out[2 * i - 1] + 1
  else
    local p, pend = period(kind, now)
    local pkey = key .. ':' .. p
    -- a new counter expires after its period; relative to the script's own now (not PEXPIREAT: an
    -- injected clock and Redis' clock differ)
    if redis.call('INCRBY', pkey, cost) == cost then
      redis.call('PEXPIRE', pkey, pend - now + CELLS * CELL)
    end
    out[2 * i - 1] = out[2 * i - 1] + cost
  end
end
table.insert(out, 1, now)
table.insert(out, 1, 1)
return out
