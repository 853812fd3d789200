//! Provider adapters: where a run meets a model. The worker calls [`Providers::execute`]; the
//! driver (`driver.rs`) picks the model's route, calls the adapter (`submit`, `poll`,
//! `cancel`), retries, falls back, times out, and copies the output files.
//!
//! Adapters, by the `provider` name the catalogue uses:
//! - `builtin`: models inside Runbase (`echo`, `placeholder-image`);
//! - `cog`: any Cog model server (route option `url`);
//! - `replicate`, `fal`, `openai`, `gemini`, `modelark` (BytePlus ModelArk), `kling`, `minimax`:
//!   the upstream APIs, offered only with credentials;
//! - any name under `providers.openai_compatible`: an OpenAI-compatible server (vLLM, Ollama...);
//! - `simulator`: test mode, used for every run of a test key.

#![cfg_attr(test, allow(clippy::unwrap_used, reason = "tests may unwrap"))]

mod builtin;
mod cog;
mod driver;
mod fal;
mod gemini;
pub mod http;
mod inputs;
mod kling;
mod minimax;
mod modelark;
mod mp4;
pub mod native;
mod openai;
mod output;
mod placeholder;
mod replicate;
mod simulator;

pub use driver::{Execution, ReadyFile, ReadyOutput, RetryPolicy};
pub use inputs::InputFiles;

use runbase_domain::catalog::Route;
use runbase_domain::files::FileStore;
use runbase_domain::provider::Provider;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

pub use runbase_domain::secret::Secret;

/// Credentials and address of one upstream API.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// Where the API is; the provider's public address when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
}

/// Kling's credentials (an access key and a secret key, which sign each request's token) and
/// address.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KlingSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<Secret>,
    /// Where the API is; Kling's global address when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
}

/// Retries of transient upstream errors.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySettings {
    pub max_retries: u32,
    pub base_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        let d = RetryPolicy::default();
        Self {
            max_retries: d.max_retries,
            base_backoff_ms: d.base_backoff.as_millis() as u64,
            max_backoff_ms: d.max_backoff.as_millis() as u64,
        }
    }
}

/// The `[providers]` section of the configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvidersConfig {
    /// Replicate; the token may also come from `REPLICATE_API_TOKEN`.
    pub replicate: ApiSettings,
    /// fal; the key may also come from `FAL_KEY`.
    pub fal: ApiSettings,
    /// OpenAI; the key may also come from `OPENAI_API_KEY`.
    pub openai: ApiSettings,
    /// Google's Gemini API; the key may also come from `GEMINI_API_KEY` or `GOOGLE_API_KEY`.
    pub gemini: ApiSettings,
    /// BytePlus ModelArk (ByteDance's Seedream and Seedance); the key may also come from
    /// `ARK_API_KEY`. `base_url` includes the API version (`.../api/v3`).
    pub modelark: ApiSettings,
    /// Kling's own API; the keys may also come from `KLING_ACCESS_KEY` and `KLING_SECRET_KEY`.
    pub kling: KlingSettings,
    /// MiniMax's API (the Hailuo video models); the key may also come from `MINIMAX_API_KEY`.
    pub minimax: ApiSettings,
    /// OpenAI-compatible servers by the provider name the catalogue uses for them; each needs
    /// a `base_url` (e.g. `http://127.0.0.1:11434/v1` for Ollama), the key is optional.
    pub openai_compatible: BTreeMap<String, ApiSettings>,
    pub retry: RetrySettings,
    /// Pause between polls of a started upstream job, in milliseconds.
    pub poll_interval_ms: u64,
}

impl Default for ProvidersConfig {
    fn default() -> Self {
        Self {
            replicate: ApiSettings::default(),
            fal: ApiSettings::default(),
            openai: ApiSettings::default(),
            gemini: ApiSettings::default(),
            modelark: ApiSettings::default(),
            kling: KlingSettings::default(),
            minimax: ApiSettings::default(),
            openai_compatible: BTreeMap::new(),
            retry: RetrySettings::default(),
            poll_interval_ms: 1000,
        }
    }
}

/// Provider names with an adapter of their own.
const RESERVED: &[&str] = &[
    "builtin",
    "cog",
    "replicate",
    "fal",
    "openai",
    "gemini",
    "modelark",
    "kling",
    "minimax",
    "simulator",
];

/// The configured adapters, by the provider name the catalogue uses.
#[derive(Clone)]
pub struct Providers {
    /// Shared, not copied, by each clone (a worker's tasks hold one each).
    by_name: Arc<HashMap<String, Arc<dyn Provider>>>,
    simulator: Arc<dyn Provider>,
    client: reqwest::Client,
    retry: RetryPolicy,
    /// Where adapters that send input files themselves read them.
    inputs: InputFiles,
}

impl Providers {
    /// Builds the adapters the configuration (or `env`, for the usual credential variables)
    /// has credentials for. Returns the registry, or what is wrong with the configuration.
    pub fn from_config(
        config: &ProvidersConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let client = http::client();
        let inputs = InputFiles::default();
        let poll = Duration::from_millis(config.poll_interval_ms.max(10));
        let secret = |configured: &Option<Secret>, vars: &[&str]| {
            configured
                .clone()
                .filter(|k| !k.expose().trim().is_empty())
                .or_else(|| {
                    vars.iter()
                        .find_map(|v| env(v))
                        .filter(|k| !k.trim().is_empty())
                        .map(Secret::new)
                })
        };
        let key = |s: &ApiSettings, vars: &[&str]| secret(&s.api_key, vars);
        let url_or = |configured: &Option<String>, default: &str| -> Result<String, String> {
            let url = configured.clone().unwrap_or_else(|| default.to_owned());
            check_url(&url)?;
            Ok(url.trim_end_matches('/').to_owned())
        };
        let base = |s: &ApiSettings, default: &str| url_or(&s.base_url, default);
        let mut by_name: HashMap<String, Arc<dyn Provider>> = HashMap::new();
        by_name.insert("builtin".into(), Arc::new(builtin::Builtin));
        by_name.insert("cog".into(), Arc::new(cog::Cog::new(client.clone())));
        if let Some(token) = key(&config.replicate, &["REPLICATE_API_TOKEN"]) {
            by_name.insert(
                "replicate".into(),
                Arc::new(replicate::Replicate {
                    base_url: base(&config.replicate, "https://api.replicate.com")?,
                    api_token: token,
                    client: client.clone(),
                    poll_interval: poll,
                }),
            );
        }
        if let Some(k) = key(&config.fal, &["FAL_KEY"]) {
            by_name.insert(
                "fal".into(),
                Arc::new(fal::Fal {
                    base_url: base(&config.fal, "https://queue.fal.run")?,
                    api_key: k,
                    client: client.clone(),
                    poll_interval: poll,
                }),
            );
        }
        if let Some(k) = key(&config.openai, &["OPENAI_API_KEY"]) {
            by_name.insert(
                "openai".into(),
                Arc::new(openai::OpenAi {
                    name: "OpenAI".into(),
                    official: true,
                    base_url: base(&config.openai, "https://api.openai.com/v1")?,
                    api_key: Some(k),
                    client: client.clone(),
                    inputs: inputs.clone(),
                }),
            );
        }
        if let Some(k) = key(&config.gemini, &["GEMINI_API_KEY", "GOOGLE_API_KEY"]) {
            by_name.insert(
                "gemini".into(),
                Arc::new(gemini::Gemini {
                    base_url: base(
                        &config.gemini,
                        "https://generativelanguage.googleapis.com/v1beta",
                    )?,
                    api_key: k,
                    client: client.clone(),
                    inputs: inputs.clone(),
                }),
            );
        }
        if let Some(k) = key(&config.modelark, &["ARK_API_KEY"]) {
            by_name.insert(
                "modelark".into(),
                Arc::new(modelark::ModelArk {
                    base_url: base(
                        &config.modelark,
                        "https://ark.ap-southeast.bytepluses.com/api/v3",
                    )?,
                    api_key: k,
                    client: client.clone(),
                    poll_interval: poll,
                }),
            );
        }
        let kling_keys = (
            secret(&config.kling.access_key, &["KLING_ACCESS_KEY"]),
            secret(&config.kling.secret_key, &["KLING_SECRET_KEY"]),
        );
        match kling_keys {
            (Some(access_key), Some(secret_key)) => {
                by_name.insert(
                    "kling".into(),
                    Arc::new(kling::Kling {
                        base_url: url_or(
                            &config.kling.base_url,
                            "https://api-singapore.klingai.com",
                        )?,
                        access_key,
                        secret_key,
                        client: client.clone(),
                        poll_interval: poll,
                    }),
                );
            }
            (None, None) => {}
            _ => {
                return Err(
                    "providers.kling: both access_key and secret_key are needed (or KLING_ACCESS_KEY and KLING_SECRET_KEY)"
                        .into(),
                );
            }
        }
        if let Some(k) = key(&config.minimax, &["MINIMAX_API_KEY"]) {
            by_name.insert(
                "minimax".into(),
                Arc::new(minimax::MiniMax {
                    base_url: base(&config.minimax, "https://api.minimax.io")?,
                    api_key: k,
                    client: client.clone(),
                    poll_interval: poll,
                }),
            );
        }
        for (name, s) in &config.openai_compatible {
            if RESERVED.contains(&name.as_str()) {
                return Err(format!(
                    "providers.openai_compatible.{name}: \"{name}\" is the name of a built-in adapter; choose another"
                ));
            }
            let Some(url) = &s.base_url else {
                return Err(format!(
                    "providers.openai_compatible.{name}: base_url is required"
                ));
            };
            check_url(url).map_err(|e| format!("providers.openai_compatible.{name}: {e}"))?;
            by_name.insert(
                name.clone(),
                Arc::new(openai::OpenAi {
                    name: name.clone(),
                    official: false,
                    base_url: url.trim_end_matches('/').to_owned(),
                    api_key: s.api_key.clone(),
                    client: client.clone(),
                    inputs: inputs.clone(),
                }),
            );
        }
        Ok(Self {
            by_name: Arc::new(by_name),
            simulator: Arc::new(simulator::Simulator),
            client,
            retry: RetryPolicy {
                max_retries: config.retry.max_retries,
                base_backoff: Duration::from_millis(config.retry.base_backoff_ms),
                max_backoff: Duration::from_millis(config.retry.max_backoff_ms.max(1)),
                ..RetryPolicy::default()
            },
            inputs,
        })
    }

    /// Lets the adapters read this server's own file URLs (uploads, earlier outputs) named in
    /// a run's input from `files` instead of fetching them over HTTP. Set once, at start-up.
    pub fn read_own_files_from(&self, public_url: &str, files: Arc<dyn FileStore>) {
        self.inputs.attach(public_url, files);
    }

    fn adapter(&self, provider: &str) -> Option<Arc<dyn Provider>> {
        self.by_name.get(provider).cloned()
    }

    /// Whether a route can be used here: its adapter is configured (and, for `builtin`, knows
    /// the model; for `cog`, the route names the server).
    pub fn can_route(&self, route: &Route) -> bool {
        match route.provider.as_str() {
            "builtin" => builtin::knows(&route.upstream),
            "cog" => route.option("url").is_some_and(|u| check_url(u).is_ok()),
            "simulator" => false,
            other => self.by_name.contains_key(other),
        }
    }

    /// Why a route cannot be used, when the reason is a mistake rather than missing
    /// credentials: a provider name nobody knows (a typo?), or a Cog route without a `url`.
    pub fn route_problem(&self, route: &Route) -> Option<String> {
        match route.provider.as_str() {
            "cog" if route.option("url").is_none_or(|u| check_url(u).is_err()) => {
                Some("a cog route needs options.url = \"http://host:port\"".into())
            }
            "builtin" if !builtin::knows(&route.upstream) => Some(format!(
                "the builtin provider has no model {:?}",
                route.upstream
            )),
            p if !RESERVED.contains(&p) && !self.by_name.contains_key(p) => Some(format!(
                "no provider is named {p:?} (built-in adapters: {}; or add [providers.openai_compatible.{p}])",
                RESERVED.join(", ")
            )),
            _ => None,
        }
    }

    /// The configured provider names, sorted (for the start-up log).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_name.keys().cloned().collect();
        names.sort();
        names
    }
}

fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(format!("{url:?} is not an http:// or https:// URL"))
    }
}
