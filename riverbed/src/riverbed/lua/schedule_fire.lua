-- Publish one occurrence and advance the schedule, atomically, only if nothing changed
-- since the scheduler read it (same version, not paused, not moving): two schedulers can
-- never both publish it, and a crash leaves either both writes or neither.
-- KEYS: state, stream. ARGV: version, occurrence (ms), next (ms or ''), missed,
-- entry field, CloudEvents JSON. Returns the entry id, or false when not published.
local state = redis.call('HMGET', KEYS[1], 'version', 'paused', 'moving')
if state[1] ~= ARGV[1] or state[2] == '1' or state[3] then return false end
local id = redis.call('XADD', KEYS[2], '*', ARGV[5], ARGV[6])
redis.call('HSET', KEYS[1], 'last_ms', ARGV[2], 'next_ms', ARGV[3], 'last_entry_id', id)
redis.call('HINCRBY', KEYS[1], 'fired', 1)
redis.call('HINCRBY', KEYS[1], 'missed', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'version', 1)
return id
