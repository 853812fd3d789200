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
/// The most unshown secrets one session holds (two tabs, a double submit); past it the oldest
/// is dropped.
const PER_SESSION: usize = 8;

struct Waiting {
    key_id: String,
    secret: String,
    at: Instant,
}

/// Secrets waiting to be shown, by the session's token hash: one per key, oldest first.
static WAITING: LazyLock<Mutex<HashMap<String, Vec<Waiting>>>> = LazyLock::new(Default::default);

fn waiting() -> std::sync::MutexGuard<'static, HashMap<String, Vec<Waiting>>> {
    WAITING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keeps `secret` of key `key_id` for a later page of `session`, beside the other keys it
/// created and has not shown yet.
pub fn put(session: &str, key_id: &str, secret: &str) {
    let mut w = waiting();
    w.retain(|_, list| {
        list.retain(|v| v.at.elapsed() < TTL);
        !list.is_empty()
    });
    let list = w.entry(session.to_owned()).or_default();
    list.retain(|v| v.key_id != key_id);
    if list.len() >= PER_SESSION {
        list.remove(0);
    }
    list.push(Waiting {
        key_id: key_id.to_owned(),
        secret: secret.to_owned(),
        at: Instant::now(),
    });
}

/// The secret of key `key_id` if `session` created it and it has not been shown yet; it is
/// gone afterwards.
pub fn take(session: &str, key_id: &str) -> Option<String> {
    let mut w = waiting();
    let list = w.get_mut(session)?;
    let i = list
        .iter()
        .position(|v| v.key_id == key_id && v.at.elapsed() < TTL)?;
    let secret = list.remove(i).secret;
    if list.is_empty() {
        w.remove(session);
    }
    Some(secret)
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

    #[test]
    fn two_keys_made_before_either_page_keep_both_secrets() {
        put("s3", "key_1", "sk-one");
        put("s3", "key_2", "sk-two");
        assert_eq!(take("s3", "key_1").as_deref(), Some("sk-one"));
        assert_eq!(take("s3", "key_2").as_deref(), Some("sk-two"));
    }

    #[test]
    fn a_session_holds_a_bounded_number() {
        for i in 0..=PER_SESSION {
            put("s4", &format!("key_{i}"), &format!("sk-{i}"));
        }
        assert_eq!(take("s4", "key_0"), None);
        assert_eq!(
            take("s4", &format!("key_{PER_SESSION}")).as_deref(),
            Some(&*format!("sk-{PER_SESSION}"))
        );
    }
}
