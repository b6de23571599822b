-- publish_begin.lua: step 1 of publishing a stream's staged generation: record the publish marker.
--
-- KEYS[1]  the stream's counter key
-- KEYS[2]  the staging counter key (how many records are staged)
-- KEYS[3]  the stream's publish marker (a hash)
-- KEYS[4]  the staging metadata (its `live`: records 1..live of this generation are live already,
--          from an earlier attempt that published it; absent = 0)
-- ARGV[1]  the generation being published
--
-- Returns {n, old}: the staged count to publish and the stream's old counter. If a marker exists
-- already (a publish interrupted earlier), it is kept and returned, so publishing rolls forward.
-- Once the marker exists, every later step is idempotent and any run finishes the publish. The
-- marker's `moved` (records 1..moved are in place) starts at `live` and is advanced by each
-- publish step, atomically with the records it moves: it is what tells an already-moved staged
-- record from a missing one. The caller adds the stream to the registry of publishes under way
-- (`_airbyte_redis:publishing`) before this call: the registry lives in another cluster slot, so a
-- script cannot touch both.
local n = redis.call('HGET', KEYS[3], 'n')
if n then
  return {tonumber(n), tonumber(redis.call('HGET', KEYS[3], 'old'))}
end
local staged = tonumber(redis.call('GET', KEYS[2]) or '0')
local old = tonumber(redis.call('GET', KEYS[1]) or '0')
local live = tonumber(redis.call('HGET', KEYS[4], 'live') or '0')
if staged == nil or old == nil or live == nil then
  return redis.error_reply('ABCOUNTER ' .. KEYS[1])
end
if live > staged then
  live = staged
end
redis.call('HSET', KEYS[3], 'n', staged, 'old', old, 'generation', ARGV[1], 'moved', live)
return {staged, old}
