-- Append what is due from the delay store to the stream, oldest due first, and remove it
-- from the store in the same script: any number of promoters may run, none promotes an
-- item twice, and a crash mid-batch promotes all of the batch or none of it.
-- KEYS: stream, delay set, delay items, delay meta, promoted set. ARGV: now (ms), count,
-- how long a promoted delayed event is remembered (ms). A promoted event is remembered by
-- its owner's record (``owner:<bytes>:<owner>:<member>``): only its owner learns it was
-- promoted, and the same owner cannot schedule the same event id again meanwhile.
-- Returns {promoted, due time of the oldest promoted (ms) or false, next due (ms) or false}.
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
local moved, remembered, fields = 0, {}, '^([^	]*)	([^	]*)	([^	]*)	([^	]*)	'
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
