//! What every handler can reach.

use ipnet::IpNet;
use runbase_domain::catalog::Catalog;
use runbase_domain::files::FileStore;
use runbase_domain::inflight::InFlight;
use runbase_domain::ratelimit::RateLimiter;
use runbase_domain::store::Store;
use std::sync::Arc;

/// HTTP-level settings.
#[derive(Debug, Clone, Default)]
pub struct HttpConfig {
    /// Proxies whose `X-Forwarded-For` is believed; from anyone else the header is ignored.
    pub trusted_proxies: Vec<IpNet>,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
}

/// Shared state of the API.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub catalog: Arc<Catalog>,
    pub files: Arc<dyn FileStore>,
    /// Per-key limiter of the runs endpoints (create and get, counted together).
    pub runs_limiter: Arc<dyn RateLimiter>,
    /// The runs the in-process worker is executing (to stop one that is canceled).
    pub inflight: InFlight,
    pub config: Arc<HttpConfig>,
}
