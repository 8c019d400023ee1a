-- Claim a record for one request (an Idempotency-Key's, a provider event's marker), or
-- return what holds it.
-- KEYS[1]: the record.
-- ARGV[1]: the in-flight record (JSON); ARGV[2]: how long it is held, ms.
-- Returns nil when claimed, else the existing record.
local existing = redis.call('GET', KEYS[1])
if existing then return existing end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
