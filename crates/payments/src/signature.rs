//! Stripe's webhook signature scheme: the `Stripe-Signature` header is
//! `t=<unix seconds>,v1=<hex>[,v1=<hex>...][,v0=<hex>]`, and each `v1` is
//! `hex(HMAC-SHA256(webhook secret, "<t>.<raw body>"))`. Several `v1` entries appear while a
//! secret is being rolled; any one matching is enough. `v0` is a legacy test-mode scheme and is
//! ignored, as are schemes Stripe may add later.

use hmac::{Hmac, KeyInit, Mac};
use runbase_domain::payments::PaymentError;
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The HMAC-SHA256 of `"{timestamp}.{body}"` under `secret`.
fn mac(secret: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length, so this cannot fail; the fallback keeps the code free of
    // panics all the same.
    let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(secret.as_bytes()) else {
        return [0; 32];
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// A complete `Stripe-Signature` header value (`t=<timestamp>,v1=<hex>`) for `body`, signed the
/// way Stripe signs webhook deliveries.
///
/// For tests (of this and other crates) and for the CLI, which use it to send a webhook that
/// the server accepts without Stripe in the loop. The server never needs it.
pub fn sign_payload(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac(secret, timestamp, body))
    )
}

/// Checks `header` against `body` and returns the signed timestamp. The signature is checked
/// first, then the timestamp, as Stripe's own libraries do: an unsigned request learns nothing
/// about the clock.
/// What the header alone says, before the body is read: it is there, has exactly one numeric
/// timestamp within `tolerance_secs` of `now_unix`, and at least one `v1` entry. Answers the
/// timestamp. Checking freshness before the signature tells an unsigned request whether its `t=`
/// is near the server's clock, which the `Date` of every answer tells anyway; in exchange a
/// forged header with a stale or missing timestamp costs no body.
pub(crate) fn precheck(
    header: Option<&str>,
    now_unix: i64,
    tolerance_secs: u64,
) -> Result<i64, PaymentError> {
    let (timestamp, candidates) = parse(header)?;
    if candidates.is_empty() {
        return Err(PaymentError::BadSignature("no v1 signature".into()));
    }
    if now_unix.abs_diff(timestamp) > tolerance_secs {
        return Err(PaymentError::Stale { tolerance_secs });
    }
    Ok(timestamp)
}

/// The header's timestamp and its `v1` signatures (hex-decoded; entries that are not hex are
/// skipped, so a later entry still counts).
fn parse(header: Option<&str>) -> Result<(i64, Vec<Vec<u8>>), PaymentError> {
    let bad = |why: &str| PaymentError::BadSignature(why.to_owned());
    let header = header
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("no Stripe-Signature header"))?;
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for item in header.split(',') {
        let Some((scheme, value)) = item.trim().split_once('=') else {
            continue;
        };
        match scheme {
            "t" => {
                if timestamp.is_some() {
                    return Err(bad("more than one timestamp"));
                }
                let t = value
                    .parse::<i64>()
                    .map_err(|_| bad("timestamp is not a number"))?;
                timestamp = Some(t);
            }
            "v1" => candidates.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or_else(|| bad("no timestamp"))?;
    Ok((timestamp, candidates))
}

pub(crate) fn verify(
    secret: &str,
    header: Option<&str>,
    body: &[u8],
    now_unix: i64,
    tolerance_secs: u64,
) -> Result<i64, PaymentError> {
    let (timestamp, candidates) = parse(header)?;
    if candidates.is_empty() {
        return Err(PaymentError::BadSignature("no v1 signature".into()));
    }

    let expected = mac(secret, timestamp, body);
    // Every candidate is compared, without stopping at the first match, so the time taken does
    // not say which entry matched.
    let matched = candidates.iter().fold(subtle::Choice::from(0), |acc, c| {
        acc | expected.as_slice().ct_eq(c.as_slice())
    });
    if !bool::from(matched) {
        return Err(PaymentError::BadSignature("no v1 signature matches".into()));
    }

    if now_unix.abs_diff(timestamp) > tolerance_secs {
        return Err(PaymentError::Stale { tolerance_secs });
    }
    Ok(timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const T: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1","type":"ping"}"#;

    fn check(header: Option<&str>, body: &[u8], now: i64) -> Result<i64, PaymentError> {
        verify(SECRET, header, body, now, 300)
    }

    #[test]
    fn the_header_alone_refuses_missing_malformed_and_stale_timestamps() {
        let fresh = format!("t={T},v1=00");
        assert_eq!(precheck(Some(&fresh), T + 300, 300).unwrap(), T);
        assert_eq!(precheck(Some(&fresh), T - 300, 300).unwrap(), T);
        assert!(matches!(
            precheck(Some(&fresh), T + 301, 300),
            Err(PaymentError::Stale { .. })
        ));
        for bad in [
            None,
            Some(""),
            Some("v1=00"),
            Some("t=soon,v1=00"),
            Some("t=1,t=1,v1=00"),
        ] {
            assert!(
                matches!(precheck(bad, T, 300), Err(PaymentError::BadSignature(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            precheck(Some(&format!("t={T}")), T, 300),
            Err(PaymentError::BadSignature(_))
        ));
    }

    /// The MAC computed here without the crate's helper, straight from Stripe's documentation.
    fn by_hand(secret: &str, t: i64, body: &[u8]) -> String {
        let mut m = HmacSha256::new_from_slice(secret.as_bytes()).unwrap();
        let mut signed = format!("{t}.").into_bytes();
        signed.extend_from_slice(body);
        m.update(&signed);
        hex::encode(m.finalize().into_bytes())
    }

    #[test]
    fn sign_payload_round_trips() {
        let header = sign_payload(SECRET, T, BODY);
        assert_eq!(check(Some(&header), BODY, T).unwrap(), T);
    }

    #[test]
    fn independent_signature_verifies() {
        let header = format!("t={T},v1={}", by_hand(SECRET, T, BODY));
        assert_eq!(header, sign_payload(SECRET, T, BODY));
        assert_eq!(check(Some(&header), BODY, T + 10).unwrap(), T);
    }

    /// A fixed vector, computed once (and cross-checked with Python's `hmac` module), so a change
    /// in the signed-payload format or the encoding is caught even if both sides change.
    #[test]
    fn pinned_vector() {
        let body = br#"{"id":"evt_test","object":"event"}"#;
        let expected =
            "t=1700000000,v1=8efcfb81b4d1cbe1f6131b4736407542b6ae3fe2a0f8c5e136ecfc0787a126f6";
        assert_eq!(sign_payload("whsec_pinned", 1_700_000_000, body), expected);
        assert!(verify("whsec_pinned", Some(expected), body, 1_700_000_000, 300).is_ok());
    }

    #[test]
    fn wrong_secret_is_refused() {
        let header = sign_payload("whsec_other", T, BODY);
        assert!(matches!(
            check(Some(&header), BODY, T),
            Err(PaymentError::BadSignature(_))
        ));
    }

    #[test]
    fn tampered_body_is_refused() {
        let header = sign_payload(SECRET, T, BODY);
        let tampered = br#"{"id":"evt_2","type":"ping"}"#;
        assert!(matches!(
            check(Some(&header), tampered, T),
            Err(PaymentError::BadSignature(_))
        ));
    }

    #[test]
    fn tampered_timestamp_is_refused() {
        let header = sign_payload(SECRET, T, BODY).replace(&T.to_string(), &(T + 1).to_string());
        assert!(matches!(
            check(Some(&header), BODY, T),
            Err(PaymentError::BadSignature(_))
        ));
    }

    #[test]
    fn missing_or_malformed_headers_are_refused() {
        let sig = by_hand(SECRET, T, BODY);
        let cases = [
            None,
            Some(String::new()),
            Some(format!("t={T}")),
            Some(format!("t={T},v0={sig}")),
            Some(format!("v1={sig}")),
            Some(format!("t=soon,v1={sig}")),
            Some(format!("t={T},t={T},v1={sig}")),
            Some(format!("t={T},v1=not-hex")),
            Some("garbage".to_owned()),
        ];
        for header in cases {
            let got = check(header.as_deref(), BODY, T);
            assert!(
                matches!(got, Err(PaymentError::BadSignature(_))),
                "{header:?}: {got:?}"
            );
        }
    }

    #[test]
    fn any_v1_may_match_and_other_schemes_are_ignored() {
        let good = by_hand(SECRET, T, BODY);
        let stale = by_hand("whsec_old", T, BODY);
        let header = format!("t={T},v1={stale},v1={good},v0={stale},v9=zzz");
        assert_eq!(check(Some(&header), BODY, T).unwrap(), T);
        // Whitespace after commas, as some proxies reformat headers.
        let header = format!("t={T}, v1={stale}, v1={good}");
        assert_eq!(check(Some(&header), BODY, T).unwrap(), T);
    }

    #[test]
    fn stale_timestamps_are_refused_after_the_signature_check() {
        let header = sign_payload(SECRET, T, BODY);
        assert!(check(Some(&header), BODY, T + 300).is_ok());
        assert!(check(Some(&header), BODY, T - 300).is_ok());
        for now in [T + 301, T - 301, T + 86_400] {
            assert!(
                matches!(
                    check(Some(&header), BODY, now),
                    Err(PaymentError::Stale {
                        tolerance_secs: 300
                    })
                ),
                "now = {now}"
            );
        }
        // A bad signature with a stale timestamp is reported as a bad signature.
        let forged = sign_payload("whsec_other", T, BODY);
        assert!(matches!(
            check(Some(&forged), BODY, T + 86_400),
            Err(PaymentError::BadSignature(_))
        ));
    }
}
