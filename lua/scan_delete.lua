-- scan_delete.lua: one SCAN step over a stream's record keys, unlinking the leftovers above an id.
--
-- ARGV[1]  the SCAN cursor ("0" to start)
-- ARGV[2]  the MATCH pattern: the record prefix with every glob character (* ? [ ] \) escaped,
--          followed by `*`
-- ARGV[3]  the record prefix itself, unescaped
-- ARGV[4]  keep ids up to this one (delete only ids above it)
-- ARGV[5]  the SCAN COUNT hint (bounded by the caller: one short call)
-- ARGV[6]  the value format of the records, and ARGV[7] the counter that gave their ids (the
--          record rule below)
--
-- Returns {next_cursor, deleted, skipped}. Only keys that are exactly the prefix followed by digits
-- are considered, so stream `users` never touches `users:2024:7`; of those, only records are deleted
-- and anything else is counted as skipped. Never KEYS.
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
local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', tonumber(ARGV[5]))
local prefix = ARGV[3]
local keep, limit = tonumber(ARGV[4]), tonumber(ARGV[7])
local plen = #prefix
local deleted, skipped = 0, 0
for _, key in ipairs(r[2]) do
  local tail = string.sub(key, plen + 1)
  local id = string.sub(key, 1, plen) == prefix and string.match(tail, '^[0-9]+$') and tonumber(tail)
  if id and id > keep then
    local kind = record_kind(key, id, ARGV[6], limit)
    if kind == 'record' then
      deleted = deleted + redis.call('UNLINK', key)
    elseif kind == 'foreign' then
      skipped = skipped + 1
    end
  end
end
return {r[1], deleted, skipped}
