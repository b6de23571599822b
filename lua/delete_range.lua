-- delete_range.lua: unlink a bounded range of a stream's record keys, checking each before it goes.
--
-- ARGV[1]  the record key prefix (`<counter key>:` or a staging prefix)
-- ARGV[2]  first id to delete
-- ARGV[3]  last id to delete (the caller keeps a range to about a thousand keys: one short call)
-- ARGV[4]  the value format of the records under the prefix, and ARGV[5] the counter that gave
--          their ids: what tells its records from other keys (the record rule below)
--
-- Returns {deleted, skipped}: a key is deleted only when it is a record; anything else under the
-- prefix is left alone and counted as skipped, so the caller can warn about it. Missing keys are
-- neither.
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
local deleted, skipped = 0, 0
for id = first, last do
  local key = prefix .. id
  local kind = record_kind(key, id, ARGV[4], limit)
  if kind == 'record' then
    deleted = deleted + redis.call('UNLINK', key)
  elseif kind == 'foreign' then
    skipped = skipped + 1
  end
end
return {deleted, skipped}
