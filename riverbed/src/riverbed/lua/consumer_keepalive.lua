-- Reset the idle time of entries this consumer still owns (XCLAIM JUSTID does
-- not count as a delivery). KEYS: stream. ARGV: group, consumer, ids...
-- Returns the ids no longer owned (claimed by a sibling, acked or deleted).
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
