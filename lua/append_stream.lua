-- append_stream.lua: append one batch of records to a stream stored as a Redis stream (value
-- format `stream`), atomically and exactly once: one entry per record, ids from the server.
--
-- KEYS[1]  the Redis stream (the stream's key, `<namespace>:<stream>`, or `{<tag>}` tagged)
-- KEYS[2]  the batch token key of this (stream, run): the last sequence number applied
-- KEYS[3]  the stream's format marker (`stream`, set by the first batch)
-- ARGV[1]  this batch's sequence number within the run (1, 2, 3, ...)
-- ARGV[2]  the token key's time to live, in seconds
-- ARGV[3]  the approximate length limit (`XADD … MAXLEN ~`; 0: none)
-- ARGV[4]  `1`: the entries take their positions as ids, `0-<position>` (position 1, 2, … after
--          the last entry: the staged generation of an overwrite, whose restart points and marks
--          are positions); `0`: ids from the server (`*`)
-- ARGV[5]  the Redis stream's and the marker's time to live, in seconds (0: none; a staged
--          generation expires unless it is resumed or published)
-- ARGV[6]  the load position key ('': none; see append_batch.lua): when set, the last argument is
--          the position, written in this same call
-- ARGV[7..] the records, two arguments each: emitted_at (epoch ms), data (JSON text)
--
-- Each entry has the fields _airbyte_data and _airbyte_emitted_at. Returns the number of entries
-- added, or -1 when this batch had been applied before (a resend after a lost reply: nothing is
-- added twice). Errors, all raised before the first write:
--   ABSEQ      the sequence number is not the next one (a batch overtook another)
--   ABSUPERSEDED another run of the load took it over (the position key's `run`)
--   ABFORMAT   the stream's records are in another value format (KEYS[3]; without it, KEYS[1]
--              holding a counter means records in the default `hash` format)
--   ABEXISTS   KEYS[1] holds a value that is neither a counter nor a Redis stream
--   ABNOPERM   the user may not write these keys (checked with redis.acl_check_cmd on Redis 7+)
--   ABARGS     the arguments are malformed
local seq = tonumber(ARGV[1])
local maxlen = tonumber(ARGV[3])
local positional = ARGV[4] == '1'
local ttl = tonumber(ARGV[5])
local position_key = ARGV[6]
local nargs = #ARGV - 6 - ((position_key ~= nil and position_key ~= '') and 1 or 0)
if seq == nil or maxlen == nil or ttl == nil or position_key == nil or nargs < 0 or nargs % 2 ~= 0 then
  return redis.error_reply('ABARGS malformed batch arguments')
end
local token_key = KEYS[2]
-- BEGIN load owner
-- A load's batch is applied only while its run owns the load: the load's record names the run
-- that began last (`run`, see src/load/record.rs), and this run's token key holds its run id
-- (`_airbyte_redis:token:<run>:…`). A killed run's last batches, still in the server's input
-- when another run resumed the load, would write again what that run writes.
if position_key ~= '' then
  local owner = redis.call('HGET', position_key, 'run')
  if owner and not string.find(token_key, ':token:' .. owner .. ':', 1, true) then
    return redis.error_reply('ABSUPERSEDED ' .. position_key .. ' ' .. owner)
  end
end
-- END load owner
local applied = tonumber(redis.call('GET', KEYS[2]) or '0')
if seq <= applied then
  return -1
end
if seq ~= applied + 1 then
  return redis.error_reply('ABSEQ batch ' .. seq .. ' arrived before batch ' .. (applied + 1))
end
local marked = redis.call('GET', KEYS[3])
if marked and marked ~= 'stream' then
  return redis.error_reply('ABFORMAT ' .. KEYS[1] .. ' ' .. marked .. ' stream')
end
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'string' and not marked then
  return redis.error_reply('ABFORMAT ' .. KEYS[1] .. ' hash stream')
end
if kind ~= 'none' and kind ~= 'stream' then
  return redis.error_reply('ABEXISTS ' .. KEYS[1])
end
if redis.acl_check_cmd then
  if not (redis.acl_check_cmd('XADD', KEYS[1], '*', 'f', 'v')
      and redis.acl_check_cmd('SET', KEYS[3], 'stream')
      and redis.acl_check_cmd('SET', KEYS[2], '1', 'EX', '1')
      and (position_key == '' or redis.acl_check_cmd('HSET', position_key, 'position', 'v'))
      and (ttl == 0 or (redis.acl_check_cmd('EXPIRE', KEYS[1], '1')
        and redis.acl_check_cmd('EXPIRE', KEYS[3], '1')))) then
    return redis.error_reply('ABNOPERM the Redis user may not write ' .. KEYS[1] .. ', ' .. KEYS[3] .. ' or ' .. KEYS[2])
  end
end
local n = nargs / 2
-- The position of the last entry (its id's sequence number), for positional ids.
local last = 0
if positional and kind == 'stream' then
  local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
  local ms, position = string.match(top and top[1] or '0-0', '^(%d+)-(%d+)$')
  last = tonumber(position)
  if ms ~= '0' then
    return redis.error_reply('ABEXISTS ' .. KEYS[1])
  end
end
for i = 1, n do
  local base = 6 + 2 * (i - 1)
  local id = positional and ('0-' .. (last + i)) or '*'
  if maxlen > 0 then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, id,
      '_airbyte_data', ARGV[base + 2], '_airbyte_emitted_at', ARGV[base + 1])
  else
    redis.call('XADD', KEYS[1], id,
      '_airbyte_data', ARGV[base + 2], '_airbyte_emitted_at', ARGV[base + 1])
  end
end
if not marked and n > 0 then
  redis.call('SET', KEYS[3], 'stream')
end
if ttl > 0 and n > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
end
if position_key ~= '' then
  redis.call('HSET', position_key, 'position', ARGV[#ARGV])
end
redis.call('SET', KEYS[2], seq, 'EX', ARGV[2])
return n
