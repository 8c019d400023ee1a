-- Give the sending lease up if ARGV[1] still holds it (a lease that ran out and was taken
-- by another replica is theirs).
-- KEYS[1]: the lease (riverbed_email.keys.email_sending_key)
-- ARGV[1]: the holder's token
-- Returns 1 when released, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
