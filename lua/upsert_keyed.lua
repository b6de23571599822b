-- upsert_keyed.lua: apply one batch of a stream whose records live at one key per primary key
-- (`record_key: primary_key`), atomically and exactly once.
--
-- KEYS[1]  the batch token key of this (stream, run): the last sequence number applied
-- KEYS[2]  the stream's tombstones (a hash under the reserved prefix, the stream's hash tag): key
--          suffix -> cursor of its delete, so that an older version arriving later does not
--          bring a deleted key back; an entry goes when its key is written again
-- KEYS[3]  the stream's counter in the sequence layout: if it exists, the stream holds records at
--          `<counter>:<id>` that this layout would leave beside its own, and the batch is refused
-- ARGV[1]  this batch's sequence number within the run (1, 2, 3, ...)
-- ARGV[2]  the record key prefix, `<counter key>:`
-- ARGV[3]  the token key's time to live, in seconds
-- ARGV[4]  `1`: compare cursors (append_dedup); `0`: the last write wins (append, overwrite)
-- ARGV[5]  the records' time to live, in seconds (0: none; staged records of an overwrite expire
--          unless their generation is resumed or published)
-- ARGV[6]  the tombstones' time to live, in seconds (0: none)
-- KEYS[4]  the stream's format marker (ARGV[9]), declared for `fields` (see append_batch.lua)
-- ARGV[7]  `1`: each record has one more argument, the moment it expires (`ttl_field`); `0`: not;
--          `2`: as `1` for a staged generation (see append_batch.lua)
-- ARGV[8]  the value format: `hash` or `fields` (a string key could not be told from another
--          tool's: it has no room for _airbyte_ab_id)
-- ARGV[9]  the stream's format marker key (see append_batch.lua)
-- ARGV[10]  the load position key ('': none; see append_batch.lua): when set, the last argument
--          is the position, written in this same call
-- ARGV[11..] the records, four (or five) arguments each: the key suffix (`<pk field>:<value>…`,
--          escaped), the encoded cursor (`` absent, `n<number>`, `s<text>`), emitted_at (epoch ms),
--          data (`hash`: the JSON text; `fields`: the number n of data fields, followed by their n
--          names and values after this fourth argument; empty for a delete), and with ARGV[7] `1`
--          the epoch milliseconds it expires at (0: ARGV[5] applies). Each suffix appears once per
--          batch (the client keeps the winner of repeats).
--
-- A record hash has _airbyte_ab_id (its key suffix), _airbyte_emitted_at, _airbyte_data (or the
-- data's fields), and _airbyte_cursor when its cursor is present. Returns the number of records written, or -1 when
-- this batch had been applied before (a resend after a lost reply). Errors, all raised before the
-- first write so that a batch is never applied in part:
--   ABSEQ        the sequence number is not the next one (a batch overtook another)
--   ABSUPERSEDED another run of the load took it over (the position key's `run`)
--   ABUNINDEXED  the stream has records in the sequence layout (KEYS[3] exists)
--   ABEXISTS     a record key exists but is not this stream's record of that key (another tool's
--                key, or another stream's record in the Java layout)
--   ABNOPERM     the user may not write these keys (checked with redis.acl_check_cmd on Redis 7+)
--   ABFORMAT     the stream's records are in another value format (see append_batch.lua)
--   ABARGS       the arguments are malformed
-- Cursor order as in upsert_batch.lua.
local seq = tonumber(ARGV[1])
local compare = ARGV[4] == '1'
local record_ttl = tonumber(ARGV[5])
local tombstone_ttl = tonumber(ARGV[6])
local moments = (ARGV[7] == '1' or ARGV[7] == '2') and 1 or 0
-- A staged generation's moments (ARGV[7] `2`), by key suffix, for its publish (see
-- append_batch.lua; KEYS[3] is the staging counter's name).
local moments_hash = ARGV[7] == '2' and ('_airbyte_redis:moments:' .. KEYS[3]) or nil
local recorded = {}
local step = 4 + moments
local format, marker = ARGV[8], ARGV[9]
local position_key = ARGV[10]
-- The last argument of a record (the position follows when there is one).
local last_arg = #ARGV - ((position_key ~= nil and position_key ~= '') and 1 or 0)
-- BEGIN record layout: the same text in upsert_batch.lua and upsert_keyed.lua (a test in
-- scripts.rs holds them together). Where each record's arguments start, from ARGV[first] on:
-- `step` arguments each, but for `fields`, whose records' lengths are in their fourth arguments
-- (then `starts` lists where each starts, and `nfields` its field count). Returns nil for
-- arguments that are not whole records.
local function record_layout(first, last, step, fields)
  local nargs = last - first + 1
  if not fields then
    if nargs < step or nargs % step ~= 0 then
      return nil
    end
    return {n = nargs / step, nfields = {}}
  end
  local starts, nfields, p = {}, {}, first
  while p <= last do
    starts[#starts + 1] = p
    local count = ARGV[p + 3]
    local nf = 0
    if count ~= '' then
      nf = tonumber(count)
      if nf == nil or nf < 0 or nf ~= math.floor(nf) then
        return nil
      end
    end
    nfields[#starts] = nf
    p = p + step + 2 * nf
  end
  if p ~= last + 1 or #starts == 0 then
    return nil
  end
  return {n = #starts, starts = starts, nfields = nfields}
end
-- END record layout
local layout = record_layout(11, last_arg, step, format == 'fields')
if layout == nil then
  return redis.error_reply('ABARGS malformed batch arguments')
end
local starts, nfields = layout.starts, layout.nfields
if seq == nil or position_key == nil or record_ttl == nil or tombstone_ttl == nil
    or not (format == 'hash' or format == 'fields') then
  return redis.error_reply('ABARGS malformed batch arguments')
end
local function start(i)
  return starts and starts[i] or 11 + step * (i - 1)
end
local token_key = KEYS[1]
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
local applied = tonumber(redis.call('GET', KEYS[1]) or '0')
if seq <= applied then
  return -1
end
if seq ~= applied + 1 then
  return redis.error_reply('ABSEQ batch ' .. seq .. ' arrived before batch ' .. (applied + 1))
end
local marked = redis.call('GET', marker)
if marked and marked ~= format then
  return redis.error_reply('ABFORMAT ' .. KEYS[3] .. ' ' .. marked .. ' ' .. format)
end
local counter = redis.call('GET', KEYS[3])
if counter then
  return redis.error_reply('ABUNINDEXED ' .. KEYS[3] .. ' ' .. counter)
end
local n = layout.n
local prefix = ARGV[2]

-- BEGIN cursor order: the same text in upsert_batch.lua and upsert_keyed.lua (a test in
-- scripts.rs holds them together), mirroring protocol/cursor.rs.
local function rank(c)
  if c == '' then return 0 end
  if string.byte(c, 1) == 110 then return 1 end
  return 2
end
local function newer(old, new)
  local ro, rn = rank(old), rank(new)
  if ro ~= rn then return ro > rn end
  if ro == 0 or old == new then return false end
  if ro == 1 then
    local x, y = tonumber(string.sub(old, 2)), tonumber(string.sub(new, 2))
    if x and y then return x > y end
  end
  for i = 1, math.min(#old, #new) do
    local a, b = string.byte(old, i), string.byte(new, i)
    if a ~= b then return a > b end
  end
  return #old > #new
end
-- END cursor order

-- BEGIN fields write: the same text in upsert_batch.lua and upsert_keyed.lua (a test in
-- scripts.rs holds them together). Writes a `fields` record: `head` (its metadata names and
-- values) and the `nf` name and value pairs at ARGV[from..], in slices (unpack fails near 8000
-- values).
local function hset_fields(key, head, from, nf)
  local last = from + 2 * nf - 1
  for j = from, math.min(last, from + 1999) do
    head[#head + 1] = ARGV[j]
  end
  redis.call('HSET', key, unpack(head))
  for s = from + 2000, last, 2000 do
    redis.call('HSET', key, unpack(ARGV, s, math.min(s + 1999, last)))
  end
end
-- END fields write

-- The stored versions: each record's cursor (a key is ours when it is a hash whose _airbyte_ab_id
-- is its suffix); for absent records, their tombstones.
local keys, ours, cursors, absent = {}, {}, {}, {}
for i = 1, n do
  local suffix = ARGV[start(i)]
  local key = prefix .. suffix
  keys[i] = key
  local r = redis.pcall('HMGET', key, '_airbyte_ab_id', '_airbyte_cursor')
  if r.err then
    if string.find(r.err, 'WRONGTYPE', 1, true) then
      return redis.error_reply('ABEXISTS ' .. key)
    end
    return r
  end
  if r[1] == suffix then
    ours[i] = true
    cursors[i] = r[2] or ''
  elseif r[1] then
    -- A record, but not this stream's record of this key: in the Java layout, stream
    -- `<stream>:<field>`'s record <value> has this very key.
    return redis.error_reply('ABEXISTS ' .. key)
  else
    absent[#absent + 1] = i
  end
end
local tombstoned = {}
if #absent > 0 then
  local absent_keys, suffixes = {}, {}
  for j, i in ipairs(absent) do
    absent_keys[j] = keys[i]
    suffixes[j] = ARGV[start(i)]
  end
  for from = 1, #absent, 4000 do
    local to = math.min(from + 3999, #absent)
    if redis.call('EXISTS', unpack(absent_keys, from, to)) > 0 then
      for j = from, to do
        if redis.call('EXISTS', absent_keys[j]) == 1 then
          return redis.error_reply('ABEXISTS ' .. absent_keys[j])
        end
      end
    end
    local t = redis.call('HMGET', KEYS[2], unpack(suffixes, from, to))
    for j = from, to do
      if t[j - from + 1] then
        tombstoned[absent[j]] = true
        cursors[absent[j]] = t[j - from + 1]
      end
    end
  end
end
if redis.acl_check_cmd then
  local probe = prefix .. ARGV[start(1)]
  if not (redis.acl_check_cmd('HSET', probe, 'f', 'v')
      and (format == 'hash' or marked or redis.acl_check_cmd('SET', marker, format))
      and (format == 'hash' or tombstone_ttl == 0 or redis.acl_check_cmd('EXPIRE', marker, '1'))
      and (not moments_hash or redis.acl_check_cmd('HSET', moments_hash, 'f', 'v'))
      and redis.acl_check_cmd('DEL', probe)
      and redis.acl_check_cmd('HSET', KEYS[2], 'f', 'v')
      and redis.acl_check_cmd('SET', KEYS[1], '1', 'EX', '1')
      and (position_key == '' or redis.acl_check_cmd('HSET', position_key, 'position', 'v'))
      and (record_ttl == 0 or redis.acl_check_cmd('EXPIRE', probe, '1'))
      and (step == 4 or (redis.acl_check_cmd('PEXPIREAT', probe, '1')
        and redis.acl_check_cmd('PERSIST', probe)))) then
    return redis.error_reply('ABNOPERM the Redis user may not write the records, ' .. KEYS[2] .. ' or ' .. KEYS[1])
  end
end

local written = 0
for i = 1, n do
  local base = start(i)
  local suffix, cursor, data = ARGV[base], ARGV[base + 1], ARGV[base + 3]
  local key = keys[i]
  if not (compare and cursors[i] and newer(cursors[i], cursor)) then
    if data ~= '' then
      local after = 4
      if format == 'fields' then
        if ours[i] then
          -- A new version replaces the whole hash: a field it lacks is not kept.
          redis.call('DEL', key)
        end
        local head = {'_airbyte_ab_id', suffix, '_airbyte_emitted_at', ARGV[base + 2]}
        if cursor ~= '' then
          head[5] = '_airbyte_cursor'
          head[6] = cursor
        end
        hset_fields(key, head, base + 4, nfields[i])
        after = 4 + 2 * nfields[i]
      elseif cursor ~= '' then
        redis.call('HSET', key, '_airbyte_ab_id', suffix, '_airbyte_emitted_at', ARGV[base + 2],
          '_airbyte_data', data, '_airbyte_cursor', cursor)
      else
        if ours[i] and cursors[i] ~= '' then
          redis.call('HDEL', key, '_airbyte_cursor')
        end
        redis.call('HSET', key, '_airbyte_ab_id', suffix, '_airbyte_emitted_at', ARGV[base + 2],
          '_airbyte_data', data)
      end
      local at = moments == 1 and tonumber(ARGV[base + after]) or 0
      if moments_hash then
        recorded[#recorded + 1] = suffix
        recorded[#recorded + 1] = ARGV[base + after]
        at = 0
      end
      if at > 0 then
        -- The argument's own text: a Lua number of 10^17 or more would be written as 1e+17.
        redis.call('PEXPIREAT', key, ARGV[base + after])
      elseif record_ttl > 0 then
        redis.call('EXPIRE', key, record_ttl)
      elseif moments == 1 and ours[i] then
        -- An earlier version's moment does not hold for this one, which has none.
        redis.call('PERSIST', key)
      end
      if tombstoned[i] then
        redis.call('HDEL', KEYS[2], suffix)
      end
      written = written + 1
    else
      if ours[i] then
        redis.call('DEL', key)
      end
      redis.call('HSET', KEYS[2], suffix, cursor)
      if tombstone_ttl > 0 then
        redis.call('EXPIRE', KEYS[2], tombstone_ttl)
      end
    end
  end
end
if format ~= 'hash' and not marked then
  redis.call('SET', marker, format)
end
for from = 1, #recorded, 2000 do
  redis.call('HSET', moments_hash, unpack(recorded, from, math.min(from + 1999, #recorded)))
end
if #recorded > 0 and tombstone_ttl > 0 then
  redis.call('EXPIRE', moments_hash, tombstone_ttl)
end
if format ~= 'hash' and tombstone_ttl > 0 then
  -- (Staged records: their marker expires with them.)
  redis.call('EXPIRE', marker, tombstone_ttl)
end
if position_key ~= '' then
  redis.call('HSET', position_key, 'position', ARGV[#ARGV])
end
redis.call('SET', KEYS[1], seq, 'EX', ARGV[3])
return written
