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
    /// Sign-in with OpenID Connect providers (`[auth.oidc.NAME]`).
    pub auth: runbase_dashboard::oidc::AuthConfig,
    /// Log filter (tracing's `EnvFilter` syntax); `RUST_LOG` wins when set.
    pub log: String,
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
    /// Runs executed at once.
    pub concurrency: usize,
    /// How often to look for queued runs when nothing signals, in milliseconds.
    pub poll_interval_ms: u64,
    /// Times a run may be started before a restart fails it (with a refund) instead of retrying.
    pub max_attempts: u32,
    /// How long a worker's claim on a run lasts without renewal, in milliseconds (renewed every
    /// third of it). After a worker dies, its runs wait this long before another takes them.
    pub lease_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            role: "all".into(),
            data_dir: PathBuf::from("./runbase-data"),
            database_url: None,
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
            auth: runbase_dashboard::oidc::AuthConfig::default(),
            http: HttpSettings::default(),
            worker: WorkerSettings {
                concurrency: 64,
                poll_interval_ms: 1000,
                max_attempts: 3,
                lease_ms: 30_000,
            },
            providers: ProvidersConfig::default(),
            storage: StorageConfig::default(),
            log: "info".into(),
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
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "role",
    "data_dir",
    "database_url",
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
    "auth",
    "log",
];

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
                if top != "config" && !TOP_LEVEL_KEYS.contains(&top.as_str()) {
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
        self.auth.providers()?;
        if self.auth.oidc_clock_skew_secs > 600 {
            return Err("auth.oidc_clock_skew_secs: at most 600".into());
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
                } else {
                    Err(format!(
                        "database_url: unsupported scheme in {url:?} (expected sqlite:PATH or postgres://...)"
                    ))
                }
            }
        }
    }
}
