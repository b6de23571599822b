-- publish_step.lua: step 2 of a publish: move a bounded range of staged records into place.
--
-- KEYS[1]  the stream's publish marker (a hash: `n`, `old`, `generation`, `moved`)
-- ARGV[1]  the staging record prefix
-- ARGV[2]  the stream's record prefix (`<counter key>:`)
-- ARGV[3]  first id
-- ARGV[4]  last id (a few hundred per call: one short call)
--
-- RENAMEs staged record i over record i of the stream (replacing the old record i atomically),
-- replaces the staging expiry with the marker's `ttl` (none when it is 0 or absent), and records in the marker that every id up to `last` has
-- moved, all in one call. Ids up to the marker's `moved` were moved by an earlier, interrupted run
-- and are skipped; any other missing staged record is an error (ABSTAGED), never taken for moved,
-- except in a deduplicated stream's publish (the marker's `dedup`), where a missing staged id is a
-- key deleted in the new generation: the live record at that id is deleted.
-- Everything is checked before the first write: a key in the way that is not a record (another
-- tool's key) is refused with ABFOREIGN. Returns {records moved, old records they replaced}.
if not redis.call('HGET', KEYS[1], 'n') then
  return redis.error_reply('ABMARKER no publish is under way at ' .. KEYS[1])
end
local sp, lp = ARGV[1], ARGV[2]
local moved = tonumber(redis.call('HGET', KEYS[1], 'moved') or '0')
local dedup = redis.call('HGET', KEYS[1], 'dedup') == '1'
local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl') or '0') or 0
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
  local kind = redis.call('TYPE', lp .. id).ok
  if kind ~= 'none' then
    if not (kind == 'hash' and redis.call('HEXISTS', lp .. id, '_airbyte_data') == 1) then
      return redis.error_reply('ABFOREIGN ' .. lp .. id)
    end
    replaced = replaced + 1
  end
  if not dedup and redis.call('EXISTS', sp .. id) == 0 then
    return redis.error_reply('ABSTAGED ' .. sp .. id)
  end
end
for id = first, last do
  if not dedup or redis.call('EXISTS', sp .. id) == 1 then
    redis.call('RENAME', sp .. id, lp .. id)
    if ttl > 0 then
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
