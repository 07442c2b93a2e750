"""The start of every token bucket kept in Redis (the platform's broker budget, the API's
per-key budgets): a Lua snippet that reads the bucket and refills it on Redis's own clock.

KEYS[1] is the bucket, a hash of `tokens` and `at`; ARGV[1] the rate in tokens a second,
ARGV[2] the bucket's size. After it, `tokens` and `at` hold the bucket as of now, and
`rate` and `size` the arguments; the script that includes it spends and stores.
"""

REFILL = """
local rate = tonumber(ARGV[1])
local size = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or size
local at = tonumber(state[2]) or now
if now < at then
  at = now  -- Redis's clock stepped back (NTP, a failover): refill from now on, not never
end
if now > at then
  tokens = math.min(size, tokens + (now - at) * rate)
  at = now
end
"""
