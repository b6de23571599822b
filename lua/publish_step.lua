-- publish_step.lua: step 2 of a publish: move a bounded range of staged records into place.
--
-- KEYS[1]  the stream's publish marker (a hash: `n`, `old`, `generation`, `moved`, and `was`, the
--          value format of the records being replaced: the record rule below tells them from
--          other keys; absent in a marker an older version wrote: `hash`)
-- ARGV[1]  the staging record prefix
-- ARGV[2]  the stream's record prefix (`<counter key>:`)
-- ARGV[3]  first id
-- ARGV[4]  last id (a few hundred per call: one short call)
-- ARGV[5]  the staged generation's moments (`ttl_field`; a hash id -> epoch ms, 0: none), if it
--          has them: a record with one expires then (at once, if it has passed), instead of by
--          the marker's `ttl`
--
-- RENAMEs staged record i over record i of the stream (replacing the old record i atomically),
-- replaces the staging expiry with the marker's `ttl` (none when it is 0 or absent), and records in the marker that every id up to `last` has
-- moved, all in one call. Ids up to the marker's `moved` were moved by an earlier, interrupted run
-- and are skipped; any other missing staged record is an error (ABSTAGED), never taken for moved,
-- except in a deduplicated stream's publish (the marker's `dedup`), where a missing staged id is a
-- key deleted in the new generation: the live record at that id is deleted.
-- Everything is checked before the first write: a key in the way that is not a record (another
-- tool's key) is refused with ABFOREIGN. Returns {records moved, old records they replaced}.
-- BEGIN record rule: the same text in publish_check.lua, publish_step.lua, delete_range.lua and
-- scan_delete.lua (a test in scripts.rs holds them together). What `key`, record id `id` of a
-- stream in value format `format`, is: 'none' (missing), 'record' (one of the destination's
-- records: `hash` a hash with _airbyte_data, ours or the Java connector's; `fields` a hash with
-- _airbyte_ab_id; `string` a string whose id is at most `limit`, the counter that gave it) or
-- 'foreign' (anything else: another tool's key, another stream's).
local function record_kind(key, id, format, limit)
  local kind = redis.call('TYPE', key).ok
  if kind == 'none' then
    return 'none'
  end
  if kind == 'hash' and format ~= 'string' then
    local field = format == 'fields' and '_airbyte_ab_id' or '_airbyte_data'
    if redis.call('HEXISTS', key, field) == 1 then
      return 'record'
    end
  elseif kind == 'string' and format == 'string' and id <= limit then
    return 'record'
  end
  return 'foreign'
end
-- END record rule
if not redis.call('HGET', KEYS[1], 'n') then
  return redis.error_reply('ABMARKER no publish is under way at ' .. KEYS[1])
end
local sp, lp = ARGV[1], ARGV[2]
local moved = tonumber(redis.call('HGET', KEYS[1], 'moved') or '0')
local dedup = redis.call('HGET', KEYS[1], 'dedup') == '1'
local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl') or '0') or 0
local was = redis.call('HGET', KEYS[1], 'was') or 'hash'
local old = tonumber(redis.call('HGET', KEYS[1], 'old') or '0') or 0
local first, last = tonumber(ARGV[3]), tonumber(ARGV[4])
if first == nil or last == nil or moved == nil then
  return redis.error_reply('ABARGS malformed range')
end
if first <= moved then
  first = moved + 1
end
if first > last then
  return {0, 0}
end
local replaced = 0
for id = first, last do
  local kind = record_kind(lp .. id, id, was, old)
  if kind == 'foreign' then
    return redis.error_reply('ABFOREIGN ' .. lp .. id)
  elseif kind == 'record' then
    replaced = replaced + 1
  end
  if not dedup and redis.call('EXISTS', sp .. id) == 0 then
    return redis.error_reply('ABSTAGED ' .. sp .. id)
  end
end
local at = {}
if redis.call('EXISTS', ARGV[5]) == 1 then
  local ids = {}
  for id = first, last do
    ids[#ids + 1] = id
  end
  at = redis.call('HMGET', ARGV[5], unpack(ids))
end
for id = first, last do
  if not dedup or redis.call('EXISTS', sp .. id) == 1 then
    redis.call('RENAME', sp .. id, lp .. id)
    local moment = at[id - first + 1]
    if moment and moment ~= '0' then
      redis.call('PEXPIREAT', lp .. id, moment)
    elseif ttl > 0 then
      redis.call('EXPIRE', lp .. id, ttl)
    else
      redis.call('PERSIST', lp .. id)
    end
  else
    redis.call('DEL', lp .. id)
  end
end
redis.call('HSET', KEYS[1], 'moved', last)
return {last - first + 1, replaced}
