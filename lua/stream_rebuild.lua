-- stream_rebuild.lua: rebuild a staged generation in the `stream` format from its first `keep`
-- entries, in bounded steps, where the server will not move a stream's last id back (Redis 7.2+
-- and Valkey refuse XSETID below the highest deleted id; see stream_trim.lua).
--
-- KEYS[1]  the staged Redis stream (entries `0-<position>`, already trimmed to positions 1..keep)
-- KEYS[2]  the stream being built (the same hash tag: the same cluster slot)
-- ARGV[1]  keep: the number of entries the rebuilt stream ends with (its last id is `0-<keep>`)
-- ARGV[2]  how many entries one call copies at most (one short call)
-- ARGV[3]  the staging's time to live, in seconds
--
-- Copies the next entries (after the last one KEYS[2] has) and returns how many it copied; when
-- none is left, renames KEYS[2] over KEYS[1] and returns 0. Safe to stop at any point and to
-- repeat: a copy under way is resumed, and KEYS[1] is replaced only whole.
local keep, count, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if keep == nil or count == nil or ttl == nil or keep < 1 or count < 1 then
  return redis.error_reply('ABARGS malformed rebuild')
end
if redis.call('TYPE', KEYS[1]).ok ~= 'stream' then
  return 0
end
local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
local have = tonumber(string.match(top and top[1] or '0-0', '^0%-(%d+)$') or '0')
if have > keep then
  -- The remains of a rebuild to a longer staging (an earlier, interrupted prepare): start over.
  redis.call('DEL', KEYS[2])
  have = 0
end
if have < keep then
  local entries = redis.call('XRANGE', KEYS[1], '0-' .. (have + 1), '0-' .. keep, 'COUNT', count)
  for _, entry in ipairs(entries) do
    redis.call('XADD', KEYS[2], entry[1], unpack(entry[2]))
  end
  if #entries > 0 then
    redis.call('EXPIRE', KEYS[2], ttl)
    return #entries
  end
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('RENAME', KEYS[2], KEYS[1])
  redis.call('EXPIRE', KEYS[1], ttl)
else
  -- Nothing was kept below `keep` (the head was trimmed by MAXLEN): an empty staging.
  redis.call('DEL', KEYS[1])
end
return 0
