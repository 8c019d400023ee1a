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

#: Claim entries for this consumer. KEYS: stream, retry schedule.
#: ARGV: mode, group, consumer, min idle (ms), count, now (ms since epoch),
#: start (the pending-list id to scan from: '-' or an exclusive '(id').
#: Modes: ``due`` pops retries whose time has come from the schedule;
#: ``stale`` takes entries idle past the visibility timeout (a crashed sibling's);
#: ``own`` takes this consumer's own pending entries (after a restart).
#: ``stale`` and ``own`` skip entries waiting in the retry schedule.
#: Returns {claimed entries, {id, delivery count, ...}, deleted ids}; deleted ids
#: are entries trimmed while pending, which XCLAIM drops from the pending list.
CLAIM: Final = """
local stream, schedule = KEYS[1], KEYS[2]
local mode, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local min_idle, count, now = ARGV[4], tonumber(ARGV[5]), ARGV[6]
local ids, deliveries = {}, {}
if mode == 'due' then
  local due = redis.call('ZRANGE', schedule, '-inf', now, 'BYSCORE', 'LIMIT', 0, count)
  if #due == 0 then return {{}, {}, {}} end
  redis.call('ZREM', schedule, unpack(due))
  for _, id in ipairs(due) do
    local entry = redis.call('XPENDING', stream, group, id, id, 1)[1]
    if entry then
      ids[#ids + 1] = id
      deliveries[id] = entry[4]
    end
  end
else
  local pending
  if mode == 'own' then
    pending = redis.call('XPENDING', stream, group, ARGV[7], '+', count, consumer)
  else
    pending = redis.call('XPENDING', stream, group, 'IDLE', min_idle, '-', '+', count)
  end
  for _, entry in ipairs(pending) do
    if not redis.call('ZSCORE', schedule, entry[1]) then
      ids[#ids + 1] = entry[1]
      deliveries[entry[1]] = entry[4]
    end
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

#: Schedule entries for a later delivery that will not count: the delivery count of each
#: entry this consumer still owns is set back by one (XCLAIM JUSTID RETRYCOUNT neither
#: delivers nor increments), so the claim that redelivers it lands on the same count.
#: KEYS: stream, retry schedule. ARGV: group, consumer, then (id, due ms, count) triples,
#: count being the delivery count to restore minus one.
DEFER: Final = """
local stream, schedule, group, consumer = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
for i = 3, #ARGV, 3 do
  local id = ARGV[i]
  redis.call('ZADD', schedule, ARGV[i + 1], id)
  local entry = redis.call('XPENDING', stream, group, id, id, 1)[1]
  if entry and entry[2] == consumer then
    redis.call('XCLAIM', stream, group, consumer, 0, id, 'RETRYCOUNT', ARGV[i + 2], 'JUSTID')
  end
end
return redis.status_reply('OK')
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
#: replay it twice. KEYS: stream, dead-letter stream. ARGV: dead-letter entry id.
REPLAY_DEAD_LETTER: Final = """
local found = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])[1]
if not found then return false end
local fields = found[2]
for i = 1, #fields, 2 do
  if fields[i] == 'event' then
    local id = redis.call('XADD', KEYS[1], '*', 'event', fields[i + 1])
    redis.call('XDEL', KEYS[2], ARGV[1])
    return id
  end
end
return redis.error_reply('dead-lettered entry has no event field')
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
        self, redis: Redis, *, keys: Sequence[str], args: Sequence[str | int | float]
    ) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await redis.script_load(self.source)
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
