-- Store a new API key unless its name or id is taken.
-- KEYS[1]: the API keys hash (sha256 hex -> JSON record).
-- ARGV[1]: the new key's digest; ARGV[2]: its record (JSON); ARGV[3]: its name; ARGV[4]: its id.
-- Returns 'name' or 'id' when taken (nothing written), else 'ok'.
for _, raw in ipairs(redis.call('HVALS', KEYS[1])) do
  local record = cjson.decode(raw)
  if record['name'] == ARGV[3] then return 'name' end
  if record['id'] == ARGV[4] then return 'id' end
end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 'id' end
return 'ok'
