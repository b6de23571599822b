-- expire_range.lua: give a bounded range of staged records a fresh time to live.
--
-- ARGV[1]  the staging record prefix
-- ARGV[2]  first id
-- ARGV[3]  last id (about a thousand per call: one short call)
-- ARGV[4]  the time to live, in seconds
--
-- Returns how many keys got it (missing keys are skipped). Idempotent.
local prefix = ARGV[1]
local first, last, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if first == nil or last == nil or ttl == nil then
  return redis.error_reply('ABARGS malformed range')
end
local done = 0
for id = first, last do
  done = done + redis.call('EXPIRE', prefix .. id, ttl)
end
return done
