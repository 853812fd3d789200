//! What Runbase asks of an OpenID Connect provider: its discovery document and keys (fetched
//! on first use and cached), the code exchange, and the ID token's verification.
//!
//! Every call is bounded: a connect and a total timeout, no redirects followed, and at most
//! [`MAX_BODY`] bytes read.

use super::config::{ProviderSettings, is_loopback};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use runbase_domain::identities::VerifiedIdentity;
use runbase_domain::{ApiError, ErrorCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;
use url::Url;

/// The most read of any answer of a provider (a discovery document or key set is a few KiB).
const MAX_BODY: usize = 256 * 1024;
/// How long a discovery document or key set is used before it is fetched again.
const CACHE_FOR: Duration = Duration::from_secs(3600);
/// A key id the cached set lacks makes it fetched again, at most this often (key rotation).
const REFETCH_KEYS_AFTER: Duration = Duration::from_secs(30);
/// An ID token issued longer ago than this (plus the clock skew) is refused.
const MAX_TOKEN_AGE_SECS: i64 = 600;

/// The parts of the discovery document Runbase uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ClientAuth {
    Basic,
    Post,
}

struct Cached<T> {
    value: T,
    at: Instant,
}

/// One configured provider, with its cached discovery document and keys.
pub struct ProviderClient {
    pub settings: ProviderSettings,
    http: reqwest::Client,
    discovery: Mutex<Option<Cached<Discovery>>>,
    keys: Mutex<Option<Cached<JwkSet>>>,
}

fn provider_error(what: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %what, "OpenID Connect provider");
    ErrorCode::IdentityProviderError.into()
}

fn refused(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::SignInFailed, message)
}

/// The S256 PKCE challenge of a verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

impl ProviderClient {
    pub fn new(settings: ProviderSettings, http: reqwest::Client) -> Self {
        ProviderClient {
            settings,
            http,
            discovery: Mutex::new(None),
            keys: Mutex::new(None),
        }
    }

    /// An endpoint named by the discovery document: HTTPS, or HTTP only when the issuer itself
    /// is HTTP on a loopback address.
    fn endpoint(&self, what: &str, u: &str) -> Result<Url, ApiError> {
        let url = Url::parse(u).map_err(|e| provider_error(format!("{what} {u:?}: {e}")))?;
        let ok = url.scheme() == "https"
            || (url.scheme() == "http"
                && is_loopback(&url)
                && self.settings.issuer.starts_with("http://"));
        if ok {
            Ok(url)
        } else {
            Err(provider_error(format!("{what} {u:?} is not https://")))
        }
    }

    async fn get_json<T: DeserializeOwned>(&self, url: Url) -> Result<T, ApiError> {
        let resp = self
            .http
            .get(url.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| provider_error(format!("GET {url}: {e}")))?;
        let status = resp.status();
        let body = read_capped(resp).await?;
        if !status.is_success() {
            return Err(provider_error(format!("GET {url}: status {status}")));
        }
        serde_json::from_slice(&body).map_err(|e| provider_error(format!("GET {url}: {e}")))
    }

    /// The discovery document, fetched on first use and cached; its `issuer` must be exactly
    /// the configured one.
    pub async fn discovery(&self) -> Result<Discovery, ApiError> {
        let mut cached = self.discovery.lock().await;
        if let Some(c) = cached.as_ref()
            && c.at.elapsed() < CACHE_FOR
        {
            return Ok(c.value.clone());
        }
        let issuer = &self.settings.issuer;
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let url = self.endpoint("discovery", &url)?;
        let d: Discovery = self.get_json(url).await?;
        if d.issuer != *issuer {
            return Err(provider_error(format!(
                "the discovery document names issuer {:?}, not the configured {issuer:?}",
                d.issuer
            )));
        }
        self.endpoint("authorization_endpoint", &d.authorization_endpoint)?;
        self.endpoint("token_endpoint", &d.token_endpoint)?;
        self.endpoint("jwks_uri", &d.jwks_uri)?;
        client_auth(&d)?;
        *cached = Some(Cached {
            value: d.clone(),
            at: Instant::now(),
        });
        Ok(d)
    }

    /// The provider's signing keys; fetched again when stale, or when `kid` is missing from
    /// them (not more often than [`REFETCH_KEYS_AFTER`]).
    async fn keys(&self, d: &Discovery, kid: Option<&str>) -> Result<JwkSet, ApiError> {
        let mut cached = self.keys.lock().await;
        if let Some(c) = cached.as_ref() {
            let has_kid = kid.is_none_or(|k| c.value.find(k).is_some());
            let fresh = c.at.elapsed() < CACHE_FOR;
            if fresh && (has_kid || c.at.elapsed() < REFETCH_KEYS_AFTER) {
                return Ok(c.value.clone());
            }
        }
        let url = self.endpoint("jwks_uri", &d.jwks_uri)?;
        let set: JwkSet = self.get_json(url).await?;
        *cached = Some(Cached {
            value: set.clone(),
            at: Instant::now(),
        });
        Ok(set)
    }

    /// Exchanges the code (with the PKCE verifier) for tokens; returns the ID token.
    pub async fn exchange(
        &self,
        d: &Discovery,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<String, ApiError> {
        let s = &self.settings;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        let url = self.endpoint("token_endpoint", &d.token_endpoint)?;
        let mut req = self.http.post(url).header("accept", "application/json");
        match client_auth(d)? {
            ClientAuth::Basic => {
                // RFC 6749 2.3.1: both parts form-encoded before Base64.
                let enc = |v: &str| serde_urlencoded::to_string([("", v)]).unwrap_or_default();
                let pair = format!(
                    "{}:{}",
                    &enc(&s.client_id)[1..],
                    &enc(s.client_secret.expose())[1..]
                );
                req = req.header("authorization", format!("Basic {}", STANDARD.encode(pair)));
            }
            ClientAuth::Post => {
                form.push(("client_id", &s.client_id));
                form.push(("client_secret", s.client_secret.expose()));
            }
        }
        let body = serde_urlencoded::to_string(&form).map_err(provider_error)?;
        let resp = req
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| provider_error(format!("token endpoint: {e}")))?;
        let status = resp.status();
        let body = read_capped(resp).await?;
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status.is_client_error() {
            // invalid_grant: a code used already, expired, or not issued for this verifier.
            let error = json["error"].as_str().unwrap_or("unknown");
            tracing::info!(provider = %s.name, error, description = json["error_description"].as_str().unwrap_or(""), "the provider refused the code");
            return Err(refused(format!(
                "The identity provider refused the sign-in ({}): the code was used already or has expired. Start again.",
                error
                    .chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(64)
                    .collect::<String>()
            )));
        }
        if !status.is_success() {
            return Err(provider_error(format!("token endpoint: status {status}")));
        }
        json["id_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| provider_error("the token answer has no id_token"))
    }

    /// Verifies the ID token: the signature with the provider's key (RS256 or ES256 only),
    /// `iss`, `aud` (and `azp`), `exp` and `iat` within the clock skew, and the nonce.
    pub async fn verify(
        &self,
        d: &Discovery,
        id_token: &str,
        nonce: &str,
        skew_secs: u64,
    ) -> Result<VerifiedIdentity, ApiError> {
        let s = &self.settings;
        let bad = |why: &str| {
            tracing::info!(provider = %s.name, why, "ID token refused");
            refused(format!(
                "The identity provider's ID token was refused: {why}. Start again."
            ))
        };
        let header =
            jsonwebtoken::decode_header(id_token).map_err(|_| bad("it is not a signed JWT"))?;
        let allowed = [Algorithm::RS256, Algorithm::ES256];
        if !allowed.contains(&header.alg) {
            return Err(bad("it is not signed with RS256 or ES256"));
        }
        let keys = self.keys(d, header.kid.as_deref()).await?;
        let jwk = match header.kid.as_deref() {
            Some(kid) => keys.find(kid),
            // Without a key id, the set's only key.
            None if keys.keys.len() == 1 => keys.keys.first(),
            None => None,
        }
        .ok_or_else(|| bad("no key of the provider matches its key id"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|_| bad("the provider's key is unusable"))?;
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.leeway = skew_secs;
        v.set_issuer(&[&s.issuer]);
        v.set_audience(&[&s.client_id]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(id_token, &key, &v)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::ExpiredSignature => bad("it has expired"),
                    K::InvalidIssuer => bad("it names another issuer"),
                    K::InvalidAudience => bad("it was issued for another client"),
                    K::InvalidSignature => bad("its signature does not verify"),
                    _ => bad("it is malformed"),
                }
            })?
            .claims;
        let audiences = match &claims.aud {
            Value::String(a) => vec![a.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let azp_needed = audiences.len() > 1;
        match claims.azp.as_deref() {
            Some(azp) if azp != s.client_id => return Err(bad("it was issued for another client")),
            None if azp_needed => return Err(bad("it names several audiences and no azp")),
            _ => {}
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let skew = skew_secs as i64;
        let iat = claims.iat.ok_or_else(|| bad("it has no iat"))?;
        if iat > now + skew {
            return Err(bad("it was issued in the future"));
        }
        if iat < now - MAX_TOKEN_AGE_SECS - skew {
            return Err(bad("it was issued too long ago"));
        }
        if claims.nonce.as_deref() != Some(nonce) {
            return Err(bad("its nonce is not this sign-in's"));
        }
        if claims.sub.is_empty() || claims.sub.len() > 255 {
            return Err(bad("its subject is not valid"));
        }
        let email_verified = match claims.email_verified {
            Some(Value::Bool(b)) => b,
            // Some providers send it as a string.
            Some(Value::String(s)) => s == "true",
            _ => false,
        };
        Ok(VerifiedIdentity {
            issuer: s.issuer.clone(),
            subject: claims.sub,
            email: claims.email,
            email_verified,
        })
    }
}

/// What Runbase reads from an ID token.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    aud: Value,
    azp: Option<String>,
    iat: Option<i64>,
    nonce: Option<String>,
    email: Option<String>,
    email_verified: Option<Value>,
}

/// `client_secret_basic` when the provider supports it (or does not say: the default), else
/// `client_secret_post`.
fn client_auth(d: &Discovery) -> Result<ClientAuth, ApiError> {
    match &d.token_endpoint_auth_methods_supported {
        None => Ok(ClientAuth::Basic),
        Some(m) if m.iter().any(|m| m == "client_secret_basic") => Ok(ClientAuth::Basic),
        Some(m) if m.iter().any(|m| m == "client_secret_post") => Ok(ClientAuth::Post),
        Some(m) => Err(provider_error(format!(
            "the token endpoint supports neither client_secret_basic nor client_secret_post: {m:?}"
        ))),
    }
}

/// Reads a body up to [`MAX_BODY`] bytes.
async fn read_capped(mut resp: reqwest::Response) -> Result<Vec<u8>, ApiError> {
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(provider_error("the answer is too large"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| provider_error(format!("reading the answer: {e}")))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(provider_error("the answer is too large"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
