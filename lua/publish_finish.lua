-- publish_finish.lua: last step of a publish: the counter becomes the published count, the staging
-- and the marker go, and the staging metadata remembers that this generation is published.
--
-- KEYS[1]  the stream's counter key
-- KEYS[2]  the staging counter key
-- KEYS[3]  the publish marker
-- KEYS[4]  the staging metadata hash
-- KEYS[5]  the staging marks list
-- KEYS[6]  the stream's primary-key index (of an earlier append_dedup sync): the published
--          records are not indexed, so the index goes with the records it described
-- KEYS[7]  the staged generation's index: in a deduplicated stream's publish (the marker's
--          `dedup`) it becomes the stream's index
-- KEYS[8]  the staged generation's tombstones, and KEYS[9] the stream's: in the publish of a
--          stream keyed by primary key (the marker's `keyed`) the staged ones replace the
--          stream's, and the stream has no counter (any sequence-layout records were swept)
-- KEYS[10] the stream's value-format marker, and KEYS[11] the staging's: the stream's marker
--          becomes the marker's `format` (deleted for `hash`, which has none), the staging's goes.
--          (A generation in the `stream` format was renamed into place by publish_begin.lua.)
-- KEYS[12] the staged generation's moments (`ttl_field`): gone with the staging
-- ARGV[1]  the time to live of the metadata and marks, in seconds
--
-- Returns the published count (0 clears the stream: its counter is deleted). Idempotent: without a
-- marker it does nothing and returns -1. The caller removes the stream from the registry after it.
-- The metadata ({generation, published = n}) and the marks (positions of echoed states, now ids of
-- live records) stay for a week: a later attempt of the same generation (the platform retries
-- from the last echoed state, and the publish may have happened after it) resumes the published
-- stream instead of starting an empty one.
local n = redis.call('HGET', KEYS[3], 'n')
if not n then
  return -1
end
n = tonumber(n)
local generation = redis.call('HGET', KEYS[3], 'generation')
local dedup = redis.call('HGET', KEYS[3], 'dedup') == '1'
local keyed = redis.call('HGET', KEYS[3], 'keyed') == '1'
local format = redis.call('HGET', KEYS[3], 'format') or 'hash'
if format == 'stream' then
  -- Renamed into place by the publish's first step: the published count, which a retry resumes
  -- from, is its last entry's position.
  n = 0
  if redis.call('TYPE', KEYS[1]).ok == 'stream' then
    local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
    n = tonumber(string.match(top and top[1] or '0-0', '^0%-(%d+)$') or '0')
  end
elseif n > 0 and not keyed then
  redis.call('SET', KEYS[1], n)
else
  redis.call('DEL', KEYS[1])
end
if keyed then
  redis.call('DEL', KEYS[9])
  if redis.call('EXISTS', KEYS[8]) == 1 then
    redis.call('RENAME', KEYS[8], KEYS[9])
    redis.call('PERSIST', KEYS[9])
  end
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[6], KEYS[11], KEYS[12])
if format ~= 'hash' and n > 0 then
  redis.call('SET', KEYS[10], format)
else
  redis.call('DEL', KEYS[10])
end
if dedup and redis.call('EXISTS', KEYS[7]) == 1 then
  redis.call('RENAME', KEYS[7], KEYS[6])
  redis.call('PERSIST', KEYS[6])
end
redis.call('HSET', KEYS[4], 'generation', generation, 'published', n)
redis.call('EXPIRE', KEYS[4], ARGV[1])
redis.call('EXPIRE', KEYS[5], ARGV[1])
return n
