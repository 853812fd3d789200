//! Outgoing run webhooks, after the Standard Webhooks spec (<https://www.standardwebhooks.com>):
//! what a create may subscribe to, how a delivery is signed, when a failed one is retried, and
//! the records the stores keep (a durable outbox of deliveries, each with its attempts).
//!
//! The outbox rows are written by the stores in the transaction that changes the run's status
//! (a trigger on `runs` in both stores), so a crash between the two cannot lose a delivery.

use crate::error::{ApiError, ErrorCode};
use crate::time::Timestamp;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngExt;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::Sha256;
use std::time::Duration;

/// The longest `webhook` URL a create accepts.
pub const MAX_URL_LEN: usize = 2048;

/// Bit of `webhook_events` for the run being started (claimed by a worker, first attempt).
pub const EVENT_START: i64 = 1;
/// Bit of `webhook_events` for the run reaching `succeeded`, `failed` or `canceled`.
pub const EVENT_COMPLETED: i64 = 2;
/// The events' names in a create's `webhookEvents`, as [`EVENT_START`] and [`EVENT_COMPLETED`].
pub const EVENT_NAMES: [&str; 2] = ["start", "completed"];

/// A create's subscription: where to send, and which events (a bit set of `EVENT_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub url: String,
    pub events: i64,
}

/// Reads `webhook` and `webhookEvents` from a create body. Without `webhook`, no subscription
/// (and `webhookEvents` must then be absent too). `webhookEvents` defaults to `["completed"]`,
/// as on Replicate.
pub fn parse_subscription(body: &Map<String, Value>) -> Result<Option<Subscription>, ApiError> {
    let bad = |m: String| ApiError::new(ErrorCode::InvalidInput, m);
    let url = match body.get("webhook") {
        None | Some(Value::Null) => {
            return match body.get("webhookEvents") {
                None | Some(Value::Null) => Ok(None),
                Some(_) => Err(bad(
                    "webhookEvents: needs a webhook URL (the webhook field) to subscribe".into(),
                )),
            };
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(bad(
                "webhook: must be a string (an http or https URL)".into()
            ));
        }
    };
    check_url(&url).map_err(|m| bad(format!("webhook: {m}")))?;
    let events = match body.get("webhookEvents") {
        None | Some(Value::Null) => EVENT_COMPLETED,
        Some(Value::Array(items)) => {
            let mut events = 0;
            for item in items {
                let bit = match item.as_str() {
                    Some("start") => EVENT_START,
                    Some("completed") => EVENT_COMPLETED,
                    _ => {
                        return Err(bad(format!(
                            "webhookEvents: unknown event {item}; the events are \"start\" and \"completed\""
                        )));
                    }
                };
                if events & bit != 0 {
                    return Err(bad(format!("webhookEvents: {item} is listed twice")));
                }
                events |= bit;
            }
            if events == 0 {
                return Err(bad(
                    "webhookEvents: must name at least one event (\"start\", \"completed\"); leave webhook out for none".into(),
                ));
            }
            events
        }
        Some(_) => {
            return Err(bad(
                "webhookEvents: must be an array of \"start\" and \"completed\"".into(),
            ));
        }
    };
    Ok(Some(Subscription { url, events }))
}

/// An absolute `http(s)` URL with a host, no user info, at most [`MAX_URL_LEN`] bytes, as it
/// will be sent: no whitespace or control characters (the URL parser would silently drop some,
/// so what is stored and shown would not be what is sent).
fn check_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!(
            "is {} bytes long (in UTF-8); at most {MAX_URL_LEN} are accepted",
            url.len()
        ));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters (escape them)".into());
    }
    let parsed = url::Url::parse(url).map_err(|_| "is not an absolute URL".to_owned())?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry a user name or password".into());
    }
    Ok(())
}

/// The events of a bit set, as the API names them.
pub fn event_names(events: i64) -> Vec<&'static str> {
    let mut names = Vec::new();
    if events & EVENT_START != 0 {
        names.push("start");
    }
    if events & EVENT_COMPLETED != 0 {
        names.push("completed");
    }
    names
}

// --- secrets and signatures ---------------------------------------------------------------

/// A new signing secret: `whsec_` and the base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes[..]);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The key bytes of a `whsec_` secret.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// One signature, `v1,` and the base64 HMAC-SHA256 of `id.timestamp.body` under the secret's
/// key bytes.
pub fn sign(secret: &str, id: &str, timestamp_secs: i64, body: &[u8]) -> Option<String> {
    let key = secret_key(secret)?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// An account's signing secrets: the current one and, during the overlap after a rotation, the
/// one before it (deliveries are signed with both, space-separated, as the spec allows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secrets {
    pub current: String,
    pub previous: Option<String>,
    /// Until when `previous` still signs.
    pub previous_until: Option<Timestamp>,
    pub created_at: Timestamp,
}

impl Secrets {
    /// The secrets that sign at `now`: the current one, and the previous one during its overlap.
    pub fn signing(&self, now: Timestamp) -> Vec<&str> {
        let mut all = vec![self.current.as_str()];
        if let (Some(prev), Some(until)) = (&self.previous, self.previous_until)
            && now < until
        {
            all.push(prev.as_str());
        }
        all
    }

    /// The `webhook-signature` header value.
    pub fn signature_header(&self, now: Timestamp, id: &str, ts: i64, body: &[u8]) -> String {
        self.signing(now)
            .into_iter()
            .filter_map(|s| sign(s, id, ts, body))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// How long the secret before a rotation keeps signing (beside the new one).
pub const SECRET_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// The account's secrets, made on first use.
pub async fn secrets(
    store: &dyn crate::store::Store,
    account_id: &str,
) -> Result<Secrets, crate::store::StoreError> {
    store
        .webhook_secrets(account_id, &new_secret(), Timestamp::now())
        .await
}

/// Gives the account a new secret; the one it replaces keeps signing for [`SECRET_OVERLAP`].
pub async fn rotate(
    store: &dyn crate::store::Store,
    account_id: &str,
) -> Result<Secrets, crate::store::StoreError> {
    let now = Timestamp::now();
    let until = Timestamp(now.0.saturating_add(SECRET_OVERLAP.as_micros() as i64));
    store
        .rotate_webhook_secret(account_id, &new_secret(), now, until)
        .await
}

// --- the outbox ------------------------------------------------------------------------------

/// A delivery due to be sent, as claimed by a dispatcher.
#[derive(Debug, Clone, PartialEq)]
pub struct DueDelivery {
    /// `msg_...`: the `webhook-id`, the same on every attempt.
    pub id: String,
    pub run_id: String,
    pub account_id: String,
    pub event: String,
    pub url: String,
    /// Attempts made before this one.
    pub attempts: u32,
    pub created_at: Timestamp,
}

/// What one attempt found.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    pub delivery_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub at: Timestamp,
    pub http_status: Option<u16>,
    pub latency_ms: u64,
    /// Why it failed (`None` when delivered).
    pub error: Option<String>,
    /// When to try again; `None` when delivered or given up.
    pub next_attempt_at: Option<Timestamp>,
}

impl AttemptResult {
    pub fn delivered(&self) -> bool {
        self.error.is_none()
    }
}

/// A delivery of a run and its attempts (the run's delivery log), as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// `msg_...`: the `webhook-id` header of every attempt.
    pub id: String,
    /// `start` or `completed`.
    pub event: String,
    /// `pending` (waiting for its next attempt), `delivered` or `failed` (given up).
    pub status: String,
    pub url: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub next_attempt_at: Option<Timestamp>,
    pub attempts: Vec<Attempt>,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// 1 for the first.
    pub attempt: u32,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// The receiver's status; `null` when there was no answer.
    #[schema(required = true)]
    pub http_status: Option<u16>,
    pub latency_ms: u64,
    /// Why it failed; `null` when delivered.
    #[schema(required = true)]
    pub error: Option<String>,
}

/// A new delivery id (`msg_...`), for deliveries made outside a status change (a redelivery).
pub fn new_delivery_id() -> String {
    format!("msg_{}", crate::ids::random_token(26))
}

/// Deletes the deliveries that finished (delivered or given up) and were queued more than
/// `keep` ago, with their attempts, a bounded batch at a time; returns how many. Pending ones
/// stay whatever their age (they are still being retried).
pub async fn sweep(
    store: &dyn crate::store::Store,
    keep: Duration,
) -> Result<u64, crate::store::StoreError> {
    const BATCH: u32 = 10_000;
    let keep = i64::try_from(keep.as_micros()).unwrap_or(i64::MAX);
    let before = Timestamp(Timestamp::now().0.saturating_sub(keep));
    let mut total = 0;
    loop {
        let n = store.sweep_webhook_deliveries(before, BATCH).await?;
        total += n;
        if n < u64::from(BATCH) {
            return Ok(total);
        }
    }
}

/// When retries happen.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The wait after the first failure; doubled after each further one.
    pub base: Duration,
    /// The longest wait between two attempts.
    pub max: Duration,
    /// How long after its creation a delivery is still retried; the first attempt that fails
    /// after this gives it up.
    pub window: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(5),
            max: Duration::from_secs(3600),
            window: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// After failed attempt number `attempt` (1-based) of a delivery created at `created`, made
    /// at `now`: when to try again (exponential backoff, full jitter between half and all of
    /// the wait), or `None` to give up.
    pub fn next(&self, attempt: u32, created: Timestamp, now: Timestamp) -> Option<Timestamp> {
        let window = i64::try_from(self.window.as_micros()).unwrap_or(i64::MAX);
        if now.0.saturating_sub(created.0) >= window {
            return None;
        }
        let exp = attempt.saturating_sub(1).min(30);
        let wait = self.base.saturating_mul(1u32 << exp).min(self.max);
        let micros = i64::try_from(wait.as_micros()).unwrap_or(i64::MAX).max(2);
        let jittered = rand::rng().random_range(micros / 2..=micros);
        Some(Timestamp(now.0.saturating_add(jittered)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Option<Subscription>, ApiError> {
        parse_subscription(v.as_object().unwrap())
    }

    #[test]
    fn subscriptions_are_checked() {
        assert_eq!(parse(json!({})).unwrap(), None);
        let s = parse(json!({"webhook": "https://example.com/hook"}))
            .unwrap()
            .unwrap();
        assert_eq!(s.events, EVENT_COMPLETED);
        let s =
            parse(json!({"webhook": "http://x.test/h", "webhookEvents": ["start", "completed"]}))
                .unwrap()
                .unwrap();
        assert_eq!(s.events, EVENT_START | EVENT_COMPLETED);
        for bad in [
            json!({"webhook": "ftp://example.com"}),
            json!({"webhook": "/relative"}),
            json!({"webhook": 3}),
            json!({"webhook": format!("https://example.com/{}", "a".repeat(2048))}),
            json!({"webhook": "https://example.com", "webhookEvents": ["finished"]}),
            json!({"webhook": "https://example.com", "webhookEvents": ["start", "start"]}),
            json!({"webhook": "https://example.com", "webhookEvents": []}),
            json!({"webhook": "https://example.com", "webhookEvents": "start"}),
            json!({"webhook": "https://u:p@example.com"}),
            json!({"webhook": "https://example.com/a\u{0}b"}),
            json!({"webhook": "https://example.com/a\nb"}),
            json!({"webhook": " https://example.com/"}),
            json!({"webhookEvents": ["start"]}),
        ] {
            let e = parse(bad.clone()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidInput, "{bad}");
            assert!(e.message.starts_with("webhook"), "{bad}: {}", e.message);
        }
    }

    /// The example of the Standard Webhooks reference libraries.
    #[test]
    fn signature_matches_the_spec_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn previous_secret_signs_only_during_its_overlap() {
        let s = Secrets {
            current: new_secret(),
            previous: Some(new_secret()),
            previous_until: Some(Timestamp(100)),
            created_at: Timestamp(0),
        };
        assert_eq!(s.signing(Timestamp(99)).len(), 2);
        assert_eq!(s.signing(Timestamp(100)).len(), 1);
        assert!(secret_key(&s.current).unwrap().len() == 32);
        let header = s.signature_header(Timestamp(50), "msg_1", 7, b"{}");
        assert_eq!(header.split(' ').count(), 2);
    }

    #[test]
    fn retries_back_off_and_give_up_after_the_window() {
        let p = RetryPolicy::default();
        let t0 = Timestamp(0);
        let first = p.next(1, t0, t0).unwrap();
        assert!((2_500_000..=5_000_000).contains(&first.0), "{first:?}");
        let tenth = p.next(12, t0, t0).unwrap();
        assert!(tenth.0 <= 3_600_000_000 && tenth.0 >= 1_800_000_000);
        let day = Timestamp(24 * 3600 * 1_000_000);
        assert_eq!(p.next(40, t0, day), None);
    }
}
