-- Move one dead-lettered entry back onto its stream (the operator CLI's replay),
-- atomically and only if it is still there: two operators replaying at once must not
-- replay it twice. The new entry names the group the entry failed in (the ``group`` entry
-- field, as a promoted retry does), so only that group handles it again; a dead letter
-- without a group goes to every group. Its attempts start again at 1.
-- KEYS: stream, dead-letter stream. ARGV: dead-letter entry id.
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
