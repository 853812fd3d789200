//! The sliding-window log as one Lua script, run atomically by Redis (EVALSHA, loaded on the
//! first NOSCRIPT).
//!
//! KEYS[1]: the sorted set of one key's admitted requests, scored by admission time in
//! microseconds of Redis's clock. ARGV: the limit, the window in microseconds, 1 to count this
//! request (0 to only look), a nonce that keeps members unique when two requests share a
//! microsecond, and the moment on Redis's clock after which the caller has stopped waiting for
//! the answer (0: none). Returns {allowed (1|0), requests in the window, microseconds until the
//! oldest leaves it, Redis's clock}, or {2, 0, 0, clock} when the deadline has passed: a command
//! that reaches Redis only after its caller gave up (Redis was stalled, its socket held it) is
//! not counted, since its request was answered 503 or let through uncounted. Only admitted
//! requests are added, so a set holds at most `limit` members, and it expires with its newest
//! member.

use redis::Script;
use std::sync::LazyLock;

pub static SLIDING_WINDOW: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCE));

const SOURCE: &str = r#"
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local count = ARGV[3] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local deadline = tonumber(ARGV[5])
if deadline > 0 and now > deadline then
  return {2, 0, 0, now}
end
-- A request admitted exactly one window ago has left it (as in the in-memory limiter).
-- Scores are written with %d: a double's default formatting would round them.
redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now - window))
local used = redis.call('ZCARD', key)
local allowed = 0
if used < limit then
  allowed = 1
  if count then
    local at = string.format('%d', now)
    redis.call('ZADD', key, at, at .. ':' .. ARGV[4])
    used = used + 1
    redis.call('PEXPIRE', key, math.floor(window / 1000) + 1000)
  end
end
local reset = 0
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
if oldest[2] then
  reset = tonumber(oldest[2]) + window - now
end
return {allowed, used, reset, now}
"#;
