//! The `[payments.stripe]` settings and the checks that turn them into a working provider.

use runbase_domain::secret::Secret;
use serde::{Deserialize, Serialize};

/// Where Stripe's API lives unless the configuration says otherwise.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

/// The environment variable read for the API secret key when the file does not set one.
pub const ENV_SECRET_KEY: &str = "STRIPE_SECRET_KEY";

/// The environment variable read for the webhook signing secret when the file does not set one.
pub const ENV_WEBHOOK_SECRET: &str = "STRIPE_WEBHOOK_SECRET";

/// Stripe Checkout settings. Every field has a default, so an empty section (or none) is valid
/// and means "payments off unless the environment provides the credentials".
///
/// `Debug` is derived, which is safe because both credentials are [`Secret`]s.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StripeConfig {
    /// The API secret key (`sk_...` or a restricted `rk_...`); falls back to `STRIPE_SECRET_KEY`.
    pub secret_key: Option<Secret>,
    /// The webhook endpoint's signing secret (`whsec_...`); falls back to
    /// `STRIPE_WEBHOOK_SECRET`.
    pub webhook_secret: Option<Secret>,
    /// Base URL of the API, without a trailing `/v1`; tests point it at a local double.
    pub api_base: Option<String>,
    /// Lower-case ISO 4217 code that checkouts are made in.
    pub currency: String,
    /// How far a webhook's signed timestamp may be from now, in seconds, before it is refused
    /// as a replay.
    pub tolerance_secs: u64,
    /// The line-item name the customer sees on Stripe's hosted page.
    pub product_name: String,
}

impl Default for StripeConfig {
    fn default() -> Self {
        Self {
            secret_key: None,
            webhook_secret: None,
            api_base: None,
            currency: "usd".to_owned(),
            tolerance_secs: 300,
            product_name: "Runbase credits".to_owned(),
        }
    }
}

/// Settings that passed every check, ready for [`crate::Stripe`] to use.
pub(crate) struct Validated {
    pub secret_key: Secret,
    pub webhook_secret: Secret,
    /// Without a trailing slash.
    pub api_base: String,
    pub currency: String,
    pub tolerance_secs: u64,
    pub product_name: String,
}

/// Checks `cfg`, filling missing credentials from `env`. `Ok(None)` means payments are off:
/// neither credential is set anywhere.
pub(crate) fn validate(
    cfg: &StripeConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Validated>, String> {
    // Static fields are checked even when payments are off, so a typo shows up on the first
    // start and not on the day someone adds the keys.
    let api_base = cfg
        .api_base
        .as_deref()
        .unwrap_or(DEFAULT_API_BASE)
        .trim_end_matches('/')
        .to_owned();
    check_api_base(&api_base)?;
    if !(cfg.currency.len() == 3 && cfg.currency.bytes().all(|b| b.is_ascii_lowercase())) {
        return Err(format!(
            "payments.stripe.currency must be a lower-case three-letter ISO code such as \"usd\", \
             got {:?}",
            cfg.currency
        ));
    }
    if cfg.product_name.trim().is_empty() {
        return Err("payments.stripe.product_name must not be empty".to_owned());
    }

    let secret_key = credential(cfg.secret_key.as_ref(), ENV_SECRET_KEY, &env);
    let webhook_secret = credential(cfg.webhook_secret.as_ref(), ENV_WEBHOOK_SECRET, &env);
    let (secret_key, webhook_secret) = match (secret_key, webhook_secret) {
        (None, None) => return Ok(None),
        (Some(key), Some(whsec)) => (key, whsec),
        (Some(_), None) => {
            return Err(format!(
                "Stripe: a secret key is set but no webhook secret; set payments.stripe.\
                 webhook_secret or {ENV_WEBHOOK_SECRET} (without it no payment can be confirmed)"
            ));
        }
        (None, Some(_)) => {
            return Err(format!(
                "Stripe: a webhook secret is set but no secret key; set payments.stripe.\
                 secret_key or {ENV_SECRET_KEY}, or remove the webhook secret to turn payments off"
            ));
        }
    };
    // Unusual prefixes are allowed (test doubles, future key formats) but worth a word.
    if !["sk_", "rk_"]
        .iter()
        .any(|p| secret_key.expose().starts_with(p))
    {
        tracing::warn!("the Stripe secret key does not start with sk_ or rk_");
    }
    if !webhook_secret.expose().starts_with("whsec_") {
        tracing::warn!("the Stripe webhook secret does not start with whsec_");
    }

    Ok(Some(Validated {
        secret_key,
        webhook_secret,
        api_base,
        currency: cfg.currency.clone(),
        tolerance_secs: cfg.tolerance_secs,
        product_name: cfg.product_name.clone(),
    }))
}

/// The configured value, else the environment's; an empty or blank value counts as unset, since
/// `STRIPE_SECRET_KEY=` in a unit file usually means "not set".
fn credential(
    configured: Option<&Secret>,
    var: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Option<Secret> {
    configured
        .map(|s| s.expose().trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            env(var)
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .map(Secret::new)
}

fn check_api_base(api_base: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(api_base)
        .map_err(|e| format!("payments.stripe.api_base {api_base:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "payments.stripe.api_base must be an http(s) URL, got {api_base:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn keyed() -> StripeConfig {
        StripeConfig {
            secret_key: Some(Secret::new("sk_test_abc")),
            webhook_secret: Some(Secret::new("whsec_abc")),
            ..StripeConfig::default()
        }
    }

    #[test]
    fn no_credentials_means_payments_off() {
        assert!(
            validate(&StripeConfig::default(), no_env)
                .unwrap()
                .is_none()
        );
        let blank = env_of(&[(ENV_SECRET_KEY, ""), (ENV_WEBHOOK_SECRET, " ")]);
        assert!(validate(&StripeConfig::default(), blank).unwrap().is_none());
    }

    #[test]
    fn credentials_from_config_with_defaults() {
        let v = validate(&keyed(), no_env).unwrap().unwrap();
        assert_eq!(v.secret_key.expose(), "sk_test_abc");
        assert_eq!(v.webhook_secret.expose(), "whsec_abc");
        assert_eq!(v.api_base, DEFAULT_API_BASE);
        assert_eq!(v.currency, "usd");
        assert_eq!(v.tolerance_secs, 300);
        assert_eq!(v.product_name, "Runbase credits");
    }

    #[test]
    fn credentials_from_env_and_config_wins() {
        let env = env_of(&[
            (ENV_SECRET_KEY, "sk_env"),
            (ENV_WEBHOOK_SECRET, "whsec_env"),
        ]);
        let v = validate(&StripeConfig::default(), &env).unwrap().unwrap();
        assert_eq!(v.secret_key.expose(), "sk_env");
        assert_eq!(v.webhook_secret.expose(), "whsec_env");
        let v = validate(&keyed(), &env).unwrap().unwrap();
        assert_eq!(v.secret_key.expose(), "sk_test_abc");
        // One from the file, the other from the environment.
        let cfg = StripeConfig {
            secret_key: Some(Secret::new("sk_file")),
            ..StripeConfig::default()
        };
        let v = validate(&cfg, &env).unwrap().unwrap();
        assert_eq!(v.secret_key.expose(), "sk_file");
        assert_eq!(v.webhook_secret.expose(), "whsec_env");
    }

    #[test]
    fn only_one_credential_is_an_error() {
        let err = validate(
            &StripeConfig::default(),
            env_of(&[(ENV_SECRET_KEY, "sk_x")]),
        )
        .err()
        .unwrap();
        assert!(err.contains(ENV_WEBHOOK_SECRET), "{err}");
        assert!(!err.contains("sk_x"), "{err}");
        let cfg = StripeConfig {
            webhook_secret: Some(Secret::new("whsec_x")),
            ..StripeConfig::default()
        };
        let err = validate(&cfg, no_env).err().unwrap();
        assert!(err.contains(ENV_SECRET_KEY), "{err}");
    }

    #[test]
    fn api_base_must_be_http() {
        for bad in [
            "ftp://example.com",
            "not a url",
            "file:///tmp/x",
            "api.stripe.com",
        ] {
            let cfg = StripeConfig {
                api_base: Some(bad.to_owned()),
                ..keyed()
            };
            let err = validate(&cfg, no_env).err().unwrap();
            assert!(err.contains("api_base"), "{bad}: {err}");
        }
        let cfg = StripeConfig {
            api_base: Some("http://127.0.0.1:4242/".to_owned()),
            ..keyed()
        };
        let v = validate(&cfg, no_env).unwrap().unwrap();
        assert_eq!(v.api_base, "http://127.0.0.1:4242");
    }

    #[test]
    fn currency_must_be_three_lower_case_letters() {
        for bad in ["USD", "us", "usdd", "u1d", "", "ü$d"] {
            let cfg = StripeConfig {
                currency: bad.to_owned(),
                ..keyed()
            };
            let err = validate(&cfg, no_env).err().unwrap();
            assert!(err.contains("currency"), "{bad:?}: {err}");
        }
        let cfg = StripeConfig {
            currency: "eur".to_owned(),
            ..keyed()
        };
        assert_eq!(validate(&cfg, no_env).unwrap().unwrap().currency, "eur");
    }

    #[test]
    fn static_fields_are_checked_even_when_off() {
        let cfg = StripeConfig {
            currency: "USD".to_owned(),
            ..StripeConfig::default()
        };
        assert!(validate(&cfg, no_env).is_err());
    }

    #[test]
    fn serde_defaults_unknown_keys_and_redacted_debug() {
        let cfg: StripeConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg, StripeConfig::default());
        let cfg: StripeConfig =
            serde_json::from_str(r#"{"secret_key":"sk_live_topsecret","currency":"eur"}"#).unwrap();
        assert_eq!(cfg.currency, "eur");
        assert!(!format!("{cfg:?}").contains("topsecret"));
        assert!(serde_json::from_str::<StripeConfig>(r#"{"secret":"x"}"#).is_err());
    }
}
