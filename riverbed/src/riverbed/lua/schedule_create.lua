-- Create a state unless one exists. KEYS: state. ARGV: field, value, ... 1 when created.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
