-- Take `cost` events from a GCRA bucket, refilled at one event per `interval`, Redis time.
-- KEYS: state. ARGV: interval (µs per event), burst (events), cost (events).
-- Returns {allowed 0/1, remaining events, retry after (µs), full again after (µs)}.
local interval, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + cost * interval
local allowed_from = new_tat - burst * interval
if allowed_from > now then
  local remaining = math.floor((now - (tat - burst * interval)) / interval)
  return {0, math.max(remaining, 0), allowed_from - now, tat - now}
end
local hold_ms = math.ceil((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', hold_ms)
return {1, math.floor((now - allowed_from) / interval), 0, new_tat - now}
