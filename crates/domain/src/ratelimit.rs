//! Rate limiting: a trait so a shared implementation (crates/ratelimit-redis) can serve several
//! nodes, and an exact in-memory sliding-window log for one node.
//!
//! Why a sliding log and not GCRA (e.g. the `governor` crate): the contract is "20 requests per
//! 10 seconds", and a GCRA bucket of burst 20 refilling every 0.5 s admits up to 39 requests in
//! some 10-second window. A log of the last `limit` admission times per key is exact, O(1) per
//! check, and its memory is bounded by `limit` timestamps per key.

use async_trait::async_trait;
use dashmap::DashMap;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A limit: at most `requests` in any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub window: Duration,
}

/// The limit state after a check, for the `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Until the oldest counted request leaves the window (a slot frees up).
    pub reset_after: Duration,
}

impl RateDecision {
    /// Whole seconds, rounded up, for `RateLimit-Reset` and `Retry-After`.
    pub fn reset_secs(&self) -> u64 {
        let d = self.reset_after;
        d.as_secs() + u64::from(d.subsec_nanos() > 0)
    }
}

impl RateDecision {
    /// What a limiter answers when it lets a request through without counting it (a shared
    /// limiter that is unreachable, configured to fail open): the whole limit remains.
    pub fn unknown(limit: RateLimit) -> Self {
        RateDecision {
            allowed: true,
            limit: limit.requests,
            remaining: limit.requests,
            reset_after: Duration::ZERO,
        }
    }
}

/// A shared limiter could not decide (its server is unreachable or slow) and is configured to
/// fail closed: the request is refused with `503 service_unavailable`, not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the rate limiter is unavailable")]
pub struct LimiterUnavailable;

/// Counts requests per key.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request for `key` if the limit allows it.
    async fn check(&self, key: &str) -> Result<RateDecision, LimiterUnavailable>;
    /// The state for `key` without counting a request.
    async fn peek(&self, key: &str) -> Result<RateDecision, LimiterUnavailable>;
}

/// The exact in-memory limiter.
pub struct SlidingWindowLimiter {
    limit: RateLimit,
    log: DashMap<String, VecDeque<Instant>>,
}

impl SlidingWindowLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            log: DashMap::new(),
        }
    }

    fn decide(&self, key: &str, now: Instant, count: bool) -> RateDecision {
        let RateLimit { requests, window } = self.limit;
        let mut entry = self.log.entry(key.to_owned()).or_default();
        let times = entry.value_mut();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            times.pop_front();
        }
        let allowed = (times.len() as u32) < requests;
        if allowed && count {
            times.push_back(now);
        }
        let used = times.len() as u32;
        let reset_after = times.front().map_or(Duration::ZERO, |t| {
            (*t + window).saturating_duration_since(now)
        });
        RateDecision {
            allowed,
            limit: requests,
            remaining: requests.saturating_sub(used),
            reset_after,
        }
    }

    /// Forgets clients whose every request has left the window. Per-IP limits see clients come
    /// and go; a periodic sweep keeps memory bounded by the clients of the last window.
    pub fn sweep(&self) {
        self.sweep_at(Instant::now());
    }

    fn sweep_at(&self, now: Instant) {
        let window = self.limit.window;
        self.log.retain(|_, times| {
            times
                .back()
                .is_some_and(|t| now.duration_since(*t) < window)
        });
    }

    /// How many clients are remembered.
    pub fn tracked(&self) -> usize {
        self.log.len()
    }

    /// Checks at an explicit instant (tests drive time with this).
    pub fn check_at(&self, key: &str, now: Instant) -> RateDecision {
        self.decide(key, now, true)
    }
}

#[async_trait]
impl RateLimiter for SlidingWindowLimiter {
    async fn check(&self, key: &str) -> Result<RateDecision, LimiterUnavailable> {
        Ok(self.decide(key, Instant::now(), true))
    }

    async fn peek(&self, key: &str) -> Result<RateDecision, LimiterUnavailable> {
        Ok(self.decide(key, Instant::now(), false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> SlidingWindowLimiter {
        SlidingWindowLimiter::new(RateLimit {
            requests: 20,
            window: Duration::from_secs(10),
        })
    }

    #[test]
    fn twenty_per_ten_seconds_exactly() {
        let l = limiter();
        let t0 = Instant::now();
        for i in 0..20 {
            let d = l.check_at("k", t0 + Duration::from_millis(i * 400));
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 19 - i as u32);
        }
        // 21st, still inside the first request's window: refused, a slot frees at t0 + 10 s.
        let d = l.check_at("k", t0 + Duration::from_millis(9_000));
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.reset_after, Duration::from_secs(1));
        assert_eq!(d.reset_secs(), 1);
        // Once the first request leaves the window, one more is admitted, and only one.
        assert!(l.check_at("k", t0 + Duration::from_secs(10)).allowed);
        assert!(!l.check_at("k", t0 + Duration::from_millis(10_100)).allowed);
    }

    #[test]
    fn sweep_forgets_only_idle_clients() {
        let l = limiter();
        let t0 = Instant::now();
        l.check_at("old", t0);
        l.check_at("new", t0 + Duration::from_secs(8));
        l.sweep_at(t0 + Duration::from_secs(11));
        assert_eq!(l.tracked(), 1);
        // The remembered client still has its request counted.
        assert_eq!(
            l.check_at("new", t0 + Duration::from_secs(11)).remaining,
            18
        );
    }

    #[test]
    fn keys_are_independent() {
        let l = limiter();
        let t0 = Instant::now();
        for _ in 0..20 {
            l.check_at("a", t0);
        }
        assert!(!l.check_at("a", t0).allowed);
        assert!(l.check_at("b", t0).allowed);
    }

    #[test]
    fn refused_requests_are_not_counted() {
        let l = SlidingWindowLimiter::new(RateLimit {
            requests: 1,
            window: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        assert!(l.check_at("k", t0).allowed);
        for s in 1..10 {
            assert!(!l.check_at("k", t0 + Duration::from_secs(s)).allowed);
        }
        assert!(l.check_at("k", t0 + Duration::from_secs(10)).allowed);
    }
}
