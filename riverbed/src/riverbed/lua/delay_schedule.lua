-- Put events in the delay store for later, unless their member is already there or was
-- promoted within the remembered window (publishing the same event id twice schedules it
-- once). KEYS: delay set, delay items, delay meta, promoted set. ARGV: (member, due ms,
-- event, header, the owner's promoted record of the member) quintuples. Returns one flag
-- per member: 1 scheduled now, 0 already scheduled or promoted.
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
