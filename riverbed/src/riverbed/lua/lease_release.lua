-- Release a lease only while it is still ours: a lapsed lease someone else took stays theirs.
-- KEYS: the lease. ARGV: token. Deletes it only when it is still ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
