-- java_staging.lua: one SCAN step over the Java connector's staged records, counting or unlinking.
--
-- ARGV[1]  the SCAN cursor ("0" to start)
-- ARGV[2]  the SCAN COUNT hint (bounded by the caller: one short call)
-- ARGV[3]  "delete" to unlink what is found; anything else only counts
--
-- The Java connector staged each record at `tmp:<namespace>:<stream>:<m>` and deleted them at the
-- end of a sync; a sync that was killed (or whose cleanup failed) left them, and the Java connector's
-- next successful sync published them as duplicates. A key counts only when it is `tmp:`, anything,
-- `:` and digits, and a hash with an _airbyte_data field; the `tmp:<namespace>:<stream>` counters
-- (strings) and anything else are left alone. Returns {next_cursor, found, an example key or ""}.
local r = redis.call('SCAN', ARGV[1], 'MATCH', 'tmp:*', 'COUNT', tonumber(ARGV[2]))
local delete = ARGV[3] == 'delete'
local found, example = 0, ''
for _, key in ipairs(r[2]) do
  if string.match(key, '^tmp:.*:[0-9]+$') and redis.call('TYPE', key).ok == 'hash'
      and redis.call('HEXISTS', key, '_airbyte_data') == 1 then
    found = found + 1
    if example == '' then
      example = key
    end
    if delete then
      redis.call('UNLINK', key)
    end
  end
end
return {r[1], found, example}
