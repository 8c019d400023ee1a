-- Read many states of one stream (one slot) at once. KEYS: states. Returns one flat
-- HGETALL reply per key (empty for a missing state).
local states = {}
for i, key in ipairs(KEYS) do states[i] = redis.call('HGETALL', key) end
return states
