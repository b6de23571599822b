-- check_rights.lua: does the current user have the rights a batch of this stream needs? Writes nothing.
--
-- KEYS[1]  the stream's counter key
-- KEYS[2]  the stream's batch token key
-- ARGV[1]  the record key prefix, `<counter key>:`
--
-- Returns 1 when every command a batch runs is allowed on these keys, 0 when the server cannot tell
-- (Redis older than 7.0 has no redis.acl_check_cmd; the batch itself is then the check), and an
-- ABNOPERM error naming the first command and key the user may not use.
if not redis.acl_check_cmd then
  return 0
end
local checks = {
  {'GET', KEYS[1]}, {'INCRBY', KEYS[1], '1'}, {'EXISTS', ARGV[1] .. '1'},
  {'HSET', ARGV[1] .. '1', 'f', 'v'}, {'GET', KEYS[2]}, {'SET', KEYS[2], '1', 'EX', '1'},
}
for _, c in ipairs(checks) do
  if not redis.acl_check_cmd(unpack(c)) then
    return redis.error_reply('ABNOPERM the Redis user may not run ' .. c[1] .. ' on ' .. c[2])
  end
end
return 1
