-- Renew a lease only while it is still ours (the token matches).
-- KEYS: the lease. ARGV: token, TTL (ms). 1 when renewed, 0 when no longer ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
