//! The rate limiter shared by several nodes: the same sliding-window log as the in-memory
//! limiter (`runbase_domain::ratelimit`), kept in Redis, one sorted set per key, and decided by
//! one Lua script so that the count and the admission are one atomic step on one clock (Redis's
//! `TIME`, not each node's). The 21st request in any window is refused wherever it lands.
//!
//! When Redis cannot be reached the limiter answers at once (it never waits for a connection):
//! refuses (`fail = closed`, the caller answers 503) or lets the request through uncounted
//! (`fail = open`). The connection is rebuilt by a background task.
//!
//! A refusal is certain until the oldest admission leaves the window, so each node remembers
//! it and refuses by itself until then (`refusals`): an over-limit flood does not reach Redis.

mod connection;
mod refusals;
mod script;

use async_trait::async_trait;
use connection::Connection;
use refusals::Refusals;
use runbase_domain::ratelimit::{LimiterUnavailable, RateDecision, RateLimit, RateLimiter};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use connection::Timeouts;

/// What to do when Redis cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Refuse the request (`503 service_unavailable`).
    Closed,
    /// Let the request through without counting it.
    Open,
}

/// A connection to Redis shared by the limiters of one process.
#[derive(Clone)]
pub struct RedisLimits {
    conn: Arc<Connection>,
    fail: FailMode,
    prefix: String,
    log: Arc<OutageLog>,
}

impl RedisLimits {
    /// Starts connecting to `url` in the background and returns at once; until the first
    /// connection succeeds, limiters answer per `fail`. Needs a Tokio runtime. `prefix` starts
    /// every key this process writes (several installs may share one Redis).
    pub fn connect(
        url: &str,
        prefix: &str,
        fail: FailMode,
        timeouts: Timeouts,
    ) -> Result<Self, String> {
        let conn = Connection::start(url, timeouts)?;
        Ok(RedisLimits {
            conn,
            fail,
            prefix: prefix.to_owned(),
            log: Arc::new(OutageLog::default()),
        })
    }

    /// Waits, at most `within`, for the first connection; says whether there is one. A server
    /// about to answer waits for it, so that its first requests are not refused (or let through
    /// uncounted) only because the connection was still being made.
    pub async fn connected_within(&self, within: Duration) -> bool {
        let give_up = Instant::now() + within;
        while !self.conn.is_connected() {
            if Instant::now() >= give_up {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// A limiter for one scope (`runs`, `auth`, `session`): its keys are
    /// `{prefix}{scope}:{key}`.
    pub fn limiter(&self, scope: &str, limit: RateLimit) -> RedisLimiter {
        RedisLimiter {
            shared: self.clone(),
            key_prefix: format!("{}{scope}:", self.prefix),
            limit,
            refusals: Refusals::new(limit.window),
        }
    }
}

/// One limit, counted in Redis.
pub struct RedisLimiter {
    shared: RedisLimits,
    key_prefix: String,
    limit: RateLimit,
    refusals: Refusals,
}

impl RedisLimiter {
    async fn decide(&self, key: &str, count: bool) -> Result<RateDecision, LimiterUnavailable> {
        let asked = Instant::now();
        if let Some(left) = self.refusals.refused_for(key, asked) {
            return Ok(RateDecision {
                allowed: false,
                limit: self.limit.requests,
                remaining: 0,
                reset_after: left,
            });
        }
        let redis_key = format!("{}{key}", self.key_prefix);
        match self.shared.conn.window(&redis_key, self.limit, count).await {
            Ok(d) => {
                if !d.allowed {
                    // Measured from `asked`, before Redis read its clock: never later than the
                    // moment the oldest admission leaves the window.
                    self.refusals
                        .remember(key, asked + d.reset_after, Instant::now());
                }
                Ok(d)
            }
            Err(e) => {
                let fail = self.shared.fail;
                self.shared.log.failed(fail, &e);
                match fail {
                    FailMode::Closed => Err(LimiterUnavailable),
                    FailMode::Open => Ok(RateDecision::unknown(self.limit)),
                }
            }
        }
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn check(&self, key: &str) -> Result<RateDecision, LimiterUnavailable> {
        self.decide(key, true).await
    }

    async fn peek(&self, key: &str) -> Result<RateDecision, LimiterUnavailable> {
        self.decide(key, false).await
    }
}

/// Logs an outage at most once per [`OutageLog::EVERY`], with the number of requests it
/// touched, rather than once per request.
struct OutageLog {
    start: Instant,
    /// Milliseconds since `start` of the last line, plus one (0: never logged).
    last_ms: AtomicU64,
    since_last: AtomicU64,
}

impl Default for OutageLog {
    fn default() -> Self {
        OutageLog {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            since_last: AtomicU64::new(0),
        }
    }
}

impl OutageLog {
    const EVERY: Duration = Duration::from_secs(10);

    fn failed(&self, fail: FailMode, error: &connection::Error) {
        let n = self.since_last.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.start.elapsed().as_millis() as u64 + 1;
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= Self::EVERY.as_millis() as u64;
        // One thread wins the right to log; the others count.
        if !due
            || self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.since_last.fetch_sub(n, Ordering::Relaxed);
        let what = match fail {
            FailMode::Closed => "refused with 503 (rate_limits.fail = \"closed\")",
            FailMode::Open => "let through uncounted (rate_limits.fail = \"open\")",
        };
        tracing::error!(
            requests = n,
            "rate limiter: Redis is unavailable ({error}); requests are {what}; logged at most every 10 s"
        );
    }
}
