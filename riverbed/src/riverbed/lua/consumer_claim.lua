-- Claim entries for this consumer. KEYS: stream, legacy retry schedule.
-- ARGV: mode, group, consumer, min idle (ms), count, start (the pending-list id to scan
-- from: '-' or an exclusive '(id').
-- Modes: ``stale`` takes entries idle past the visibility timeout (a crashed sibling's);
-- ``own`` takes this consumer's own pending entries (after a restart); ``dead`` takes the
-- entries of consumers whose heartbeat (KEYS[3]: name -> ms, Redis time) is older than
-- ARGV[7] ms, and forgets a dead consumer once it holds nothing.
-- Entries still waiting in a legacy retry schedule (written by a version before the delay
-- store, until they are carried over) are skipped: they are not abandoned, they wait.
-- Returns {claimed entries, {id, delivery count, ...}, deleted ids}; deleted ids
-- are entries trimmed while pending, which XCLAIM drops from the pending list.
local stream, legacy = KEYS[1], KEYS[2]
local mode, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local min_idle, count = ARGV[4], tonumber(ARGV[5])
local ids, deliveries = {}, {}
local pending = {}
if mode == 'own' then
  pending = redis.call('XPENDING', stream, group, ARGV[6], '+', count, consumer)
elseif mode == 'dead' then
  local beats, time = redis.call('HGETALL', KEYS[3]), redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  local oldest = now - tonumber(ARGV[7])
  for i = 1, #beats, 2 do
    if beats[i] ~= consumer and tonumber(beats[i + 1]) < oldest then
      pending = redis.call('XPENDING', stream, group, '-', '+', count, beats[i])
      if #pending > 0 then break end
      redis.call('HDEL', KEYS[3], beats[i])
    end
  end
else
  pending = redis.call('XPENDING', stream, group, 'IDLE', min_idle, '-', '+', count)
end
for _, entry in ipairs(pending) do
  if not redis.call('ZSCORE', legacy, entry[1]) then
    ids[#ids + 1] = entry[1]
    deliveries[entry[1]] = entry[4]
  end
end
if #ids == 0 then return {{}, {}, {}} end
local args = {'XCLAIM', stream, group, consumer, 0}
for _, id in ipairs(ids) do args[#args + 1] = id end
local claimed = redis.call(unpack(args))
local seen, counts, deleted = {}, {}, {}
for _, entry in ipairs(claimed) do
  seen[entry[1]] = true
  counts[#counts + 1] = entry[1]
  counts[#counts + 1] = deliveries[entry[1]] + 1
end
for _, id in ipairs(ids) do
  if not seen[id] then deleted[#deleted + 1] = id end
end
return {claimed, counts, deleted}
