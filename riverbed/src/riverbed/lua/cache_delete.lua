-- Checks the caller's guess of the namespace version first; on a wrong guess it does
-- nothing and answers the current version.
-- KEYS: version key, then entry key and lease key built for the guessed version.
-- ARGV: guessed version. Drops the entry and the lease.
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
if not version then return redis.error_reply('cache version key is not an integer') end
if version ~= tonumber(ARGV[1]) then return {version} end

redis.call('DEL', KEYS[2], KEYS[3])
return {version}
