-- stream_copy.lua: copy entries of a published generation in the `stream` format back into its
-- staging, so that a retry resuming that generation stages it whole (the publish renames the
-- staging over the stream: it cannot keep part of the old one).
--
-- KEYS[1]  the stream's Redis stream (the published generation: ids `0-<position>`)
-- KEYS[2]  the staged Redis stream
-- KEYS[3]  the staging's value-format marker: `stream`, with the staging's expiry
-- ARGV[1]  first position to copy, ARGV[2] last position (a few hundred per call: one short call)
-- ARGV[3]  the staging's time to live, in seconds
--
-- Returns how many entries it copied. Entries the staging has already (an interrupted copy) are
-- skipped, so it is safe to repeat.
local first, last, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if first == nil or last == nil or ttl == nil or first < 1 then
  return redis.error_reply('ABARGS malformed copy')
end
local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
local have = tonumber(string.match(top and top[1] or '0-0', '^0%-(%d+)$') or '0')
if have >= first then
  first = have + 1
end
if first > last then
  return 0
end
local copied = 0
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '0-' .. first, '0-' .. last)) do
  redis.call('XADD', KEYS[2], entry[1], unpack(entry[2]))
  copied = copied + 1
end
if copied > 0 then
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('SET', KEYS[3], 'stream', 'EX', ttl)
end
return copied
