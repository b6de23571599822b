-- publish_begin.lua: step 1 of publishing a stream's staged generation: record the publish marker.
--
-- KEYS[1]  the stream's counter key
-- KEYS[2]  the staging counter key (how many records are staged)
-- KEYS[3]  the stream's publish marker (a hash)
-- KEYS[4]  the staging metadata (its `live`: records 1..live of this generation are live already,
--          from an earlier attempt that published it; absent = 0)
-- KEYS[5]  the staged generation's primary-key index (of a deduplicated stream)
-- KEYS[6]  the stream's value-format marker, and KEYS[7] the staging's (absent: `hash`): kept in
--          the marker as `was` (what tells the records being replaced from other keys) and
--          `format` (what the finish records as the stream's format): an overwrite may change a
--          stream's format, since it replaces every record. A generation staged in the `stream`
--          format (a Redis stream at KEYS[2]) is renamed over the stream's key by this call
-- ARGV[1]  the generation being published
-- ARGV[2]  `1` for a deduplicated stream (append_dedup refreshed): its staged ids have gaps where
--          a key was deleted, each of which deletes the live record at that id, and its index
--          replaces the live one; `0` otherwise. Kept in the marker, so any run finishes alike.
-- ARGV[3]  `1` for a stream keyed by primary key (`record_key: primary_key`): published by SCAN
--          in phases (`sweep`, then `move`, recorded in the marker's `phase`), n and old are 0
-- ARGV[4]  the published records' time to live, in seconds (`ttl_seconds`; 0: none), kept in the
--          marker like the rest, so whichever run moves a record gives it the same expiry
--
-- Returns {n, old, was}: the staged count to publish, the stream's old counter and its old value
-- format. If a marker exists already (a publish interrupted earlier), it is kept and returned, so
-- publishing rolls forward.
-- Once the marker exists, every later step is idempotent and any run finishes the publish. The
-- marker's `moved` (records 1..moved are in place) starts at `live` and is advanced by each
-- publish step, atomically with the records it moves: it is what tells an already-moved staged
-- record from a missing one. The caller adds the stream to the registry of publishes under way
-- (`_airbyte_redis:publishing`) before this call: the registry lives in another cluster slot, so a
-- script cannot touch both.
local n = redis.call('HGET', KEYS[3], 'n')
if n then
  return {tonumber(n), tonumber(redis.call('HGET', KEYS[3], 'old')),
    redis.call('HGET', KEYS[3], 'was') or 'hash'}
end
local was = redis.call('GET', KEYS[6]) or 'hash'
local format = redis.call('GET', KEYS[7])
  or (redis.call('TYPE', KEYS[2]).ok == 'stream' and 'stream') or 'hash'
-- A counter's value; a Redis stream (the `stream` format) has no numbered records to move or
-- replace: its publish renames the staged stream over the stream's in the finish.
local function count(key)
  if redis.call('TYPE', key).ok == 'stream' then
    return 0
  end
  return tonumber(redis.call('GET', key) or '0')
end
local staged = count(KEYS[2])
local old = count(KEYS[1])
local live = tonumber(redis.call('HGET', KEYS[4], 'live') or '0')
if staged == nil or old == nil or live == nil then
  return redis.error_reply('ABCOUNTER ' .. KEYS[1])
end
if live > staged then
  live = staged
end
local dedup = ARGV[2] == '1'
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[3], 'n', 0, 'old', 0, 'generation', ARGV[1], 'moved', 0, 'dedup', '0',
    'keyed', '1', 'phase', 'sweep', 'ttl', ARGV[4], 'was', was, 'format', format)
  return {0, 0, was}
end
if dedup and staged > 0 and redis.call('EXISTS', KEYS[5]) == 0 then
  -- The index of a staged generation expires with its records: without it they are gone too.
  return redis.error_reply('ABSTAGED ' .. KEYS[5])
end
redis.call('HSET', KEYS[3], 'n', staged, 'old', old, 'generation', ARGV[1], 'moved', live,
  'dedup', dedup and '1' or '0', 'ttl', ARGV[4], 'was', was, 'format', format)
if format == 'stream' then
  -- The staged Redis stream replaces the stream's key whole, in this same call (consumer groups
  -- included): readers see the old generation or the new one. The old generation's records, if
  -- it was in another format, are deleted by the steps that follow (records 1..old).
  if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('RENAME', KEYS[2], KEYS[1])
    redis.call('PERSIST', KEYS[1])
    redis.call('SET', KEYS[6], 'stream')
  else
    redis.call('DEL', KEYS[1], KEYS[6])
  end
end
return {staged, old, was}
