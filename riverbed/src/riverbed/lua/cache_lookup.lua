-- Checks the caller's guess of the namespace version first; on a wrong guess it does
-- nothing and answers the current version.
-- KEYS: version key, then entry key and lease key built for the guessed version.
-- ARGV: guessed version, lease token ('' for none), lease ttl (ms).
-- Returns {version, value} on a hit; {version} on a miss, after taking the lease.
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
if not version then return redis.error_reply('cache version key is not an integer') end
if version ~= tonumber(ARGV[1]) then return {version} end

local value = redis.call('GET', KEYS[2])
if value then return {version, value} end
if ARGV[2] ~= '' then redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3]) end
return {version}
