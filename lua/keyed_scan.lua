-- keyed_scan.lua: one SCAN step over the keys of a stream keyed by primary key (`record_key:
-- primary_key`), for the steps of its overwrite that cannot go by id: records are
-- `<prefix><suffix>`, live under the stream's record prefix and staged under its staging prefix.
--
-- ARGV[1]  the SCAN cursor ("0" to start)
-- ARGV[2]  the mode (below)
-- ARGV[3]  the MATCH pattern: the scanned prefix with every glob character escaped, then `*`
-- ARGV[4]  the scanned prefix itself, unescaped
-- ARGV[5]  the other prefix, unescaped (live when scanning staging, staging when scanning live)
-- ARGV[6]  the SCAN COUNT hint (bounded by the caller: one short call)
-- ARGV[7]  a time to live, in seconds: the staging's (mode `expire`), or the published records'
--          (mode `move`; 0: none)
-- ARGV[8]  the staged generation's moments (`ttl_field`; a hash key suffix -> epoch ms, 0: none):
--          mode `move` gives a record with one that moment instead of ARGV[7]
--
-- Modes, each safe to repeat and to restart from cursor 0:
--   check    (staging) read only: finds a live key in the way of a staged one that is not this
--            stream's record of that key
--   discard  (staging) unlinks every staged key (the staging prefix is the destination's own)
--   expire   (staging) gives every staged key a fresh time to live
--   sweep    (live) unlinks this stream's records that have no staged counterpart: the keys the
--            new generation does not have (deleted, or never sent)
--   move     (staging) renames every staged key over its live key and gives it ARGV[7] as its
--            expiry (none when 0); a live
--            key in the way that is not this stream's record refuses the step before it writes
-- A key is this stream's record when it is a hash whose _airbyte_ab_id is its suffix (another
-- stream's record can have the same key in the Java layout, with another _airbyte_ab_id).
--
-- Returns {next_cursor, keys acted on, the first foreign key found or ""}.
local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[3], 'COUNT', tonumber(ARGV[6]))
local mode, prefix, other = ARGV[2], ARGV[4], ARGV[5]
local plen = #prefix
local function ours(key, suffix)
  local t = redis.call('TYPE', key).ok
  if t == 'none' then return nil end
  return t == 'hash' and redis.call('HGET', key, '_airbyte_ab_id') == suffix
end
local has_moments = mode == 'move' and ARGV[8] ~= nil and redis.call('EXISTS', ARGV[8]) == 1
local done = 0
local keys = {}
for _, key in ipairs(r[2]) do
  if string.sub(key, 1, plen) == prefix then
    keys[#keys + 1] = key
  end
end
if mode == 'check' or mode == 'move' then
  for _, key in ipairs(keys) do
    local suffix = string.sub(key, plen + 1)
    if ours(other .. suffix, suffix) == false then
      if mode == 'check' then
        return {r[1], 0, other .. suffix}
      end
      return redis.error_reply('ABFOREIGN ' .. other .. suffix)
    end
  end
end
for _, key in ipairs(keys) do
  local suffix = string.sub(key, plen + 1)
  if mode == 'discard' then
    done = done + redis.call('UNLINK', key)
  elseif mode == 'expire' then
    done = done + redis.call('EXPIRE', key, tonumber(ARGV[7]))
  elseif mode == 'sweep' then
    if ours(key, suffix) and redis.call('EXISTS', other .. suffix) == 0 then
      done = done + redis.call('UNLINK', key)
    end
  elseif mode == 'move' then
    redis.call('RENAME', key, other .. suffix)
    local moment = has_moments and redis.call('HGET', ARGV[8], suffix)
    if moment and moment ~= '0' then
      redis.call('PEXPIREAT', other .. suffix, moment)
    elseif tonumber(ARGV[7]) > 0 then
      redis.call('EXPIRE', other .. suffix, tonumber(ARGV[7]))
    else
      redis.call('PERSIST', other .. suffix)
    end
    done = done + 1
  elseif mode ~= 'check' then
    return redis.error_reply('ABARGS unknown mode ' .. tostring(mode))
  end
end
return {r[1], done, ''}
