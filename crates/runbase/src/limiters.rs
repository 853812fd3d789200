//! Builds the rate limiters `[rate_limits] backend` names: in memory (one node) or in Redis
//! (shared by every node).

use crate::config::Config;
use runbase_domain::ratelimit::{RateLimiter, SlidingWindowLimiter};
use runbase_http::Limits;
use runbase_ratelimit_redis::{FailMode, RedisLimits, Timeouts};
use std::sync::Arc;
use std::time::Duration;

pub struct Limiters {
    pub runs: Arc<dyn RateLimiter>,
    pub auth: Arc<dyn RateLimiter>,
    pub session: Arc<dyn RateLimiter>,
}

/// How long a starting server waits for its first Redis connection before it answers anyway
/// (with `[rate_limits] fail`'s answer until the connection is made).
const FIRST_CONNECTION: Duration = Duration::from_secs(2);

/// Needs a Tokio runtime (both backends start background tasks).
pub async fn build(config: &Config, limits: Limits) -> anyhow::Result<Limiters> {
    if config.rate_limits.backend == "redis" {
        let url = config
            .redis_url
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("rate_limits.backend = \"redis\" needs redis_url"))?;
        let fail = if config.rate_limits.fail == "open" {
            FailMode::Open
        } else {
            FailMode::Closed
        };
        let redis = RedisLimits::connect(
            url,
            &config.rate_limits.redis_key_prefix,
            fail,
            Timeouts::default(),
        )
        .map_err(anyhow::Error::msg)?;
        if !redis.connected_within(FIRST_CONNECTION).await {
            tracing::warn!(
                fail = %config.rate_limits.fail,
                "rate limiter: no connection to Redis after {FIRST_CONNECTION:?}; answering per [rate_limits] fail until there is one"
            );
        }
        tracing::info!(
            fail = %config.rate_limits.fail,
            "rate limits are counted in Redis"
        );
        return Ok(Limiters {
            runs: Arc::new(redis.limiter("runs", limits.runs)),
            auth: Arc::new(redis.limiter("auth", limits.auth)),
            session: Arc::new(redis.limiter("session", limits.session)),
        });
    }
    let auth = Arc::new(SlidingWindowLimiter::new(limits.auth));
    let session = Arc::new(SlidingWindowLimiter::new(limits.session));
    // Per-IP limiters meet many clients: forget the idle ones now and then.
    {
        let (a, s) = (auth.clone(), session.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                a.sweep();
                s.sweep();
            }
        });
    }
    Ok(Limiters {
        runs: Arc::new(SlidingWindowLimiter::new(limits.runs)),
        auth,
        session,
    })
}
