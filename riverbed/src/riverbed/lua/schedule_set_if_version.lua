-- Write fields when the state is still at the version read. KEYS: state.
-- ARGV: expected version, then field, value, ... 1 when written.
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('HINCRBY', KEYS[1], 'version', 1)
return 1
