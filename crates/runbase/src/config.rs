//! Configuration, in layers: built-in defaults, then a TOML file (`--config` / `RUNBASE_CONFIG`),
//! then `RUNBASE_*` environment variables (`__` separates nested keys, e.g.
//! `RUNBASE_RATE_LIMITS__RUNS__REQUESTS=100`), then command-line flags. Unknown keys in the file
//! are an error; unknown `RUNBASE_*` variables are a warning.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use runbase_files::StorageConfig;
use runbase_providers::ProvidersConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the API and dashboard listen on.
    pub listen: String,
    /// `all` (API, dashboard and worker in one process), `api` or `worker` (`serve --role`).
    pub role: String,
    /// Where the embedded database and output files live.
    pub data_dir: PathBuf,
    /// A database URL (`sqlite:///path/to/runbase.db` or `postgres://user@host/db`); the default
    /// is `runbase.db` in `data_dir`.
    pub database_url: Option<String>,
    /// Settings of the PostgreSQL store (`[database]`).
    pub database: DatabaseSettings,
    /// The address clients reach this server at, for output URLs; defaults to the listen address.
    pub public_url: Option<String>,
    /// Catalogue files added to (or replacing models of) the built-in catalogue.
    pub catalog: Vec<PathBuf>,
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
    /// The Redis server of `[rate_limits] backend = "redis"` (`redis://host:6379/0`).
    pub redis_url: Option<String>,
    /// `full` (fsync each commit batch; survives power loss) or `normal` (survives a crash of
    /// Runbase, not of the machine).
    pub durability: String,
    pub rate_limits: RateLimits,
    /// Connection limits and timeouts against slow or greedy clients.
    pub http: HttpSettings,
    pub worker: WorkerSettings,
    /// Upstream providers: credentials, addresses, retries.
    pub providers: ProvidersConfig,
    /// Where output files are kept: local files (the default) or an S3-compatible bucket.
    pub storage: StorageConfig,
    /// Top-ups through a payment provider (Stripe Checkout).
    pub payments: PaymentsConfig,
    /// Files users upload for runs' inputs (`POST /api/v1/files`).
    pub uploads: UploadsSettings,
    /// New accounts.
    pub accounts: AccountsSettings,
    /// Live run events (`GET /api/v1/runs/{id}/events`) and waiting creates (`Prefer: wait`).
    pub events: EventsSettings,
    /// Outgoing run webhooks (`[webhooks]`).
    pub webhooks: WebhooksSettings,
    /// Sign-in with OpenID Connect providers (`[auth.oidc.NAME]`).
    pub auth: runbase_dashboard::oidc::AuthConfig,
    /// Log filter (tracing's `EnvFilter` syntax); `RUST_LOG` wins when set.
    pub log: String,
    /// Where Prometheus metrics are served (`GET /metrics`), apart from the API: an operator's
    /// address (`--metrics-listen`, `RUNBASE_METRICS_LISTEN`). Unset: nothing is counted.
    pub metrics_listen: Option<String>,
    /// `text` (one line per event, for people) or `json` (one JSON object per line, for log
    /// collectors). Either way a request's lines carry its `request_id`.
    pub log_format: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Per API key, for `POST /api/v1/runs` and `GET /api/v1/runs/{id}` together.
    pub runs: Limit,
    /// Per client IP, for the dashboard's log-in, sign-up and password change.
    pub auth: Limit,
    /// Per client IP, for the session check (`GET /auth/session`).
    pub session: Limit,
    /// Where the counts live: `memory` (this process; one node) or `redis` (shared by every
    /// node, at `redis_url`).
    pub backend: String,
    /// With `backend = "redis"` and Redis unreachable: `closed` refuses requests with 503,
    /// `open` lets them through uncounted.
    pub fail: String,
    /// Starts every Redis key of the limiter (installs sharing one Redis need different ones).
    pub redis_key_prefix: String,
}

/// Payment providers for top-ups.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentsConfig {
    /// Stripe Checkout; on when a secret key is set here or in `STRIPE_SECRET_KEY`.
    pub stripe: runbase_payments::StripeConfig,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub requests: u32,
    pub window_secs: u64,
}

/// `[uploads]`: files users upload (`POST /api/v1/files`, the dashboard's Playground).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadsSettings {
    /// The largest file accepted, in bytes (`RUNBASE_UPLOADS__MAX_BYTES`); 30 MB by default.
    pub max_bytes: u64,
    /// What one account's uploads may take in all, in bytes
    /// (`RUNBASE_UPLOADS__QUOTA_BYTES_PER_ACCOUNT`); 1 GiB by default, 0 for no quota.
    pub quota_bytes_per_account: u64,
    /// What one account's uploads may take while it has never been credited by a payment or
    /// an operator (a welcome credit does not count), in bytes
    /// (`RUNBASE_UPLOADS__UNCREDITED_QUOTA_BYTES`); 100 MiB by default, 0 for no separate quota.
    pub uncredited_quota_bytes: u64,
    /// What the uploads of all never-credited accounts may take together, in bytes
    /// (`RUNBASE_UPLOADS__UNCREDITED_TOTAL_BYTES`); 10 GiB by default, 0 for no limit. Free
    /// sign-ups cannot fill the disk past it.
    pub uncredited_total_bytes: u64,
    /// How many uploads one node receives at once (`RUNBASE_UPLOADS__MAX_CONCURRENT`); 16 by
    /// default. One more is answered `503 service_unavailable` before its body is read. Bounds
    /// the memory uploads hold: a few chunks each on local storage, up to 15 MiB each on S3.
    pub max_concurrent: u32,
    /// How many of them one account may send at once (`RUNBASE_UPLOADS__MAX_CONCURRENT_PER_ACCOUNT`);
    /// 2 by default. One more is `429 RATE_LIMITED`.
    pub max_concurrent_per_account: u32,
    /// How many of them one client address may send at once
    /// (`RUNBASE_UPLOADS__MAX_CONCURRENT_PER_IP`); 4 by default. One more is `429 RATE_LIMITED`.
    pub max_concurrent_per_ip: u32,
    /// Days an upload is kept before the sweep deletes it (`RUNBASE_UPLOADS__RETENTION_DAYS`);
    /// 30 by default, 0 to keep uploads forever.
    pub retention_days: u32,
}

impl Default for UploadsSettings {
    fn default() -> Self {
        UploadsSettings {
            max_bytes: runbase_domain::uploads::DEFAULT_MAX_BYTES,
            quota_bytes_per_account: runbase_domain::uploads::DEFAULT_QUOTA_BYTES,
            uncredited_quota_bytes: runbase_domain::uploads::DEFAULT_UNCREDITED_QUOTA_BYTES,
            uncredited_total_bytes: runbase_domain::uploads::DEFAULT_UNCREDITED_TOTAL_BYTES,
            max_concurrent: 16,
            max_concurrent_per_account: 2,
            max_concurrent_per_ip: 4,
            retention_days: runbase_domain::uploads::DEFAULT_RETENTION_DAYS,
        }
    }
}

/// `[webhooks]`: how run webhooks are sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksSettings {
    /// Send to loopback, private, link-local and other non-public addresses too
    /// (`RUNBASE_WEBHOOKS__ALLOW_PRIVATE_TARGETS`); off by default, as for `image_urls`.
    pub allow_private_targets: bool,
    /// The wait after a failed attempt, in milliseconds, doubled after each further failure
    /// (with jitter); 5000 by default.
    pub retry_base_ms: u64,
    /// The longest wait between two attempts, in milliseconds; one hour by default.
    pub retry_max_ms: u64,
    /// How long a delivery is retried, in seconds after it was queued; 24 hours by default
    /// (at least one attempt is made after it).
    pub retry_for_secs: u64,
    /// The limit of one attempt, in seconds; 10 by default.
    pub timeout_secs: u64,
    /// How long the delivery log keeps a finished delivery (delivered or given up), in days;
    /// 30 by default, 0 for ever.
    pub keep_days: u64,
}

impl Default for WebhooksSettings {
    fn default() -> Self {
        let retry = runbase_domain::webhooks::RetryPolicy::default();
        WebhooksSettings {
            allow_private_targets: false,
            retry_base_ms: retry.base.as_millis() as u64,
            retry_max_ms: retry.max.as_millis() as u64,
            retry_for_secs: retry.window.as_secs(),
            timeout_secs: 10,
            keep_days: 30,
        }
    }
}

/// The longest `[uploads] retention_days` accepted (about 100 years): beyond it the cut-off
/// would leave the range of a timestamp; 0 is the way to say "forever".
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// `[events]`: live run events (`GET /api/v1/runs/{id}/events`) and waiting creates.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsSettings {
    /// Event streams one API key may hold open at once on one API node; one more is refused
    /// with `429 too_many_streams`. 10 by default.
    pub max_streams_per_key: usize,
    /// Seconds a stream may stay open; then it ends and the client resumes with
    /// `Last-Event-ID`. 1,800 (30 minutes) by default.
    pub max_stream_secs: u64,
    /// Seconds between re-reads of a watched run when no change was announced (the safety net
    /// for a lost announcement). 5 by default.
    pub recheck_secs: u64,
}

impl Default for EventsSettings {
    fn default() -> Self {
        let d = runbase_domain::events::StreamLimits::default();
        EventsSettings {
            max_streams_per_key: d.per_key,
            max_stream_secs: d.max_duration.as_secs(),
            recheck_secs: d.recheck.as_secs(),
        }
    }
}

impl EventsSettings {
    pub fn limits(&self) -> runbase_domain::events::StreamLimits {
        runbase_domain::events::StreamLimits {
            per_key: self.max_streams_per_key,
            max_duration: std::time::Duration::from_secs(self.max_stream_secs),
            recheck: std::time::Duration::from_secs(self.recheck_secs),
        }
    }
}

/// `[accounts]`: what a new account starts with.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountsSettings {
    /// The welcome credit granted once to every new account, however it is made (dashboard
    /// sign-up, `runbase accounts create`), in cents; 0 (the default) grants nothing.
    pub signup_credit_cents: i64,
}

impl AccountsSettings {
    /// The welcome credit, checked (0 to the largest single grant).
    pub fn signup_credit(&self) -> Result<runbase_domain::Millicents, String> {
        runbase_domain::service::signup_credit(self.signup_credit_cents)
    }
}

/// `[database]`: how a node uses a PostgreSQL database (SQLite ignores it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Connections this node keeps to PostgreSQL at most. The server's `max_connections`
    /// (100 by default) bounds the sum over every node, plus one listening connection each.
    pub pool_size: usize,
}

/// The largest `[database] pool_size` accepted: far above what one node can use, low enough to
/// catch a typo before it exhausts the server's connections.
pub const MAX_POOL_SIZE: usize = 1000;

/// `[http]`: what one client may hold of the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Seconds a client has to send a complete request head after connecting, and to start
    /// its next request on a kept-alive connection.
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a whole request body once its head has arrived.
    pub body_timeout_secs: u64,
    /// Seconds an answer may wait on a client that does not read it (no write progress);
    /// the connection is then closed.
    pub write_timeout_secs: u64,
    /// Connections open at once, all clients together; a connection over it is closed at once.
    pub max_connections: usize,
    /// Connections open at once from one client address (an IPv6 client counts by its /64, and
    /// its /48 may hold twice as many; trusted proxies count only against `max_connections`).
    pub max_connections_per_ip: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        let d = runbase_http::ServeConfig::default();
        HttpSettings {
            header_timeout_secs: d.header_timeout.as_secs(),
            body_timeout_secs: d.body_timeout.as_secs(),
            write_timeout_secs: d.write_timeout.as_secs(),
            max_connections: d.max_connections,
            max_connections_per_ip: d.max_connections_per_ip,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Runs calling their provider at once.
    pub concurrency: usize,
    /// Runs a worker holds at once: calling their provider, waiting for a call, or having their
    /// outcome written. Runs created on this node go straight to its idle worker while it has
    /// room for them. Default: four times `concurrency` (docs/DECISIONS.md, "A worker's slot is
    /// the provider call").
    pub intake: Option<usize>,
    /// How often to look for queued runs when nothing signals, in milliseconds.
    pub poll_interval_ms: u64,
    /// Times a run may be started before a restart fails it (with a refund) instead of retrying.
    pub max_attempts: u32,
    /// How long a worker's claim on a run lasts without renewal, in milliseconds (renewed every
    /// third of it). After a worker dies, its runs wait this long before another takes them.
    pub lease_ms: u64,
}

/// The most runs a worker may hold (`worker.intake`): each is renewed in its lease statement.
const MAX_INTAKE: usize = 65_536;

impl WorkerSettings {
    /// The runs a worker holds at once (`intake`, or four times `concurrency`).
    pub fn intake(&self) -> usize {
        self.intake
            .unwrap_or_else(|| self.concurrency.saturating_mul(4).min(MAX_INTAKE))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            role: "all".into(),
            data_dir: PathBuf::from("./runbase-data"),
            database_url: None,
            database: DatabaseSettings {
                pool_size: runbase_store_postgres::DEFAULT_POOL_SIZE,
            },
            public_url: None,
            catalog: Vec::new(),
            trusted_proxies: Vec::new(),
            redis_url: None,
            durability: "full".into(),
            rate_limits: RateLimits {
                runs: Limit {
                    requests: 20,
                    window_secs: 10,
                },
                auth: Limit {
                    requests: 5,
                    window_secs: 60,
                },
                session: Limit {
                    requests: 60,
                    window_secs: 60,
                },
                backend: "memory".into(),
                fail: "closed".into(),
                redis_key_prefix: "runbase:rl:".into(),
            },
            payments: PaymentsConfig::default(),
            uploads: UploadsSettings::default(),
            webhooks: WebhooksSettings::default(),
            accounts: AccountsSettings::default(),
            events: EventsSettings::default(),
            auth: runbase_dashboard::oidc::AuthConfig::default(),
            http: HttpSettings::default(),
            worker: WorkerSettings {
                // docs/DECISIONS.md, "A worker's slot is the provider call": why not more.
                concurrency: 64,
                intake: None,
                poll_interval_ms: 1000,
                max_attempts: 3,
                lease_ms: 30_000,
            },
            providers: ProvidersConfig::default(),
            storage: StorageConfig::default(),
            log: "info".into(),
            log_format: "text".into(),
            metrics_listen: None,
        }
    }
}

/// Values given as flags; `None` leaves the lower layers' value.
#[derive(Debug, Default, Serialize)]
pub struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog: Option<Vec<PathBuf>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "role",
    "data_dir",
    "database_url",
    "database",
    "public_url",
    "catalog",
    "trusted_proxies",
    "redis_url",
    "durability",
    "rate_limits",
    "http",
    "worker",
    "providers",
    "storage",
    "payments",
    "uploads",
    "webhooks",
    "accounts",
    "events",
    "auth",
    "log",
    "log_format",
    "metrics_listen",
];

/// Variables of `runbase run` and `runbase runs` (the API's client), not configuration: no
/// warning for them.
const CLIENT_VARIABLES: &[&str] = &["RUNBASE_API_KEY", "RUNBASE_URL"];

impl Config {
    /// Loads the layers; returns the configuration and the warnings to log once logging is up.
    pub fn load(
        file: Option<PathBuf>,
        flags: FlagOverrides,
    ) -> Result<(Config, Vec<String>), String> {
        let mut warnings = Vec::new();
        for (name, _) in std::env::vars() {
            if let Some(rest) = name.strip_prefix("RUNBASE_") {
                let top = rest.split("__").next().unwrap_or("").to_ascii_lowercase();
                if top != "config"
                    && !CLIENT_VARIABLES.contains(&name.as_str())
                    && !TOP_LEVEL_KEYS.contains(&top.as_str())
                {
                    warnings.push(format!("ignoring unknown environment variable {name}"));
                }
            }
        }
        let file = file.or_else(|| std::env::var_os("RUNBASE_CONFIG").map(PathBuf::from));
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &file {
            if !path.exists() {
                return Err(format!(
                    "configuration file {} does not exist",
                    path.display()
                ));
            }
            fig = fig.merge(Toml::file(path));
        }
        let env = Env::prefixed("RUNBASE_").split("__").filter(|k| {
            TOP_LEVEL_KEYS.contains(
                &k.as_str()
                    .split('.')
                    .next()
                    .unwrap_or("")
                    .to_ascii_lowercase()
                    .as_str(),
            )
        });
        let fig = fig.merge(env).merge(Serialized::defaults(flags));
        let config: Config = fig.extract().map_err(|e| format!("configuration: {e}"))?;
        config.check()?;
        Ok((config, warnings))
    }

    fn check(&self) -> Result<(), String> {
        for (name, l) in [
            ("runs", self.rate_limits.runs),
            ("auth", self.rate_limits.auth),
            ("session", self.rate_limits.session),
        ] {
            if l.requests == 0 || l.window_secs == 0 {
                return Err(format!(
                    "rate_limits.{name}: requests and window_secs must be positive"
                ));
            }
        }
        let h = &self.http;
        if h.header_timeout_secs == 0
            || h.body_timeout_secs == 0
            || h.write_timeout_secs == 0
            || h.max_connections == 0
            || h.max_connections_per_ip == 0
        {
            return Err("http: every timeout and connection cap must be positive".into());
        }
        if h.max_connections_per_ip > h.max_connections {
            return Err("http.max_connections_per_ip cannot be above http.max_connections".into());
        }
        if !matches!(self.role.as_str(), "all" | "api" | "worker") {
            return Err(format!(
                "role: must be \"all\", \"api\" or \"worker\", not {:?}",
                self.role
            ));
        }
        match self.rate_limits.backend.as_str() {
            "memory" => {}
            "redis" if self.redis_url.is_none() => {
                return Err(
                    "rate_limits.backend = \"redis\" needs redis_url (or RUNBASE_REDIS_URL)".into(),
                );
            }
            "redis" => {}
            other => {
                return Err(format!(
                    "rate_limits.backend: must be \"memory\" or \"redis\", not {other:?}"
                ));
            }
        }
        if !matches!(self.rate_limits.fail.as_str(), "closed" | "open") {
            return Err(format!(
                "rate_limits.fail: must be \"closed\" or \"open\", not {:?}",
                self.rate_limits.fail
            ));
        }
        if self.webhooks.retry_base_ms == 0 || self.webhooks.timeout_secs == 0 {
            return Err(
                "webhooks.retry_base_ms and webhooks.timeout_secs: must be positive".into(),
            );
        }
        if self.uploads.max_bytes == 0 {
            return Err("uploads.max_bytes: must be positive".into());
        }
        if self.uploads.retention_days > MAX_RETENTION_DAYS {
            return Err(format!(
                "uploads.retention_days: at most {MAX_RETENTION_DAYS} (0 keeps uploads forever)"
            ));
        }
        self.accounts.signup_credit()?;
        if self.database.pool_size == 0 || self.database.pool_size > MAX_POOL_SIZE {
            return Err(format!(
                "database.pool_size: must be between 1 and {MAX_POOL_SIZE}, not {}",
                self.database.pool_size
            ));
        }
        let w = &self.worker;
        for (name, value, range) in [
            ("worker.concurrency", w.concurrency as u64, 1..=4096),
            (
                "worker.poll_interval_ms",
                w.poll_interval_ms,
                10..=3_600_000,
            ),
            ("worker.max_attempts", u64::from(w.max_attempts), 1..=1000),
            // Below half a second, a busy worker's renewal can come late and its run be
            // reclaimed (and executed again) while it still runs; above a day, a dead worker's
            // run waits longer than anyone would.
            ("worker.lease_ms", w.lease_ms, 500..=86_400_000),
            (
                "events.max_streams_per_key",
                self.events.max_streams_per_key as u64,
                1..=10_000,
            ),
            (
                "events.max_stream_secs",
                self.events.max_stream_secs,
                1..=86_400,
            ),
            ("events.recheck_secs", self.events.recheck_secs, 1..=3_600),
        ] {
            if !range.contains(&value) {
                return Err(format!(
                    "{name}: must be between {} and {}, not {value}",
                    range.start(),
                    range.end()
                ));
            }
        }
        if let Some(intake) = w.intake
            && !(w.concurrency..=MAX_INTAKE).contains(&intake)
        {
            return Err(format!(
                "worker.intake: must be between worker.concurrency ({}) and {MAX_INTAKE}, not {intake}",
                w.concurrency
            ));
        }
        self.auth.providers()?;
        if self.auth.oidc_clock_skew_secs > 600 {
            return Err("auth.oidc_clock_skew_secs: at most 600".into());
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(format!(
                "log_format: must be \"text\" or \"json\", not {:?}",
                self.log_format
            ));
        }
        if !matches!(self.durability.as_str(), "full" | "normal") {
            return Err(format!(
                "durability: must be \"full\" or \"normal\", not {:?}",
                self.durability
            ));
        }
        Ok(())
    }

    /// The PostgreSQL URL, when `database_url` names one.
    pub fn postgres_url(&self) -> Option<&str> {
        self.database_url
            .as_deref()
            .filter(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
    }

    /// The SQLite file: from `database_url` when given, else `runbase.db` in the data directory.
    pub fn sqlite_path(&self) -> Result<PathBuf, String> {
        match &self.database_url {
            None => Ok(self.data_dir.join("runbase.db")),
            Some(url) => {
                if let Some(p) = url
                    .strip_prefix("sqlite://")
                    .or_else(|| url.strip_prefix("sqlite:"))
                {
                    if p.is_empty() {
                        return Err("database_url: sqlite: needs a file path".into());
                    }
                    Ok(PathBuf::from(p))
                } else if self.postgres_url().is_some() {
                    Err(format!(
                        "database_url: {} is a PostgreSQL database; this needs SQLite (for PostgreSQL, use its own tools: pg_dump, pg_basebackup)",
                        redact_url(url)
                    ))
                } else {
                    Err(format!(
                        "database_url: unsupported scheme in {:?} (expected sqlite:PATH or postgres://...)",
                        redact_url(url)
                    ))
                }
            }
        }
    }
}

/// A database URL without its password (`postgres://user:***@host/db`), for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
