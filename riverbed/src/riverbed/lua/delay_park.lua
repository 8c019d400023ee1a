-- The delay store keeps each item in two hashes under one member: ``items`` holds the
-- event's CloudEvents JSON as it is (no escaping, no decoding on the way out), ``meta`` a
-- header ``<group>\t<attempt>\t<first_seen>\t<owner>\t<JSON extra>``: the three routing
-- fields a promoted retry carries (empty for an event published for later), the owner of a
-- delayed event (empty for a retry), and what only lookups need (due time of a delayed
-- event; reason and last error of a retry).
-- Park failed or deferred deliveries in the delay store and acknowledge them, atomically:
-- a crash leaves each entry either pending (redelivered) or parked (promoted when due),
-- never both and never neither. An entry this consumer no longer holds (a sibling claimed
-- it after a stall) is left alone: its new holder decides. KEYS: stream, delay set, delay
-- items, delay meta. ARGV: group, consumer, then (entry id, member, due ms, event, header)
-- quintuples. Returns the entry ids parked.
local stream, delay, items, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, consumer, parked = ARGV[1], ARGV[2], {}
for i = 3, #ARGV, 5 do
  local id = ARGV[i]
  local entry = redis.call('XPENDING', stream, group, id, id, 1)[1]
  if entry and entry[2] == consumer then
    redis.call('ZADD', delay, ARGV[i + 2], ARGV[i + 1])
    redis.call('HSET', items, ARGV[i + 1], ARGV[i + 3])
    redis.call('HSET', meta, ARGV[i + 1], ARGV[i + 4])
    redis.call('XACK', stream, group, id)
    parked[#parked + 1] = id
  end
end
return parked
