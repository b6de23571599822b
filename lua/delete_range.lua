-- delete_range.lua: unlink a bounded range of a stream's record keys, checking each before it goes.
--
-- ARGV[1]  the record key prefix (`<counter key>:` or a staging prefix)
-- ARGV[2]  first id to delete
-- ARGV[3]  last id to delete (the caller keeps a range to about a thousand keys: one short call)
--
-- Returns {deleted, skipped}: a key is deleted only when it is a record (a hash with an
-- _airbyte_data field, ours or the Java connector's); anything else under the prefix is left alone
-- and counted as skipped, so the caller can warn about it. Missing keys are neither.
local prefix = ARGV[1]
local first = tonumber(ARGV[2])
local last = tonumber(ARGV[3])
if first == nil or last == nil then
  return redis.error_reply('ABARGS malformed range')
end
local deleted, skipped = 0, 0
for id = first, last do
  local key = prefix .. id
  local kind = redis.call('TYPE', key).ok
  if kind == 'hash' and redis.call('HEXISTS', key, '_airbyte_data') == 1 then
    deleted = deleted + redis.call('UNLINK', key)
  elseif kind ~= 'none' then
    skipped = skipped + 1
  end
end
return {deleted, skipped}
