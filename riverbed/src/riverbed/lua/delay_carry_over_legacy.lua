-- Carry retries scheduled by a version before the delay store over into it: each entry
-- still pending in the group is parked with the attempt its next delivery would have had
-- and acknowledged; the legacy member is removed. KEYS: stream, legacy schedule, delay set,
-- delay items, delay meta. ARGV: group, count. Returns how many entries were carried over.
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
      local header = group .. '	' .. tostring(pending[4] + 1) .. '	'
        .. string.match(id, '^(%d+)') .. '		{"reason":"carried over","error":""}'
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
