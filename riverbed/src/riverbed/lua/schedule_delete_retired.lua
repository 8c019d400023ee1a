-- Delete a retired state once its successor is in the index. KEYS: state.
-- ARGV: the stream it moved to. 1 when deleted.
if redis.call('HGET', KEYS[1], 'moving') ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
