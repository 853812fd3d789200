//! The `Prefer` request header (RFC 7240), of which Runbase understands `wait=N` on
//! `POST /api/v1/runs`: answer once the run is finished, or after N seconds.
//!
//! As RFC 7240 asks, what is not understood is ignored, never refused: a `wait` whose value is
//! not a whole number of seconds from [`MIN_WAIT`] to [`MAX_WAIT`] (`wait=0`, `wait=61`,
//! `wait=soon`) is no preference at all, so the create answers at once and without
//! `Preference-Applied`. As the RFC also says, only the first `wait` counts when there are
//! several (in one header or across several).

use axum::http::HeaderMap;
use std::time::Duration;

/// The request header.
pub const PREFER: &str = "prefer";
/// The response header naming the preference that was honoured.
pub const PREFERENCE_APPLIED: &str = "preference-applied";
/// The shortest and longest wait understood, in seconds.
pub const MIN_WAIT: u64 = 1;
pub const MAX_WAIT: u64 = 60;

/// The `wait` the request prefers, if it names one Runbase understands.
pub fn wait(headers: &HeaderMap) -> Option<Duration> {
    let first = headers
        .get_all(PREFER)
        .iter()
        // A header that is not even text holds nothing we understand.
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|preference| {
            // `token [= word] *(; parameter)`: the parameters say nothing to us.
            let head = preference.split(';').next().unwrap_or_default();
            let (name, value) = head.split_once('=').unwrap_or((head, ""));
            name.trim()
                .eq_ignore_ascii_case("wait")
                .then(|| value.trim())
        })
        .next()?;
    let value = first
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(first);
    if value.is_empty() || value.len() > 3 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = value.parse().ok()?;
    (MIN_WAIT..=MAX_WAIT)
        .contains(&secs)
        .then(|| Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn wait_of(values: &[&str]) -> Option<u64> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(PREFER, HeaderValue::from_str(v).unwrap());
        }
        wait(&headers).map(|d| d.as_secs())
    }

    #[test]
    fn understood_waits() {
        assert_eq!(wait_of(&["wait=5"]), Some(5));
        assert_eq!(wait_of(&["WAIT = 1"]), Some(1));
        assert_eq!(wait_of(&["wait=60"]), Some(60));
        assert_eq!(wait_of(&["wait=\"7\""]), Some(7));
        assert_eq!(wait_of(&["respond-async, wait=10"]), Some(10));
        assert_eq!(wait_of(&["handling=lenient; x=y, wait=3; foo"]), Some(3));
        assert_eq!(wait_of(&["return=minimal", "wait=4"]), Some(4));
    }

    #[test]
    fn what_is_not_understood_is_ignored() {
        for v in [
            "",
            "wait",
            "wait=",
            "wait=0",
            "wait=61",
            "wait=3600",
            "wait=-1",
            "wait=+5",
            "wait=1.5",
            "wait=soon",
            "wait=\"\"",
            "waiting=5",
            "wait=99999999999999999999",
        ] {
            assert_eq!(wait_of(&[v]), None, "{v}");
        }
        assert_eq!(wait_of(&[]), None);
        // Only the first `wait` counts, even when a later one would be understood.
        assert_eq!(wait_of(&["wait=0, wait=5"]), None);
        assert_eq!(wait_of(&["wait=2", "wait=5"]), Some(2));
    }
}
