"""Lua scripts run atomically inside Redis. Each has a pure-Python twin in ``memory.py`` tested against it.

GCRA (generic cell rate algorithm) keeps one timestamp per key — the theoretical arrival time (TAT) — and
reads the clock from Redis itself (``TIME``), so API instances with skewed clocks still share one limit.
"""

from __future__ import annotations

# KEYS[1] = limit key; ARGV = emission interval (ms), burst (requests), cost (requests).
# Returns {allowed (0/1), remaining, retry_after_ms, reset_after_ms}.
# The arithmetic is on how far the TAT is ahead of now, never on the TAT itself: ``(now + x) - x`` need not equal
# ``now`` in floating point, which refused, now and then, a request that took exactly the whole burst (a quota of
# one job a minute refused the first job; the in-memory twin, whose clock has fractions of a millisecond). A TAT
# stored as epoch milliseconds is itself rounded (to 1/4096 ms today), so a request within a microsecond of its
# allowance is admitted: ``GCRA_ROUNDING_MS``.
GCRA_ROUNDING_MS = 0.001
GCRA = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tolerance = interval * burst
local ahead = tonumber(redis.call('GET', KEYS[1]) or now) - now
if ahead < 0 then ahead = 0 end
local after = ahead + interval * cost
local wait = after - tolerance
if wait > {GCRA_ROUNDING_MS} then
  return {{0, 0, wait, ahead}}
end
redis.call('SET', KEYS[1], now + after, 'PX', math.max(1, after))
return {{1, math.max(0, math.floor((tolerance - after) / interval)), 0, after}}
"""

# KEYS[1] = lock key; ARGV[1] = token. Delete only our own lock.
RELEASE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1] = key, KEYS[2] = lock key; ARGV[1] = value, ARGV[2] = ttl (ms), ARGV[3] = token. Store a recomputed
# value and release the fill lock taken for it (only if still ours) in one round trip. The lock goes first: a SET
# that Redis refuses (out of memory) stops the script, and the lock must not be left held for its whole TTL.
SET_AND_RELEASE = """
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS[1] = value key, KEYS[2] = its group's generation key; ARGV[1] = the fill lock's key without the generation,
# ARGV[2] = token, ARGV[3] = the lock's ttl (ms). A cache lookup and, on a miss, the fill lock of the current
# generation, in one round trip. Returns {the value if it is of the current generation (else false), the
# generation, 1 if this call took the fill lock}. The lock's key is made here from the generation, so it is not
# declared in KEYS: fine on one Redis (jobyard's keys are not spread over a cluster).
LOOKUP_OR_FILL = """
local v = redis.call('GET', KEYS[1])
local g = redis.call('GET', KEYS[2]) or '0'
if v and string.sub(v, 1, #g + 1) == g .. ':' then return {v, g, 0} end
if redis.call('SET', ARGV[1] .. g, ARGV[2], 'NX', 'PX', ARGV[3]) then return {false, g, 1} end
return {false, g, 0}
"""

# KEYS[1] = lock key; ARGV[1] = token, ARGV[2] = ttl (ms). Extend only our own lock.
EXTEND_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS[1] = counter key; ARGV[1] = ttl (ms). Increment and (re)set the expiry in one step.
INCR_WITH_TTL = """
local v = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return v
"""

# A ``Writes`` batch in one command (see ``KV.apply``): KEYS = the keys to set, then the counters;
# ARGV[1..3] = how many sets, counters and publishes; then value, ttl (ms) per set; ttl (ms) per counter;
# channel, message per publish. Applied in that order. One command instead of a pipeline of hundreds: the
# client packs one request and parses one reply (a fifth of the client CPU per batch of 200 results).
APPLY_WRITES = """
local ns, ni, np = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local a = 4
for i = 1, ns do
  redis.call('SET', KEYS[i], ARGV[a], 'PX', ARGV[a + 1])
  a = a + 2
end
for i = ns + 1, ns + ni do
  redis.call('INCR', KEYS[i])
  redis.call('PEXPIRE', KEYS[i], ARGV[a])
  a = a + 1
end
for i = 1, np do
  redis.call('PUBLISH', ARGV[a], ARGV[a + 1])
  a = a + 2
end
return ns + ni + np
"""
