-- scan_delete.lua: one SCAN step over a stream's record keys, unlinking the leftovers above an id.
--
-- ARGV[1]  the SCAN cursor ("0" to start)
-- ARGV[2]  the MATCH pattern: the record prefix with every glob character (* ? [ ] \) escaped,
--          followed by `*`
-- ARGV[3]  the record prefix itself, unescaped
-- ARGV[4]  keep ids up to this one (delete only ids above it)
-- ARGV[5]  the SCAN COUNT hint (bounded by the caller: one short call)
--
-- Returns {next_cursor, deleted, skipped}. Only keys that are exactly the prefix followed by digits
-- are considered, so stream `users` never touches `users:2024:7`; of those, only records (hashes
-- with an _airbyte_data field) are deleted and anything else is counted as skipped. Never KEYS.
local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', tonumber(ARGV[5]))
local prefix = ARGV[3]
local keep = tonumber(ARGV[4])
local plen = #prefix
local deleted, skipped = 0, 0
for _, key in ipairs(r[2]) do
  local tail = string.sub(key, plen + 1)
  if string.sub(key, 1, plen) == prefix and string.match(tail, '^[0-9]+$') and tonumber(tail) > keep then
    if redis.call('TYPE', key).ok == 'hash' and redis.call('HEXISTS', key, '_airbyte_data') == 1 then
      deleted = deleted + redis.call('UNLINK', key)
    else
      skipped = skipped + 1
    end
  end
end
return {r[1], deleted, skipped}
