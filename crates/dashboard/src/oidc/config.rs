//! `[auth]` in the configuration: the OpenID Connect providers users may sign in with.

use runbase_domain::secret::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use url::Url;

/// Google's issuer, used by the `google` preset when no issuer is configured.
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";

/// `[auth]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `[auth.oidc.NAME]`: one entry per provider, shown as "Sign in with …" on the log-in and
    /// sign-up pages.
    pub oidc: BTreeMap<String, OidcProviderConfig>,
    /// Seconds of clock difference with a provider tolerated on an ID token's `exp` and `iat`.
    pub oidc_clock_skew_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            oidc: BTreeMap::new(),
            oidc_clock_skew_secs: 60,
        }
    }
}

/// `[auth.oidc.NAME]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcProviderConfig {
    /// The issuer URL; its discovery document is `{issuer}/.well-known/openid-configuration`.
    /// Optional for `google` only.
    pub issuer: Option<String>,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    /// Scopes asked for; `openid` is always added. Default `openid email`.
    pub scopes: Option<Vec<String>>,
    /// The name on the button ("Sign in with …"); default `Google` for `google`, else NAME.
    pub display_name: Option<String>,
}

/// One provider once its configuration is checked.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub name: String,
    pub display_name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
}

impl AuthConfig {
    /// The providers, checked: a name of `[a-z0-9_-]`, an issuer (HTTPS, or HTTP on a loopback
    /// address for local testing), a client id and secret.
    pub fn providers(&self) -> Result<Vec<ProviderSettings>, String> {
        self.oidc
            .iter()
            .map(|(name, p)| checked(name, p).map_err(|e| format!("auth.oidc.{name}: {e}")))
            .collect()
    }
}

fn checked(name: &str, p: &OidcProviderConfig) -> Result<ProviderSettings, String> {
    let name_ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !name_ok {
        return Err("the name must be 1 to 32 of a-z, 0-9, '_' and '-'".into());
    }
    let issuer = match (&p.issuer, name) {
        (Some(i), _) => i.clone(),
        (None, "google") => GOOGLE_ISSUER.to_owned(),
        (None, _) => return Err("issuer is required (only \"google\" has a preset)".into()),
    };
    check_issuer(&issuer)?;
    let client_id = p.client_id.trim();
    if client_id.is_empty() || client_id.len() > 512 || client_id.chars().any(char::is_control) {
        return Err("client_id is required".into());
    }
    let client_secret = match &p.client_secret {
        Some(s) if !s.expose().trim().is_empty() => s.clone(),
        _ => {
            return Err(format!(
                "client_secret is required (or RUNBASE_AUTH__OIDC__{}__CLIENT_SECRET)",
                name.to_ascii_uppercase()
            ));
        }
    };
    let mut scopes = vec!["openid".to_owned()];
    for s in p.scopes.clone().unwrap_or_else(|| vec!["email".into()]) {
        if s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            return Err(format!("scopes: {s:?} is not a scope"));
        }
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    let display_name = match (&p.display_name, name) {
        (Some(d), _) if !d.trim().is_empty() => d.trim().to_owned(),
        (_, "google") => "Google".to_owned(),
        _ => name.to_owned(),
    };
    Ok(ProviderSettings {
        name: name.to_owned(),
        display_name,
        issuer,
        client_id: client_id.to_owned(),
        client_secret,
        scopes,
    })
}

/// An issuer is an `https://` URL without query or fragment; `http://` is allowed only on a
/// loopback address (a provider on this machine, as in the tests).
pub fn check_issuer(issuer: &str) -> Result<(), String> {
    let url = Url::parse(issuer).map_err(|e| format!("issuer {issuer:?} is not a URL: {e}"))?;
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!(
            "issuer {issuer:?} must not have a query, fragment or user"
        ));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        _ => Err(format!(
            "issuer {issuer:?} must be https:// (http:// only on a loopback address)"
        )),
    }
}

pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str, p: OidcProviderConfig) -> Result<Vec<ProviderSettings>, String> {
        AuthConfig {
            oidc: BTreeMap::from([(name.to_owned(), p)]),
            ..AuthConfig::default()
        }
        .providers()
    }

    fn creds() -> OidcProviderConfig {
        OidcProviderConfig {
            client_id: "id".into(),
            client_secret: Some(Secret::new("s")),
            ..Default::default()
        }
    }

    #[test]
    fn google_preset_needs_only_the_client() {
        let p = one("google", creds()).unwrap().remove(0);
        assert_eq!(p.issuer, GOOGLE_ISSUER);
        assert_eq!(p.display_name, "Google");
        assert_eq!(p.scopes, ["openid", "email"]);
    }

    #[test]
    fn refusals() {
        assert!(
            one("acme", creds())
                .unwrap_err()
                .contains("issuer is required")
        );
        let with = |issuer: &str| OidcProviderConfig {
            issuer: Some(issuer.into()),
            ..creds()
        };
        assert!(one("acme", with("http://idp.example.com")).is_err());
        assert!(one("acme", with("https://idp.example.com?x=1")).is_err());
        assert!(one("acme", with("http://127.0.0.1:9000")).is_ok());
        assert!(one("Acme", with("https://idp.example.com")).is_err());
        let no_secret = OidcProviderConfig {
            client_secret: None,
            ..creds()
        };
        assert!(
            one("google", no_secret)
                .unwrap_err()
                .contains("RUNBASE_AUTH__OIDC__GOOGLE__CLIENT_SECRET")
        );
        let no_id = OidcProviderConfig {
            client_id: " ".into(),
            ..creds()
        };
        assert!(one("google", no_id).is_err());
    }
}
