//! Sign-ins started and not yet finished: the state sent to the provider, with the PKCE
//! verifier and nonce kept here (never sent to the browser), bound to the browser that started
//! them, usable once and for [`PENDING_FOR`].
//!
//! They live in this process's memory: the callback must reach the node that served the
//! start (with several API nodes, route `/auth/oidc/` to one of them or make it sticky).

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a user has at the provider to finish signing in.
pub const PENDING_FOR: Duration = Duration::from_secs(600);
/// At most this many sign-ins wait at once (each is a few hundred bytes); past it the oldest
/// are dropped.
const MAX_PENDING: usize = 10_000;

/// One sign-in in progress.
#[derive(Debug, Clone)]
pub struct Pending {
    pub provider: String,
    pub verifier: String,
    pub nonce: String,
    /// Where to go once signed in (a local path).
    pub next: String,
    /// SHA-256 of the browser's binding cookie.
    binding: [u8; 32],
    started: Instant,
}

#[derive(Default)]
pub struct PendingLogins {
    by_state: Mutex<HashMap<String, Pending>>,
}

fn hash(binding: &str) -> [u8; 32] {
    Sha256::digest(binding.as_bytes()).into()
}

impl PendingLogins {
    /// Keeps a sign-in under its `state`.
    pub fn insert(
        &self,
        state: String,
        provider: &str,
        verifier: String,
        nonce: String,
        next: String,
        binding: &str,
    ) {
        let mut map = self.by_state.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, p| p.started.elapsed() < PENDING_FOR);
        if map.len() >= MAX_PENDING
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            state,
            Pending {
                provider: provider.to_owned(),
                verifier,
                nonce,
                next,
                binding: hash(binding),
                started: Instant::now(),
            },
        );
    }

    /// Takes the sign-in `state` names, once: it must be of this provider, started by this
    /// browser (`binding`, its cookie) and not expired. A state that fails is gone all the same.
    pub fn take(&self, state: &str, provider: &str, binding: Option<&str>) -> Option<Pending> {
        use subtle::ConstantTimeEq;
        let p = self
            .by_state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(state)?;
        let same_browser = binding.is_some_and(|b| bool::from(hash(b).ct_eq(&p.binding)));
        (same_browser && p.provider == provider && p.started.elapsed() < PENDING_FOR).then_some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_same_browser_same_provider() {
        let p = PendingLogins::default();
        let put = |state: &str| {
            p.insert(
                state.into(),
                "a",
                "v".into(),
                "n".into(),
                "/".into(),
                "cookie",
            );
        };
        put("s1");
        assert!(p.take("s1", "a", Some("cookie")).is_some());
        assert!(p.take("s1", "a", Some("cookie")).is_none(), "single use");
        put("s2");
        assert!(
            p.take("s2", "a", Some("other")).is_none(),
            "another browser"
        );
        assert!(
            p.take("s2", "a", Some("cookie")).is_none(),
            "gone after a failure"
        );
        put("s3");
        assert!(
            p.take("s3", "b", Some("cookie")).is_none(),
            "another provider"
        );
        put("s4");
        assert!(p.take("s4", "a", None).is_none(), "no cookie");
    }
}
