-- staging_trim.lua: ready a stream's staging for this run by shrinking its logical view first.
--
-- KEYS[1]  the staging counter (how many records are staged)
-- KEYS[2]  the staging marks (a list of staged positions at which states were echoed)
-- KEYS[3]  the staging metadata (a hash: `generation`, and `high`, the highest staged id that may
--          still exist)
-- KEYS[4]  the staged generation's primary-key index (of a deduplicated stream; absent otherwise):
--          deleted with the counter when nothing is kept, its expiry refreshed otherwise
-- KEYS[5]  the staging's value-format marker: deleted with the counter when nothing is kept
-- KEYS[6]  the staged generation's moments (`ttl_field`): deleted with the counter when nothing is
--          kept, its expiry refreshed otherwise (a record staged again records its moment again)
-- ARGV[1]  the generation this run stages
-- ARGV[2]  keep: staged records 1..keep stay (0 discards everything); at most the staging counter
-- ARGV[3]  the staging keys' time to live, in seconds
-- ARGV[4]  live: records 1..live of this generation are live already (an earlier attempt published
--          them and this attempt resumes after them: then live = keep); 0 otherwise
-- ARGV[5]  the value format this run stages in (the staging's marker, KEYS[5], says so while
--          anything is kept). `stream`: the generation is staged as one Redis stream at KEYS[1]
--          whose entries have their positions as ids (`0-<position>`): its count is its last
--          position, and it is kept (with a fresh expiry) or deleted, never rewritten
--
-- Returns `high`: the caller then deletes staged records keep+1..high and records `high` = keep.
-- Safe to stop at any point and repeat: the counter and marks shrink here, in one atomic call, and
-- the records above them are deleted only afterwards; an interrupted deletion is finished by the
-- next prepare, which finds `high` still above the counter. A staged record above the counter is
-- never read as part of the generation.
local keep = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local live = tonumber(ARGV[4])
local stream = ARGV[5] == 'stream'
local count
if stream then
  local top = redis.call('TYPE', KEYS[1]).ok == 'stream'
    and redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
  count = tonumber(string.match(top and top[1] or '0-0', '^0%-(%d+)$') or '')
else
  count = tonumber(redis.call('GET', KEYS[1]) or '0')
end
local high = tonumber(redis.call('HGET', KEYS[3], 'high') or '0')
if count == nil or high == nil then
  return redis.error_reply('ABCOUNTER ' .. KEYS[1])
end
if keep == nil or ttl == nil or live == nil or keep < 0 or live > keep
    or (keep > count and live ~= keep) then
  return redis.error_reply('ABARGS keep ' .. tostring(ARGV[2]) .. ' is not within 0..' .. count)
end
if count > high then
  high = count
end
if keep > 0 and stream then
  redis.call('EXPIRE', KEYS[1], ttl)
elseif keep > 0 then
  redis.call('SET', KEYS[1], keep, 'EX', ttl)
  redis.call('EXPIRE', KEYS[4], ttl)
  redis.call('EXPIRE', KEYS[6], ttl)
end
if keep > 0 and ARGV[5] ~= 'hash' then
  -- What is kept is in this format (the caller discards staging in another one), also when it
  -- is only counted: records 1..live of a published generation.
  redis.call('SET', KEYS[5], ARGV[5], 'EX', ttl)
elseif keep == 0 then
  redis.call('DEL', KEYS[1], KEYS[4], KEYS[5], KEYS[6])
end
local kept = {}
for _, m in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  local position = tonumber(m)
  if position and position > 0 and position <= keep then
    kept[#kept + 1] = position
  end
end
table.sort(kept)
redis.call('DEL', KEYS[2])
local last = 0
for _, position in ipairs(kept) do
  if position ~= last then
    redis.call('RPUSH', KEYS[2], position)
    last = position
  end
end
if last > 0 then
  redis.call('EXPIRE', KEYS[2], ttl)
end
redis.call('HDEL', KEYS[3], 'published')
redis.call('HSET', KEYS[3], 'generation', ARGV[1], 'high', high, 'live', live)
redis.call('EXPIRE', KEYS[3], ttl)
return high
