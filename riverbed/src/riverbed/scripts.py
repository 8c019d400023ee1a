"""Lua scripts of the reliable consumer.

Each script touches only keys of one logical stream (one hash tag), so it is
safe on Redis Cluster, and runs atomically: two consumers can never claim the
same entry, and a dead-letter copy is never written without its acknowledgement.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

#: Claim entries for this consumer. KEYS: stream, legacy retry schedule.
#: ARGV: mode, group, consumer, min idle (ms), count, start (the pending-list id to scan
#: from: '-' or an exclusive '(id').
#: Modes: ``stale`` takes entries idle past the visibility timeout (a crashed sibling's);
#: ``own`` takes this consumer's own pending entries (after a restart); ``dead`` takes the
#: entries of consumers whose heartbeat (KEYS[3]: name -> ms, Redis time) is older than
#: ARGV[7] ms, and forgets a dead consumer once it holds nothing.
#: Entries still waiting in a legacy retry schedule (written by a version before the delay
#: store, until they are carried over) are skipped: they are not abandoned, they wait.
#: Returns {claimed entries, {id, delivery count, ...}, deleted ids}; deleted ids
#: are entries trimmed while pending, which XCLAIM drops from the pending list.
CLAIM: Final = """
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
"""

#: Say this consumer is alive: its heartbeat field set to Redis's time (ms), so hosts with
#: skewed clocks agree. KEYS: heartbeats hash. ARGV: consumer.
HEARTBEAT: Final = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], now)
return redis.status_reply('OK')
"""

#: Reset the idle time of entries this consumer still owns (XCLAIM JUSTID does
#: not count as a delivery). KEYS: stream. ARGV: group, consumer, ids...
#: Returns the ids no longer owned (claimed by a sibling, acked or deleted).
KEEPALIVE: Final = """
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local args, lost = {'XCLAIM', stream, group, consumer, 0}, {}
for i = 3, #ARGV do
  local entry = redis.call('XPENDING', stream, group, ARGV[i], ARGV[i], 1)[1]
  if entry and entry[2] == consumer then
    args[#args + 1] = ARGV[i]
  else
    lost[#lost + 1] = ARGV[i]
  end
end
if #args > 5 then
  args[#args + 1] = 'JUSTID'
  redis.call(unpack(args))
end
return lost
"""

# The delay store keeps each item in two hashes under one member: ``items`` holds the
# event's CloudEvents JSON as it is (no escaping, no decoding on the way out), ``meta`` a
# header ``<group>\t<attempt>\t<first_seen>\t<owner>\t<JSON extra>``: the three routing
# fields a promoted retry carries (empty for an event published for later), the owner of a
# delayed event (empty for a retry), and what only lookups need (due time of a delayed
# event; reason and last error of a retry). Headers are read by pattern, never decoded
# as JSON on the way out: promotion costs little more than the appends themselves.

#: Park failed or deferred deliveries in the delay store and acknowledge them, atomically:
#: a crash leaves each entry either pending (redelivered) or parked (promoted when due),
#: never both and never neither. An entry this consumer no longer holds (a sibling claimed
#: it after a stall) is left alone: its new holder decides. KEYS: stream, delay set, delay
#: items, delay meta. ARGV: group, consumer, then (entry id, member, due ms, event, header)
#: quintuples. Returns the entry ids parked.
PARK: Final = """
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
"""

#: Append what is due from the delay store to the stream, oldest due first, and remove it
#: from the store in the same script: any number of promoters may run, none promotes an
#: item twice, and a crash mid-batch promotes all of the batch or none of it.
#: KEYS: stream, delay set, delay items, delay meta, promoted set. ARGV: now (ms), count,
#: how long a promoted delayed event is remembered (ms). A promoted event is remembered by
#: its owner's record (``owner:<bytes>:<owner>:<member>``): only its owner learns it was
#: promoted, and the same owner cannot schedule the same event id again meanwhile.
#: Returns {promoted, due time of the oldest promoted (ms) or false, next due (ms) or false}.
PROMOTE: Final = """
local stream, delay, items, meta, promoted = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now, count, remember = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local due = redis.call('ZRANGE', delay, '-inf', now, 'BYSCORE', 'LIMIT', 0, count, 'WITHSCORES')
if #due == 0 then
  local nearest = redis.call('ZRANGE', delay, 0, 0, 'WITHSCORES')
  return {0, false, nearest[2] and tonumber(nearest[2]) or false}
end
local members = {}
for i = 1, #due, 2 do members[#members + 1] = due[i] end
local events = redis.call('HMGET', items, unpack(members))
local headers = redis.call('HMGET', meta, unpack(members))
local moved, remembered, fields = 0, {}, '^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t'
for i, member in ipairs(members) do
  local event, header = events[i], headers[i]
  if event then
    local group, attempt, first_seen, owner = '', '', '', ''
    if header then group, attempt, first_seen, owner = string.match(header, fields) end
    if group ~= '' then
      redis.call('XADD', stream, '*', 'event', event, 'group', group,
                 'attempt', attempt, 'first_seen', first_seen)
    else
      redis.call('XADD', stream, '*', 'event', event)
    end
    moved = moved + 1
    if string.sub(member, 1, 6) == 'event:' then
      remembered[#remembered + 1] = now
      remembered[#remembered + 1] = 'owner:' .. #owner .. ':' .. owner .. ':' .. member
    end
  end
end
if #remembered > 0 then redis.call('ZADD', promoted, unpack(remembered)) end
redis.call('ZREM', delay, unpack(members))
redis.call('HDEL', items, unpack(members))
redis.call('HDEL', meta, unpack(members))
redis.call('ZREMRANGEBYSCORE', promoted, '-inf', now - remember)
local nearest = redis.call('ZRANGE', delay, 0, 0, 'WITHSCORES')
return {moved, tonumber(due[2]), nearest[2] and tonumber(nearest[2]) or false}
"""

#: Put events in the delay store for later, unless their member is already there or was
#: promoted within the remembered window (publishing the same event id twice schedules it
#: once). KEYS: delay set, delay items, delay meta, promoted set. ARGV: (member, due ms,
#: event, header, the owner's promoted record of the member) quintuples. Returns one flag
#: per member: 1 scheduled now, 0 already scheduled or promoted.
SCHEDULE: Final = """
local flags = {}
for i = 1, #ARGV, 5 do
  local member = ARGV[i]
  if redis.call('HEXISTS', KEYS[2], member) == 1 or redis.call('ZSCORE', KEYS[4], ARGV[i + 4]) then
    flags[#flags + 1] = 0
  else
    redis.call('ZADD', KEYS[1], ARGV[i + 1], member)
    redis.call('HSET', KEYS[2], member, ARGV[i + 2])
    redis.call('HSET', KEYS[3], member, ARGV[i + 3])
    flags[#flags + 1] = 1
  end
end
return flags
"""

#: Cancel a delayed event if it has not been promoted and belongs to the caller.
#: KEYS: delay set, delay items, delay meta, promoted set. ARGV: member, owner, the owner's
#: record of the member in the promoted set (another owner's promoted event is 'missing').
#: Returns 'cancelled', 'promoted' (too late: it is on the stream) or 'missing'.
CANCEL: Final = """
local header = redis.call('HGET', KEYS[3], ARGV[1])
if header and redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  local owner = string.match(header, '^[^\t]*\t[^\t]*\t[^\t]*\t([^\t]*)\t')
  if owner ~= ARGV[2] then return 'missing' end
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  return 'cancelled'
end
if redis.call('ZSCORE', KEYS[4], ARGV[3]) then return 'promoted' end
return 'missing'
"""

#: Carry retries scheduled by a version before the delay store over into it: each entry
#: still pending in the group is parked with the attempt its next delivery would have had
#: and acknowledged; the legacy member is removed. KEYS: stream, legacy schedule, delay set,
#: delay items, delay meta. ARGV: group, count. Returns how many entries were carried over.
CARRY_OVER_LEGACY: Final = """
local stream, legacy, delay, items, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group = ARGV[1]
local waiting = redis.call('ZRANGE', legacy, 0, tonumber(ARGV[2]) - 1, 'WITHSCORES')
local moved = 0
for i = 1, #waiting, 2 do
  local id, due = waiting[i], waiting[i + 1]
  local pending = redis.call('XPENDING', stream, group, id, id, 1)[1]
  local found = redis.call('XRANGE', stream, id, id)[1]
  if pending and found then
    local event = nil
    for f = 1, #found[2], 2 do
      if found[2][f] == 'event' then event = found[2][f + 1] end
    end
    if event then
      local member = 'retry:' .. group .. ':' .. id
      local header = group .. '\t' .. tostring(pending[4] + 1) .. '\t'
        .. string.match(id, '^(%d+)') .. '\t\t{"reason":"carried over","error":""}'
      redis.call('ZADD', delay, due, member)
      redis.call('HSET', items, member, event)
      redis.call('HSET', meta, member, header)
      moved = moved + 1
    end
  end
  if pending then redis.call('XACK', stream, group, id) end
  redis.call('ZREM', legacy, id)
end
return moved
"""

#: Ids travel as one JSON array argument each, not one argument per id: packing
#: hundreds of arguments per call was the largest client-side cost of a batch.

#: Acknowledge handled entries and remember their event ids, atomically.
#: KEYS: stream, the group's idempotency set (event id -> ms handled).
#: ARGV: group, now (ms), window (ms), JSON array of entry ids, JSON array of event ids.
#: Members older than the window are dropped on the way (O(log N + dropped)).
ACK_DONE: Final = """
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
"""

#: Which of these event ids did the group handle since a time?
#: KEYS: the group's idempotency set. ARGV: oldest (ms), JSON array of event ids.
#: Returns one 0/1 flag per id, in order.
HANDLED: Final = """
local oldest, flags = tonumber(ARGV[1]), {}
for i, event_id in ipairs(cjson.decode(ARGV[2])) do
  local handled = redis.call('ZSCORE', KEYS[1], event_id)
  flags[i] = (handled and tonumber(handled) >= oldest) and 1 or 0
end
return flags
"""

#: Copy an entry to the dead-letter stream and acknowledge it, atomically.
#: KEYS: stream, dead-letter stream. ARGV: group, entry id, field, value, ...
DEAD_LETTER: Final = """
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
"""


#: Move one dead-lettered entry back onto its stream (the operator CLI's replay),
#: atomically and only if it is still there: two operators replaying at once must not
#: replay it twice. The new entry names the group the entry failed in (the ``group`` entry
#: field, as a promoted retry does), so only that group handles it again; a dead letter
#: without a group goes to every group. Its attempts start again at 1.
#: KEYS: stream, dead-letter stream. ARGV: dead-letter entry id.
REPLAY_DEAD_LETTER: Final = """
local found = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])[1]
if not found then return false end
local fields, event, group = found[2], nil, nil
for i = 1, #fields, 2 do
  if fields[i] == 'event' then event = fields[i + 1] end
  if fields[i] == 'group' and fields[i + 1] ~= '' then group = fields[i + 1] end
end
if not event then return redis.error_reply('dead-lettered entry has no event field') end
local id
if group then
  id = redis.call('XADD', KEYS[1], '*', 'event', event, 'group', group)
else
  id = redis.call('XADD', KEYS[1], '*', 'event', event)
end
redis.call('XDEL', KEYS[2], ARGV[1])
return id
"""


class LuaScript:
    """A script bound to no client: ``await script(redis, keys=[…], args=[…])``.

    For components that get their client after construction (at service start-up).
    EVALSHA first; on NOSCRIPT (a restarted or flushed Redis) it loads and retries.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1

    async def __call__(
        self, redis: Redis, *, keys: Sequence[str], args: Sequence[str | bytes | int | float]
    ) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await redis.script_load(self.source)
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
