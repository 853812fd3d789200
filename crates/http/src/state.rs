//! What every handler can reach.

use ipnet::IpNet;
use runbase_domain::catalog::Catalog;
use runbase_domain::files::FileStore;
use runbase_domain::inflight::InFlight;
use runbase_domain::payments::PaymentProvider;
use runbase_domain::ratelimit::{RateLimit, RateLimiter};
use runbase_domain::store::Store;
use std::sync::Arc;
use std::time::Duration;

/// The configured rate limits, kept for the docs page (which must show what is enforced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Per API key: the runs endpoints (create and get together).
    pub runs: RateLimit,
    /// Per client IP: log-in, sign-up and password change.
    pub auth: RateLimit,
    /// Per client IP: the dashboard's "who am I" (`GET /auth/session`).
    pub session: RateLimit,
}

impl Default for Limits {
    fn default() -> Self {
        let per = |requests, secs| RateLimit {
            requests,
            window: Duration::from_secs(secs),
        };
        Limits {
            runs: per(20, 10),
            auth: per(5, 60),
            session: per(60, 60),
        }
    }
}

/// HTTP-level settings.
#[derive(Debug, Clone, Default)]
pub struct HttpConfig {
    /// Proxies whose `X-Forwarded-For` (and `X-Forwarded-Proto`) is believed; from anyone else
    /// those headers are ignored.
    pub trusted_proxies: Vec<IpNet>,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    pub limits: Limits,
    /// The address clients reach the server at (links in the dashboard, payment return URLs).
    pub public_url: String,
    /// The largest file `POST /api/v1/files` (and the dashboard's `POST /files`) accepts, in
    /// bytes (`[uploads] max_bytes`; 30 MB when unset).
    pub max_upload_bytes: u64,
    /// What uploads may take: per account, and for never-credited accounts
    /// (`[uploads] quota_bytes_per_account`, `uncredited_quota_bytes`, `uncredited_total_bytes`).
    pub upload_quota: runbase_domain::uploads::UploadQuota,
    /// Days an upload is kept (`[uploads] retention_days`); 0: kept forever. Named in the
    /// quota's message (the sweep itself runs beside the worker).
    pub upload_retention_days: u32,
    /// The welcome credit of a new account (`[accounts] signup_credit_cents`).
    pub signup_credit: runbase_domain::Millicents,
}

impl HttpConfig {
    /// Whether cookies must be `Secure`: the public address is HTTPS.
    pub fn behind_tls(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    /// The rules uploads are received under.
    pub fn upload_limits(&self) -> runbase_domain::uploads::UploadLimits {
        runbase_domain::uploads::UploadLimits::from_config(
            self.max_upload_bytes,
            self.upload_quota,
            self.upload_retention_days,
        )
    }

    /// The largest request body accepted (1 MiB when unset).
    pub fn body_limit(&self) -> usize {
        if self.max_body_bytes == 0 {
            1 << 20
        } else {
            self.max_body_bytes
        }
    }
}

/// Shared state of the API and the dashboard, behind one `Arc`: axum clones the state for every
/// handler and every middleware of every request, and a clone of [`Shared`] itself was fifteen
/// reference counts to raise and drop again (2–3% of the create path's CPU in a profile).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub catalog: Arc<Catalog>,
    pub files: Arc<dyn FileStore>,
    /// Per-key limiter of the runs endpoints (create and get, counted together).
    pub runs_limiter: Arc<dyn RateLimiter>,
    /// Per-IP limiter of the auth endpoints (log-in, sign-up, password change).
    pub auth_limiter: Arc<dyn RateLimiter>,
    /// Per-IP limiter of the session check.
    pub session_limiter: Arc<dyn RateLimiter>,
    /// Top-ups; `None` when no payment provider is configured.
    pub payments: Option<Arc<dyn PaymentProvider>>,
    /// The runs the in-process worker is executing (to stop one that is canceled).
    pub inflight: InFlight,
    /// Keys authenticated in the last second (the 429 path's early refusal).
    pub recent_keys: Arc<runbase_domain::auth::RecentKeys>,
    /// The operator's metrics (`NoMetrics` without `--metrics-listen`).
    pub metrics: Arc<dyn runbase_domain::metrics::Metrics>,
    /// The uploads this node receives at once, in all, per account and per address
    /// (`[uploads] max_concurrent...`): what uploads hold in memory (up to 15 MiB each on S3)
    /// is bounded, and no one client takes every slot.
    pub upload_slots: Arc<crate::upload_slots::UploadSlots>,
    /// The idempotency keys whose first request this node is executing.
    pub idempotency_keys: Arc<runbase_domain::idempotency::InFlightKeys>,
    /// Run changes for event streams and waiting creates, and the streams open here.
    pub run_events: runbase_domain::events::RunEvents,
    pub config: Arc<HttpConfig>,
}
