-- publish_finish.lua: last step of a publish: the counter becomes the published count and the
-- bookkeeping of the publish and of the staging goes away.
--
-- KEYS[1]  the stream's counter key
-- KEYS[2]  the staging counter key
-- KEYS[3]  the publish marker
-- KEYS[4]  the staging metadata hash
-- KEYS[5]  the staging marks list
--
-- Returns the published count (0 clears the stream: its counter is deleted). Idempotent: without a
-- marker it does nothing and returns -1. The caller removes the stream from the registry after it.
local n = redis.call('HGET', KEYS[3], 'n')
if not n then
  return -1
end
n = tonumber(n)
if n > 0 then
  redis.call('SET', KEYS[1], n)
else
  redis.call('DEL', KEYS[1])
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return n
