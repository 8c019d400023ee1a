-- Which of these event ids did the group handle since a time?
-- KEYS: the group's idempotency set. ARGV: oldest (ms), JSON array of event ids.
-- Returns one 0/1 flag per id, in order.
-- Ids travel as one JSON array argument each, not one argument per id: packing
-- hundreds of arguments per call was the largest client-side cost of a batch.
local oldest, flags = tonumber(ARGV[1]), {}
for i, event_id in ipairs(cjson.decode(ARGV[2])) do
  local handled = redis.call('ZSCORE', KEYS[1], event_id)
  flags[i] = (handled and tonumber(handled) >= oldest) and 1 or 0
end
return flags
