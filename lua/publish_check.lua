-- publish_check.lua: before a publish begins, find a key in the way of a bounded range of records.
--
-- ARGV[1]  the stream's record prefix (`<counter key>:`)
-- ARGV[2]  first id
-- ARGV[3]  last id (about a thousand per call: one short call)
-- ARGV[4]  the stream's value format now (`hash`, `fields`, `string`), and ARGV[5] its counter:
--          what tells its records from other keys (the record rule below)
--
-- Returns the first key of the range that exists and is not one of the destination's records, or
-- "" when there is none. Read-only: a publish that would meet another tool's key is refused before
-- it writes anything.
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
local prefix = ARGV[1]
local first, last, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])
if first == nil or last == nil or limit == nil then
  return redis.error_reply('ABARGS malformed range')
end
for id = first, last do
  local key = prefix .. id
  if record_kind(key, id, ARGV[4], limit) == 'foreign' then
    return key
  end
end
return ''
