-- Retire a state that moves to another stream: it never fires again. KEYS: state.
-- ARGV: the stream it moves to. Returns its fields (HGETALL), or false when absent.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], 'moving', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'version', 1)
return redis.call('HGETALL', KEYS[1])
