-- Cancel a delayed event if it has not been promoted and belongs to the caller.
-- KEYS: delay set, delay items, delay meta, promoted set. ARGV: member, owner, the owner's
-- record of the member in the promoted set (another owner's promoted event is 'missing').
-- Returns 'cancelled', 'promoted' (too late: it is on the stream) or 'missing'.
local header = redis.call('HGET', KEYS[3], ARGV[1])
if header and redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  local owner = string.match(header, '^[^	]*	[^	]*	[^	]*	([^	]*)	')
  if owner ~= ARGV[2] then return 'missing' end
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  return 'cancelled'
end
if redis.call('ZSCORE', KEYS[4], ARGV[3]) then return 'promoted' end
return 'missing'
