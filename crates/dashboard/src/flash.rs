//! A new key's secret between the form post that creates it and the page that shows it.
//!
//! Creating a key answers with a redirect (so a reload does not create another), and the page
//! it leads to shows the secret once: the secret waits here, in memory, under the session that
//! created it, and is taken out by the first page that shows it. Nothing is written to disk or
//! to a cookie; a restart in between loses it (the key is then listed without its secret, and
//! the user makes another).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// How long an unshown secret waits.
const TTL: Duration = Duration::from_secs(300);

struct Waiting {
    key_id: String,
    secret: String,
    at: Instant,
}

/// Secrets waiting to be shown, by the session's token hash (one per session: the latest).
static WAITING: LazyLock<Mutex<HashMap<String, Waiting>>> = LazyLock::new(Default::default);

fn waiting() -> std::sync::MutexGuard<'static, HashMap<String, Waiting>> {
    WAITING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keeps `secret` of key `key_id` for the next page of `session`.
pub fn put(session: &str, key_id: &str, secret: &str) {
    let mut w = waiting();
    w.retain(|_, v| v.at.elapsed() < TTL);
    w.insert(
        session.to_owned(),
        Waiting {
            key_id: key_id.to_owned(),
            secret: secret.to_owned(),
            at: Instant::now(),
        },
    );
}

/// The secret of key `key_id` if `session` created it and it has not been shown yet; it is
/// gone afterwards.
pub fn take(session: &str, key_id: &str) -> Option<String> {
    let mut w = waiting();
    match w.get(session) {
        Some(v) if v.key_id == key_id && v.at.elapsed() < TTL => {
            w.remove(session).map(|v| v.secret)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_shown_once_and_only_to_its_session() {
        put("s1", "key_a", "sk-secret");
        assert_eq!(take("s2", "key_a"), None);
        assert_eq!(take("s1", "key_b"), None);
        assert_eq!(take("s1", "key_a").as_deref(), Some("sk-secret"));
        assert_eq!(take("s1", "key_a"), None);
    }
}
