-- publish_check.lua: before a publish begins, find a key in the way of a bounded range of records.
--
-- ARGV[1]  the stream's record prefix (`<counter key>:`)
-- ARGV[2]  first id
-- ARGV[3]  last id (about a thousand per call: one short call)
--
-- Returns the first key of the range that exists and is not one of the destination's records (a
-- hash with an _airbyte_data field, ours or the Java connector's), or "" when there is none.
-- Read-only: a publish that would meet another tool's key is refused before it writes anything.
local prefix = ARGV[1]
local first, last = tonumber(ARGV[2]), tonumber(ARGV[3])
if first == nil or last == nil then
  return redis.error_reply('ABARGS malformed range')
end
for id = first, last do
  local key = prefix .. id
  local kind = redis.call('TYPE', key).ok
  if kind ~= 'none' and not (kind == 'hash' and redis.call('HEXISTS', key, '_airbyte_data') == 1) then
    return key
  end
end
return ''
