-- append_batch.lua: append one batch of records to a stream, atomically and exactly once.
--
-- KEYS[1]  the stream's counter key (`<namespace>:<stream>`, or `{<tag>}` in the tagged layout; a
--          string integer, absent = 0)
-- KEYS[2]  the batch token key of this (stream, run): the last sequence number applied
-- ARGV[1]  this batch's sequence number within the run (1, 2, 3, ...)
-- ARGV[2]  the record key prefix, `<counter key>:`
-- ARGV[3]  the token key's time to live, in seconds
-- ARGV[4]  the record keys' time to live, in seconds (0: none; staged records of an overwrite
--          expire unless their generation is resumed or published)
-- ARGV[5]  the counter's time to live, in seconds (0: none, the counter of live records never
--          expires; a staging counter is refreshed with its records)
-- ARGV[6]  `1`: each record has a third argument, the moment it expires (`ttl_field`); `0`: not
-- ARGV[7..] the records, two (or three) arguments each: emitted_at (epoch ms), data (JSON text),
--          and with ARGV[6] `1` the epoch milliseconds it expires at (0: ARGV[4] applies). A batch
--          may have no record (every record of it had expired before it was sent): it only
--          advances the token.
--
-- Returns the id of the batch's last record when the batch was applied now, or -1 when this batch
-- had been applied before (a resend after a lost reply). Errors, all raised before the first write
-- so that a batch is never applied in part:
--   ABSEQ      the sequence number is not the next one (a batch overtook another)
--   ABCOUNTER  the counter key does not hold an integer
--   ABEXISTS   a key of the new id range already exists (a record whose counter was lost or reset,
--              another stream's key in the Java layout, another tool's key): nothing is written
--   ABNOPERM   the user may not write these keys (checked with redis.acl_check_cmd on Redis 7+)
--   ABARGS     the arguments are malformed
-- Invariant: ids of a stream are 1..N without gap or duplicate; each record hash has the fields
-- _airbyte_ab_id (its id), _airbyte_emitted_at and _airbyte_data.
-- Cluster: every key of a stream shares one hash tag (one slot). While that slot migrates away, any
-- access to a key this node does not hold fails ("non local key"; a script gets no ASK); every new
-- record key is such a key and is read (EXISTS) before the first write, so a batch is refused
-- whole, never split, and the writer retries it.
local seq = tonumber(ARGV[1])
local record_ttl = tonumber(ARGV[4])
local counter_ttl = tonumber(ARGV[5])
local step = ARGV[6] == '1' and 3 or 2
local nargs = #ARGV - 6
if seq == nil or record_ttl == nil or counter_ttl == nil or nargs < 0 or nargs % step ~= 0 then
  return redis.error_reply('ABARGS malformed batch arguments')
end
local applied = tonumber(redis.call('GET', KEYS[2]) or '0')
if seq <= applied then
  return -1
end
if seq ~= applied + 1 then
  return redis.error_reply('ABSEQ batch ' .. seq .. ' arrived before batch ' .. (applied + 1))
end
local raw = redis.call('GET', KEYS[1])
local last = 0
if raw then
  last = tonumber(raw)
  if last == nil or last < 0 or last ~= math.floor(last) then
    return redis.error_reply('ABCOUNTER ' .. KEYS[1])
  end
end
local n = nargs / step
local prefix = ARGV[2]
local first = last + 1
-- Every new key of the batch is checked before the first write, with one EXISTS over all of them
-- (in slices: unpack fails near 8000 values), and one by one only when one is taken. Checking only
-- the ends is not enough: a foreign key in the middle (another stream's counter in the Java layout,
-- a user's key, a record that outlived its counter) would make HSET fail half-way, or be silently
-- overwritten.
local keys = {}
for i = 1, n do
  keys[i] = prefix .. (last + i)
end
local taken = 0
for from = 1, n, 4000 do
  local r = redis.pcall('EXISTS', unpack(keys, from, math.min(from + 3999, n)))
  if type(r) == 'table' then
    -- A slot being imported answers a multi-key command about missing keys with TRYAGAIN: the
    -- keys are then checked one by one below (the answer is the same).
    taken = 1
    break
  end
  taken = taken + r
end
if taken > 0 then
  for i = 1, n do
    if redis.call('EXISTS', keys[i]) == 1 then
      return redis.error_reply('ABEXISTS ' .. keys[i])
    end
  end
end
if redis.acl_check_cmd then
  if not (redis.acl_check_cmd('INCRBY', KEYS[1], '1')
      and redis.acl_check_cmd('HSET', prefix .. first, 'f', 'v')
      and redis.acl_check_cmd('SET', KEYS[2], '1', 'EX', '1')) then
    return redis.error_reply('ABNOPERM the Redis user may not write ' .. KEYS[1] .. ', its records or ' .. KEYS[2])
  end
end
if n > 0 then
  redis.call('INCRBY', KEYS[1], n)
end
for i = 1, n do
  local base = 6 + step * (i - 1)
  redis.call('HSET', keys[i],
    '_airbyte_ab_id', last + i,
    '_airbyte_emitted_at', ARGV[base + 1],
    '_airbyte_data', ARGV[base + 2])
  local at = step == 3 and tonumber(ARGV[base + 3]) or 0
  if at > 0 then
    redis.call('PEXPIREAT', keys[i], at)
  elseif record_ttl > 0 then
    redis.call('EXPIRE', keys[i], record_ttl)
  end
end
if counter_ttl > 0 then
  redis.call('EXPIRE', KEYS[1], counter_ttl)
end
redis.call('SET', KEYS[2], seq, 'EX', ARGV[3])
return last + n
