-- Delete a record (a provider event's marker) only if it still holds this request's.
-- KEYS[1]: the marker. ARGV[1]: the in-flight record this delivery wrote.
-- Returns 1 when deleted, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
