-- Say this consumer is alive: its heartbeat field set to Redis's time (ms), so hosts with
-- skewed clocks agree. KEYS: heartbeats hash. ARGV: consumer.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], now)
return redis.status_reply('OK')
