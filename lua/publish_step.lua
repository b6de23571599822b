-- publish_step.lua: step 2 of a publish: move a bounded range of staged records into place.
--
-- ARGV[1]  the staging record prefix
-- ARGV[2]  the stream's record prefix (`<counter key>:`)
-- ARGV[3]  first id
-- ARGV[4]  last id (about a thousand per call: one short call)
--
-- RENAME staged record i to record i of the stream, replacing the old record i atomically. A staged
-- record that is gone was moved by an earlier, interrupted call: skipped, so the step is idempotent.
-- A key in the way that is not a record (another tool's key) stops the publish with ABFOREIGN before
-- this call writes anything. Returns the number of records moved.
local sp, lp = ARGV[1], ARGV[2]
local first, last = tonumber(ARGV[3]), tonumber(ARGV[4])
for id = first, last do
  local kind = redis.call('TYPE', lp .. id).ok
  if kind ~= 'none' and not (kind == 'hash' and redis.call('HEXISTS', lp .. id, '_airbyte_data') == 1) then
    return redis.error_reply('ABFOREIGN ' .. lp .. id)
  end
end
local moved = 0
for id = first, last do
  if redis.call('EXISTS', sp .. id) == 1 then
    redis.call('RENAME', sp .. id, lp .. id)
    moved = moved + 1
  end
end
return moved
