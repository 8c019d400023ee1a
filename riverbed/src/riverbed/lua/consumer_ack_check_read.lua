-- The consumer's one call per batch, any part of which may be empty: acknowledge handled
-- entries and remember their event ids, check event ids against what the group handled,
-- and read the next batch. While entries keep coming the read loop makes only this call;
-- the flush loop uses it to acknowledge alone, claims to check alone.
-- KEYS: stream, the group's idempotency set (event id -> ms handled).
-- ARGV: group, consumer, now (ms), window (ms), JSON array of entry ids to acknowledge,
--       JSON array of their event ids, JSON array of event ids to check, count to read (0:
--       read nothing).
-- Returns {acknowledged, flags, entries}: how many entries XACK acknowledged; one 0/1
-- flag per id checked (1: handled within the window), in order; and what XREADGROUP GROUP
-- group consumer COUNT count STREAMS stream > returns, entries as {id, {field, value, ...}},
-- none when nothing new has come (a script never blocks: the caller then waits in a
-- blocking XREADGROUP of its own).
-- Ids travel as one JSON array argument each, not one argument per id: packing hundreds of
-- arguments per call was the largest client-side cost of a batch. Idempotency-set members
-- older than the window are dropped on the way (O(log N + dropped)).
local group, now, window = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local entry_ids, event_ids = cjson.decode(ARGV[5]), cjson.decode(ARGV[6])
if #event_ids > 0 then
  local scored = {}
  for i, event_id in ipairs(event_ids) do
    scored[2 * i - 1] = now
    scored[2 * i] = event_id
  end
  redis.call('ZADD', KEYS[2], unpack(scored))
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
end
local acknowledged = 0
if #entry_ids > 0 then
  acknowledged = redis.call('XACK', KEYS[1], group, unpack(entry_ids))
end
local flags = {}
for i, event_id in ipairs(cjson.decode(ARGV[7])) do
  local handled = redis.call('ZSCORE', KEYS[2], event_id)
  flags[i] = (handled and tonumber(handled) >= now - window) and 1 or 0
end
local entries = {}
if tonumber(ARGV[8]) > 0 then
  local reply = redis.call(
    'XREADGROUP', 'GROUP', group, ARGV[2], 'COUNT', ARGV[8], 'STREAMS', KEYS[1], '>')
  if reply then
    entries = reply[1][2]
  end
end
return {acknowledged, flags, entries}
