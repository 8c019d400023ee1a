-- Append many events to one stream in one call. KEYS: stream.
-- ARGV: entry field, max length (0: none), then one CloudEvents document per event.
-- One script instead of a pipeline of XADDs: the client packs and parses one command.
local field, max_length, ids = ARGV[1], tonumber(ARGV[2]), {}
for i = 3, #ARGV do
  if max_length > 0 then
    ids[#ids + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', max_length, '*', field, ARGV[i])
  else
    ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', field, ARGV[i])
  end
end
return ids
