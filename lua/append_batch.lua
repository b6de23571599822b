-- append_batch.lua: append one batch of records to a stream, atomically and exactly once.
--
-- KEYS[1]  the stream's counter key (`<namespace>:<stream>`, or `{<tag>}` in the tagged layout; a
--          string integer, absent = 0)
-- KEYS[2]  the batch token key of this (stream, run): the last sequence number applied
-- ARGV[1]  this batch's sequence number within the run (1, 2, 3, ...)
-- ARGV[2]  the record key prefix, `<counter key>:`
-- ARGV[3]  the token key's time to live, in seconds
-- ARGV[4]  the record keys' time to live, in seconds (0: none; staged records of an overwrite
--          expire unless their generation is resumed or published)
-- ARGV[5]  the counter's time to live, in seconds (0: none, the counter of live records never
--          expires; a staging counter is refreshed with its records)
-- ARGV[6]  `1`: each record ends with one more argument, the moment it expires (`ttl_field`); `0`:
--          not; `2`: as `1`, for a staged generation: its records keep the staging's expiry, and
--          their moments (0: none) are recorded by id in `_airbyte_redis:moments:<KEYS[1]>` for
--          the publish to set (keys::StagingKeys::moments names it so)
-- ARGV[7]  the value format: `hash` (a hash of _airbyte_ab_id, _airbyte_emitted_at, _airbyte_data),
--          `fields` (a hash of _airbyte_ab_id, _airbyte_emitted_at and one field per data field) or
--          `string` (a string: the data's JSON text)
-- ARGV[8]  the stream's format marker key: its value format when that is not `hash` (set by the
--          first batch; absent for hash streams, the Java layout). An argument, not a key: the
--          marker of a hash stream never exists, and a declared key that is missing would make a
--          node importing the stream's slot answer TRYAGAIN to every batch until the slot moved
--          (it shares the stream's hash tag, so it is in the same slot)
-- ARGV[9]  the load position key ('': none): when set, the batch's last argument is the position
--          of its last record in the load's input, written with `HSET <key> position <value>` in
--          this same call, so a killed load resumes right after the last committed record
-- ARGV[10..] the records: `hash`: emitted_at (epoch ms), data (JSON text); `fields`: emitted_at,
--          the number of data fields n, then n names and values; `string`: data; then, with ARGV[6]
--          `1`, the epoch milliseconds it expires at (0: ARGV[4] applies). A batch may have no
--          record (every record of it had expired before it was sent): it only advances the token.
--
-- Returns the id of the batch's last record when the batch was applied now, or -1 when this batch
-- had been applied before (a resend after a lost reply). Errors, all raised before the first write
-- so that a batch is never applied in part:
--   ABSEQ      the sequence number is not the next one (a batch overtook another)
--   ABSUPERSEDED another run of the load took it over (the position key's `run`)
--   ABCOUNTER  the counter key does not hold an integer
--   ABEXISTS   a key of the new id range already exists (a record whose counter was lost or reset,
--              another stream's key in the Java layout, another tool's key): nothing is written
--   ABNOPERM   the user may not write these keys (checked with redis.acl_check_cmd on Redis 7+)
--   ABFORMAT   the stream's records are in another value format (ARGV[8]; without it, records
--              exist in the default `hash` format): nothing is written
--   ABARGS     the arguments are malformed
-- Invariant: ids of a stream are 1..N without gap or duplicate; each record hash has the fields
-- _airbyte_ab_id (its id), _airbyte_emitted_at and _airbyte_data (or the data's fields).
-- Cluster: every key of a stream shares one hash tag (one slot). While that slot migrates away, any
-- access to a key this node does not hold fails ("non local key"; a script gets no ASK); every new
-- record key is such a key and is read (EXISTS) before the first write, so a batch is refused
-- whole, never split, and the writer retries it.
local seq = tonumber(ARGV[1])
local record_ttl = tonumber(ARGV[4])
local counter_ttl = tonumber(ARGV[5])
local moments = (ARGV[6] == '1' or ARGV[6] == '2') and 1 or 0
local moments_hash = ARGV[6] == '2' and ('_airbyte_redis:moments:' .. KEYS[1]) or nil
local recorded = {}
local format = ARGV[7]
-- Where each record's arguments start: at 9 + step * (i - 1), but for `fields`, whose records'
-- lengths are in their second arguments (then `starts` lists them).
local step = (format == 'string' and 1 or 2) + moments
local starts = nil
local marker = ARGV[8]
local position_key = ARGV[9]
-- The last argument of a record (the position follows when there is one).
local last_arg = #ARGV - ((position_key ~= nil and position_key ~= '') and 1 or 0)
local n = (last_arg - 9) / step
if format == 'fields' then
  starts = {}
  local p = 10
  while p <= last_arg do
    starts[#starts + 1] = p
    local nfields = tonumber(ARGV[p + 1])
    if nfields == nil or nfields < 0 or nfields ~= math.floor(nfields) then
      return redis.error_reply('ABARGS malformed batch arguments')
    end
    p = p + 2 + 2 * nfields + moments
  end
  n = (p == last_arg + 1) and #starts or -1
end
if seq == nil or record_ttl == nil or counter_ttl == nil or position_key == nil or n < 0 or n ~= math.floor(n)
    or not (format == 'hash' or format == 'fields' or format == 'string') then
  return redis.error_reply('ABARGS malformed batch arguments')
end
local token_key = KEYS[2]
-- BEGIN load owner
-- A load's batch is applied only while its run owns the load: the load's record names the run
-- that began last (`run`, see src/load/record.rs), and this run's token key holds its run id
-- (`_airbyte_redis:token:<run>:…`). A killed run's last batches, still in the server's input
-- when another run resumed the load, would write again what that run writes.
if position_key ~= '' then
  local owner = redis.call('HGET', position_key, 'run')
  if owner and not string.find(token_key, ':token:' .. owner .. ':', 1, true) then
    return redis.error_reply('ABSUPERSEDED ' .. position_key .. ' ' .. owner)
  end
end
-- END load owner
local applied = tonumber(redis.call('GET', KEYS[2]) or '0')
if seq <= applied then
  return -1
end
if seq ~= applied + 1 then
  return redis.error_reply('ABSEQ batch ' .. seq .. ' arrived before batch ' .. (applied + 1))
end
-- The marker first: the key of a stream in the `stream` format is no counter.
local marked = redis.call('GET', marker)
if marked and marked ~= format then
  return redis.error_reply('ABFORMAT ' .. KEYS[1] .. ' ' .. marked .. ' ' .. format)
end
local raw = redis.call('GET', KEYS[1])
local last = 0
if raw then
  last = tonumber(raw)
  if last == nil or last < 0 or last ~= math.floor(last) then
    return redis.error_reply('ABCOUNTER ' .. KEYS[1])
  end
end
if not marked and format ~= 'hash' and last > 0 then
  return redis.error_reply('ABFORMAT ' .. KEYS[1] .. ' hash ' .. format)
end
local prefix = ARGV[2]
local first = last + 1
-- Every new key of the batch is checked before the first write, with one EXISTS over all of them
-- (in slices: unpack fails near 8000 values), and one by one only when one is taken. Checking only
-- the ends is not enough: a foreign key in the middle (another stream's counter in the Java layout,
-- a user's key, a record that outlived its counter) would make HSET fail half-way, or be silently
-- overwritten.
local keys = {}
for i = 1, n do
  keys[i] = prefix .. (last + i)
end
local taken = 0
-- Whether commands over many keys may be used (MSET below): not in a slot being imported.
local multi = true
for from = 1, n, 4000 do
  local r = redis.pcall('EXISTS', unpack(keys, from, math.min(from + 3999, n)))
  if type(r) == 'table' then
    -- A slot being imported answers a multi-key command about missing keys with TRYAGAIN: the
    -- keys are then checked one by one below (the answer is the same).
    taken = 1
    multi = false
    break
  end
  taken = taken + r
end
if taken > 0 then
  for i = 1, n do
    if redis.call('EXISTS', keys[i]) == 1 then
      return redis.error_reply('ABEXISTS ' .. keys[i])
    end
  end
end
-- Whether MSETEX may write this batch's string records with their expiry (the server has it, and
-- the user may run it); otherwise SET … EX, key by key.
local msetex = false
-- Every command the writes below run is checked before the first write (Redis 7+), so that a user
-- without one is refused before anything is written, never half-way.
if redis.acl_check_cmd then
  local record = prefix .. first
  local ok = redis.acl_check_cmd('INCRBY', KEYS[1], '1')
    and redis.acl_check_cmd('SET', KEYS[2], '1', 'EX', '1')
  if format == 'string' then
    ok = ok and redis.acl_check_cmd('SET', record, 'v', 'EX', '1')
      and redis.acl_check_cmd('MSET', record, 'v')
  else
    ok = ok and redis.acl_check_cmd('HSET', record, 'f', 'v')
  end
  if record_ttl > 0 then
    ok = ok and redis.acl_check_cmd('EXPIRE', record, '1')
  end
  if moments == 1 and not moments_hash then
    ok = ok and redis.acl_check_cmd('PEXPIREAT', record, '1')
  end
  if moments_hash then
    ok = ok and redis.acl_check_cmd('HSET', moments_hash, 'f', 'v')
      and redis.acl_check_cmd('EXPIRE', moments_hash, '1')
  end
  if format ~= 'hash' and not marked then
    ok = ok and redis.acl_check_cmd('SET', marker, format)
  end
  if format ~= 'hash' and counter_ttl > 0 then
    ok = ok and redis.acl_check_cmd('EXPIRE', marker, '1')
  end
  if position_key ~= '' then
    ok = ok and redis.acl_check_cmd('HSET', position_key, 'position', 'v')
  end
  if not ok then
    return redis.error_reply('ABNOPERM the Redis user may not write ' .. KEYS[1] .. ', its records, ' .. marker .. ' or ' .. KEYS[2])
  end
  if format == 'string' and record_ttl > 0 then
    -- A server without MSETEX raises an error here: then it is not used.
    local known, allowed = pcall(redis.acl_check_cmd, 'MSETEX', '1', record, 'v', 'EX', '1')
    msetex = known and allowed
  end
else
  msetex = format == 'string' and record_ttl > 0
end
if n > 0 then
  redis.call('INCRBY', KEYS[1], n)
end
-- `string` records without their own moments: MSET (or, with an expiry, MSETEX where the server
-- has it: Valkey 9.1+) over slices of the batch, one command for up to 2,000 keys instead of one
-- or two per key.
local bulk_done = false
if format == 'string' and moments == 0 and multi and n > 0 and (msetex or record_ttl == 0) then
  bulk_done = true
  for from = 1, n, 2000 do
    local to = math.min(from + 1999, n)
    local args = {}
    if msetex then
      args[1] = to - from + 1
    end
    for i = from, to do
      args[#args + 1] = keys[i]
      args[#args + 1] = ARGV[10 + step * (i - 1)]
    end
    if msetex then
      args[#args + 1] = 'EX'
      args[#args + 1] = record_ttl
      local r = redis.pcall('MSETEX', unpack(args))
      if type(r) == 'table' and r.err then
        if from == 1 then
          -- No MSETEX on this server (it is Valkey 9.1's; older servers answer that the command
          -- is unknown) and nothing was written by it: the keys go one by one below.
          bulk_done = false
          break
        end
        return r
      end
    else
      redis.call('MSET', unpack(args))
    end
  end
end
local after = format == 'string' and 1 or 2
for i = 1, n do
  if bulk_done then
    break
  end
  local base = starts and starts[i] or 10 + step * (i - 1)
  if format == 'hash' then
    redis.call('HSET', keys[i],
      '_airbyte_ab_id', last + i,
      '_airbyte_emitted_at', ARGV[base],
      '_airbyte_data', ARGV[base + 1])
  elseif format == 'string' then
    if moments == 0 and record_ttl > 0 then
      redis.call('SET', keys[i], ARGV[base], 'EX', record_ttl)
    else
      redis.call('SET', keys[i], ARGV[base])
    end
  else
    local nfields = tonumber(ARGV[base + 1])
    after = 2 + 2 * nfields
    if nfields <= 1000 then
      redis.call('HSET', keys[i],
        '_airbyte_ab_id', last + i,
        '_airbyte_emitted_at', ARGV[base],
        unpack(ARGV, base + 2, base + 1 + 2 * nfields))
    else
      -- In slices: unpack fails near 8000 values.
      redis.call('HSET', keys[i], '_airbyte_ab_id', last + i, '_airbyte_emitted_at', ARGV[base])
      for from = 0, nfields - 1, 1000 do
        local to = math.min(from + 1000, nfields)
        redis.call('HSET', keys[i], unpack(ARGV, base + 2 + 2 * from, base + 1 + 2 * to))
      end
    end
  end
  local at = moments == 1 and tonumber(ARGV[base + after]) or 0
  if moments_hash then
    recorded[#recorded + 1] = last + i
    recorded[#recorded + 1] = ARGV[base + after]
    at = 0
  end
  if at > 0 then
    -- The argument's own text: a Lua number of 10^17 or more would be written as 1e+17.
    redis.call('PEXPIREAT', keys[i], ARGV[base + after])
  elseif record_ttl > 0 and (format ~= 'string' or moments == 1) then
    -- (A `string` record without a moment got its expiry with its SET.)
    redis.call('EXPIRE', keys[i], record_ttl)
  end
end
if format ~= 'hash' and not marked and n > 0 then
  redis.call('SET', marker, format)
end
for from = 1, #recorded, 2000 do
  redis.call('HSET', moments_hash, unpack(recorded, from, math.min(from + 1999, #recorded)))
end
if moments_hash and n > 0 and counter_ttl > 0 then
  redis.call('EXPIRE', moments_hash, counter_ttl)
end
if counter_ttl > 0 then
  -- (A staging counter: its marker expires with it.)
  redis.call('EXPIRE', KEYS[1], counter_ttl)
  if format ~= 'hash' and (marked or n > 0) then
    redis.call('EXPIRE', marker, counter_ttl)
  end
end
if position_key ~= '' then
  redis.call('HSET', position_key, 'position', ARGV[#ARGV])
end
redis.call('SET', KEYS[2], seq, 'EX', ARGV[3])
return last + n
