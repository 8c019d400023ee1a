-- Take the sending lease of a request unless another holder has it.
-- KEYS[1]: the lease (riverbed_email.keys.email_sending_key)
-- ARGV[1]: the holder's token; ARGV[2]: the lease, ms
-- Returns 0 (held by ARGV[1] now), else the ms the other holder's lease still runs.
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then
  return math.max(redis.call('PTTL', KEYS[1]), 1)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 0
