-- upsert_batch.lua: apply one batch of an append_dedup stream, atomically and exactly once: each
-- record replaces its primary key's record unless the stored one has a newer cursor, and a delete
-- removes it.
--
-- KEYS[1]  the stream's counter key: the highest id ever given (ids are never reused)
-- KEYS[2]  the batch token key of this (stream, run): the last sequence number applied
-- KEYS[3]  the stream's primary-key index (a hash under the reserved prefix, the stream's hash
--          tag): canonical key text -> `<id>:<cursor>`, id 0 for a deleted key (so that an older
--          version arriving later does not bring it back)
-- ARGV[1]  this batch's sequence number within the run (1, 2, 3, ...)
-- ARGV[2]  the record key prefix, `<counter key>:`
-- ARGV[3]  the token key's time to live, in seconds
-- ARGV[4]  the record keys' time to live, in seconds (0: none; a truncate refresh stages its
--          records, and they expire unless their generation is resumed or published)
-- ARGV[5]  the counter's and the index's time to live, in seconds (0: none; refreshed each batch)
-- KEYS[4]  the stream's format marker (ARGV[8]), declared for the formats other than `hash` (see
--          append_batch.lua)
-- ARGV[6]  `1`: each record has one more argument, the moment it expires (`ttl_field`); `0`: not;
--          `2`: as `1` for a staged generation (see append_batch.lua)
-- ARGV[7]  the value format: `hash`, `fields` or `string` (see append_batch.lua)
-- ARGV[8]  the stream's format marker key (see append_batch.lua)
-- ARGV[9]  the load position key ('': none; see append_batch.lua): when set, the last argument
--          is the position, written in this same call
-- ARGV[10..] the records, four (or five) arguments each: the key text, the encoded cursor (``
--          absent, `n<number>`, `s<text>`), emitted_at (epoch ms), data (`hash`, `string`: the
--          JSON text; `fields`: the number n of data fields, followed by their n names and values
--          after this fourth argument; empty for a delete: a record's data is never empty, and an
--          argument less per record is measurably faster), and with ARGV[6] `1` the epoch
--          milliseconds it expires at (0: ARGV[4] applies). Each key appears once per batch (the
--          client keeps the winner of repeats).
--
-- Returns the counter after the batch, or -1 when this batch had been applied before (a resend
-- after a lost reply: it never re-applies an older version over a later batch). Errors, all
-- raised before the first write so that a batch is never applied in part:
--   ABSEQ      the sequence number is not the next one (a batch overtook another)
--   ABSUPERSEDED another run of the load took it over (the position key's `run`)
--   ABCOUNTER  the counter key does not hold an integer
--   ABUNINDEXED the stream has records (its counter is above 0) but no index: they were written by
--              append or overwrite, and deduplicating against them is not possible
--   ABINDEX    an index entry is not `<id>:<cursor>`
--   ABEXISTS   a key a new id would take already exists: nothing is written
--   ABNOPERM   the user may not write these keys (checked with redis.acl_check_cmd on Redis 7+)
--   ABFORMAT   the stream's records are in another value format (see append_batch.lua)
--   ABARGS     the arguments are malformed
-- Cursor order (mirrors protocol/cursor.rs): absent < numbers (as numbers) < strings (byte by
-- byte); on a tie the record in this batch wins.
local seq = tonumber(ARGV[1])
local record_ttl = tonumber(ARGV[4])
local bookkeeping_ttl = tonumber(ARGV[5])
local moments = (ARGV[6] == '1' or ARGV[6] == '2') and 1 or 0
-- A staged generation's moments (ARGV[6] `2`), by id, for its publish (see append_batch.lua).
local moments_hash = ARGV[6] == '2' and ('_airbyte_redis:moments:' .. KEYS[1]) or nil
local recorded = {}
local step = 4 + moments
local format, marker = ARGV[7], ARGV[8]
local position_key = ARGV[9]
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
local layout = record_layout(10, last_arg, step, format == 'fields')
if layout == nil then
  return redis.error_reply('ABARGS malformed batch arguments')
end
local starts, nfields = layout.starts, layout.nfields
if seq == nil or position_key == nil or record_ttl == nil or bookkeeping_ttl == nil
    or not (format == 'hash' or format == 'fields' or format == 'string') then
  return redis.error_reply('ABARGS malformed batch arguments')
end
local function start(i)
  return starts and starts[i] or 10 + step * (i - 1)
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
if last > 0 and redis.call('EXISTS', KEYS[3]) == 0 then
  return redis.error_reply('ABUNINDEXED ' .. KEYS[1] .. ' ' .. last)
end
local n = layout.n
local prefix = ARGV[2]

-- Whether a stored cursor `old` is newer than `new`. Strings compare byte by byte: Lua's `<` on
-- strings follows the server's locale.
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

-- The stored versions, one HMGET per slice (unpack fails near 8000 values).
local stored = {}
for from = 1, n, 1000 do
  local to = math.min(from + 999, n)
  local fields = {}
  for i = from, to do
    fields[#fields + 1] = ARGV[start(i)]
  end
  local r = redis.call('HMGET', KEYS[3], unpack(fields))
  for j = 1, to - from + 1 do
    stored[from + j - 1] = r[j]
  end
end

-- Decide every record before the first write: 'put' (at a new id above the counter, or in place)
-- or 'del' of key[i] (false: a key without a live record), or nothing. Each record key and id
-- text is made once (number-to-text conversions and concatenations are most of the script's own
-- cost).
local action, key, idtext, new_keys, old_keys, inplace = {}, {}, {}, {}, {}, {}
local next_id = last
for i = 1, n do
  local base = start(i)
  local cursor, delete = ARGV[base + 1], ARGV[base + 3] == ''
  local text, old = nil, nil
  local v = stored[i]
  if v then
    local sep = string.find(v, ':', 1, true)
    text = sep and string.sub(v, 1, sep - 1)
    local id = text and tonumber(text)
    if id == nil or id < 0 or id > last or id ~= math.floor(id) then
      return redis.error_reply('ABINDEX ' .. KEYS[3] .. ' ' .. ARGV[base])
    end
    if id == 0 then text = nil end
    old = string.sub(v, sep + 1)
  end
  if old ~= nil and newer(old, cursor) then
    action[i] = false
  elseif delete then
    action[i] = 'del'
    if text then
      key[i] = prefix .. text
      old_keys[#old_keys + 1] = key[i]
    end
  else
    action[i] = 'put'
    if text then
      key[i] = prefix .. text
      old_keys[#old_keys + 1] = key[i]
      inplace[i] = true
    else
      next_id = next_id + 1
      text = tostring(next_id)
      key[i] = prefix .. text
      new_keys[#new_keys + 1] = key[i]
    end
    idtext[i] = text
  end
end

-- No new id may land on an existing key (see append_batch.lua); the records being replaced or
-- deleted are read too, so that in a migrating cluster slot the batch is refused whole.
local function exists(keys)
  local total = 0
  for from = 1, #keys, 4000 do
    local r = redis.pcall('EXISTS', unpack(keys, from, math.min(from + 3999, #keys)))
    if type(r) == 'table' then
      -- TRYAGAIN in a slot being imported: count one by one below.
      return 1
    end
    total = total + r
  end
  return total
end
if #new_keys > 0 and exists(new_keys) > 0 then
  for i = 1, #new_keys do
    if redis.call('EXISTS', new_keys[i]) == 1 then
      return redis.error_reply('ABEXISTS ' .. new_keys[i])
    end
  end
end
if #old_keys > 0 then
  exists(old_keys)
end
if redis.acl_check_cmd then
  if not (redis.acl_check_cmd('INCRBY', KEYS[1], '1')
      and redis.acl_check_cmd('HSET', prefix .. (last + 1), 'f', 'v')
      and (format ~= 'string' or redis.acl_check_cmd('SET', prefix .. (last + 1), 'v'))
      and (format == 'hash' or marked or redis.acl_check_cmd('SET', marker, format))
      and (format == 'hash' or bookkeeping_ttl == 0 or redis.acl_check_cmd('EXPIRE', marker, '1'))
      and redis.acl_check_cmd('DEL', prefix .. (last + 1))
      and redis.acl_check_cmd('HSET', KEYS[3], 'f', 'v')
      and redis.acl_check_cmd('SET', KEYS[2], '1', 'EX', '1')
      and (position_key == '' or redis.acl_check_cmd('HSET', position_key, 'position', 'v'))
      and (record_ttl == 0 or redis.acl_check_cmd('EXPIRE', prefix .. (last + 1), '1'))
      and (step == 4 or (redis.acl_check_cmd('PEXPIREAT', prefix .. (last + 1), '1')
        and redis.acl_check_cmd('PERSIST', prefix .. (last + 1))))
      and (not moments_hash or redis.acl_check_cmd('HSET', moments_hash, 'f', 'v'))) then
    return redis.error_reply('ABNOPERM the Redis user may not write ' .. KEYS[1] .. ', its records, ' .. KEYS[3] .. ' or ' .. KEYS[2])
  end
end

if next_id > last then
  redis.call('INCRBY', KEYS[1], next_id - last)
end
local entries = {}
for i = 1, n do
  local base = start(i)
  if action[i] == 'put' then
    local after = 4
    if format == 'hash' then
      redis.call('HSET', key[i],
        '_airbyte_ab_id', idtext[i],
        '_airbyte_emitted_at', ARGV[base + 2],
        '_airbyte_data', ARGV[base + 3])
    elseif format == 'string' then
      redis.call('SET', key[i], ARGV[base + 3])
    else
      if inplace[i] then
        -- A new version replaces the whole hash: a field it lacks is not kept.
        redis.call('DEL', key[i])
      end
      hset_fields(key[i], {'_airbyte_ab_id', idtext[i], '_airbyte_emitted_at', ARGV[base + 2]},
        base + 4, nfields[i])
      after = 4 + 2 * nfields[i]
    end
    local at = moments == 1 and tonumber(ARGV[base + after]) or 0
    if moments_hash then
      recorded[#recorded + 1] = idtext[i]
      recorded[#recorded + 1] = ARGV[base + after]
      at = 0
    end
    if at > 0 then
      -- The argument's own text: a Lua number of 10^17 or more would be written as 1e+17.
      redis.call('PEXPIREAT', key[i], ARGV[base + after])
    elseif record_ttl > 0 then
      redis.call('EXPIRE', key[i], record_ttl)
    elseif moments == 1 then
      -- An earlier version's moment does not hold for this one, which has none.
      redis.call('PERSIST', key[i])
    end
    entries[#entries + 1] = ARGV[base]
    entries[#entries + 1] = idtext[i] .. ':' .. ARGV[base + 1]
  elseif action[i] == 'del' then
    if key[i] then
      redis.call('DEL', key[i])
    end
    entries[#entries + 1] = ARGV[base]
    entries[#entries + 1] = '0:' .. ARGV[base + 1]
  end
  if #entries >= 2000 then
    redis.call('HSET', KEYS[3], unpack(entries))
    entries = {}
  end
end
if #entries > 0 then
  redis.call('HSET', KEYS[3], unpack(entries))
end
if format ~= 'hash' and not marked then
  redis.call('SET', marker, format)
end
for from = 1, #recorded, 2000 do
  redis.call('HSET', moments_hash, unpack(recorded, from, math.min(from + 1999, #recorded)))
end
if bookkeeping_ttl > 0 then
  redis.call('EXPIRE', KEYS[1], bookkeeping_ttl)
  redis.call('EXPIRE', KEYS[3], bookkeeping_ttl)
  if #recorded > 0 then
    redis.call('EXPIRE', moments_hash, bookkeeping_ttl)
  end
  if format ~= 'hash' then
    redis.call('EXPIRE', marker, bookkeeping_ttl)
  end
end
if position_key ~= '' then
  redis.call('HSET', position_key, 'position', ARGV[#ARGV])
end
redis.call('SET', KEYS[2], seq, 'EX', ARGV[3])
return next_id
