-- Write a loaded value if nothing changed the key since the lookup: this load
-- still holds the lease or, when the lookup found an undecodable entry (and took
-- no lease), that entry is still there. KEYS: lease key, entry key.
-- ARGV: lease token or '', value, ttl (ms), undecodable value seen or ''. Returns 1 if written.
if ARGV[1] ~= '' then
  if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
  redis.call('DEL', KEYS[1])
elseif redis.call('GET', KEYS[2]) ~= ARGV[4] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
