-- stream_trim.lua: shrink a staged generation in the `stream` format to its first entries, in
-- bounded steps (the tail delete of an overwrite's prepare, see staging_trim.lua).
--
-- KEYS[1]  the staged Redis stream, whose entries have their positions as ids (`0-<position>`)
-- ARGV[1]  keep: entries 1..keep stay
-- ARGV[2]  how many entries one call deletes at most (one short call)
--
-- Deletes up to ARGV[2] entries above position `keep` and returns {deleted, 0}. When none is
-- left, the stream's last id goes back to `0-<keep>` (XSETID), so that the next staged entry takes
-- position keep + 1, and it returns {0, 1} (or {0, 2}: see below). Safe to stop at any point and
-- to repeat.
local keep, count = tonumber(ARGV[1]), tonumber(ARGV[2])
if keep == nil or count == nil or keep < 1 or count < 1 then
  return redis.error_reply('ABARGS malformed trim')
end
if redis.call('TYPE', KEYS[1]).ok ~= 'stream' then
  return {0, 1}
end
local ids = {}
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '0-' .. (keep + 1), '+', 'COUNT', count)) do
  ids[#ids + 1] = entry[1]
end
if #ids > 0 then
  return {redis.call('XDEL', KEYS[1], unpack(ids)), 0}
end
-- Redis 7.2+ and Valkey also remember the highest deleted id, below which the last id may not go
-- back (MAXDELETEDID does not help there): then the caller rebuilds the stream from its kept
-- entries (stream_rebuild.lua), which {0, 2} asks for.
local last = '0-' .. keep
local r = redis.pcall('XSETID', KEYS[1], last, 'MAXDELETEDID', last)
if type(r) == 'table' and r.err then
  r = redis.pcall('XSETID', KEYS[1], last)
  if type(r) == 'table' and r.err then
    return {0, 2}
  end
end
return {0, 1}
