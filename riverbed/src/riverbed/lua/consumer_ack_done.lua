-- Acknowledge handled entries and remember their event ids, atomically.
-- KEYS: stream, the group's idempotency set (event id -> ms handled).
-- ARGV: group, now (ms), window (ms), JSON array of entry ids, JSON array of event ids.
-- Members older than the window are dropped on the way (O(log N + dropped)).
-- Ids travel as one JSON array argument each, not one argument per id: packing
-- hundreds of arguments per call was the largest client-side cost of a batch.
local now, window = tonumber(ARGV[2]), tonumber(ARGV[3])
local entry_ids, event_ids = cjson.decode(ARGV[4]), cjson.decode(ARGV[5])
if #event_ids > 0 then
  local scored = {}
  for i, event_id in ipairs(event_ids) do
    scored[2 * i - 1] = now
    scored[2 * i] = event_id
  end
  redis.call('ZADD', KEYS[2], unpack(scored))
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
end
return redis.call('XACK', KEYS[1], ARGV[1], unpack(entry_ids))
