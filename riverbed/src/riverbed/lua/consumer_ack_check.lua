-- Acknowledge handled entries and remember their event ids, then check event ids against
-- what the group handled; either part may be empty. While entries keep coming the read
-- loop sends this and the next batch's XREADGROUP in one write (a read inside a script
-- costs Redis more: each entry is turned into a Lua table and back).
-- KEYS: stream, the group's idempotency set (event id -> ms handled).
-- ARGV: group, now (ms), window (ms), JSON array of entry ids to acknowledge, JSON array
--       of their event ids, JSON array of event ids to check.
-- Returns {acknowledged, flags}: how many entries XACK acknowledged, and one 0/1 flag per
-- id checked (1: handled within the window), in order.
-- Ids travel as one JSON array argument each, not one argument per id: packing hundreds of
-- arguments per call was the largest client-side cost of a batch. Idempotency-set members
-- older than the window are dropped on the way (O(log N + dropped)).
local group, now, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
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
local acknowledged = 0
if #entry_ids > 0 then
  acknowledged = redis.call('XACK', KEYS[1], group, unpack(entry_ids))
end
local flags, checked, oldest = {}, cjson.decode(ARGV[6]), now - window
-- ZMSCORE a thousand at a time: unpack() can pass only so many values (a batch may be 10,000)
for first = 1, #checked, 1000 do
  local scores = redis.call('ZMSCORE', KEYS[2], unpack(checked, first, math.min(first + 999, #checked)))
  for j = 1, #scores do
    flags[first + j - 1] = (scores[j] and tonumber(scores[j]) >= oldest) and 1 or 0
  end
end
return {acknowledged, flags}
