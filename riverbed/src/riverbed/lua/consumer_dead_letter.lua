-- Copy an entry to the dead-letter stream and acknowledge it, atomically.
-- KEYS: stream, dead-letter stream. ARGV: group, entry id, field, value, ...
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
