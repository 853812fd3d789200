//! Refusals this node already knows to be certain, answered without asking Redis.
//!
//! In a sliding-window log, a key Redis refuses holds `limit` admissions, the oldest of which
//! leaves the window `reset_after` later; nothing leaves it sooner, and a refused request adds
//! nothing. So until then every request for that key is refused, on every node, whatever else
//! happens. This node remembers the moment and refuses by itself until it: an over-limit
//! flood costs no round trip and no Redis work, and the answer is the one Redis would give.
//!
//! The moment is measured from when the question was sent (before Redis read its clock), so
//! it falls at or before the true one: a request is never refused here that Redis would have
//! admitted. The one way to shorten a window, deleting the key in Redis by hand, is not seen by
//! a node until its remembered moment passes (at most one window).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Remembered refusals per Redis key, bounded by the keys refused within the last window.
#[derive(Default)]
pub(crate) struct Refusals {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    until: HashMap<String, Instant>,
    /// Entries after the last sweep: the map is swept when it has doubled since.
    swept_len: usize,
}

/// The map is never swept below this size: sweeping a few entries is not worth it.
const SWEEP_FROM: usize = 1024;

impl Refusals {
    /// How long `key` is still certainly refused at `now`, if it is.
    pub(crate) fn refused_for(&self, key: &str, now: Instant) -> Option<Duration> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let until = *inner.until.get(key)?;
        (until > now).then(|| until - now)
    }

    /// Remembers that `key` is refused until `until`.
    pub(crate) fn remember(&self, key: &str, until: Instant, now: Instant) {
        if until <= now {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match inner.until.get_mut(key) {
            Some(t) => *t = until.max(*t),
            None => {
                inner.until.insert(key.to_owned(), until);
            }
        }
        let len = inner.until.len();
        if len >= SWEEP_FROM && len >= 2 * inner.swept_len {
            inner.until.retain(|_, t| *t > now);
            inner.swept_len = inner.until.len();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap().until.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_holds_until_its_moment_and_not_after() {
        let r = Refusals::default();
        let t0 = Instant::now();
        assert_eq!(r.refused_for("k", t0), None);
        r.remember("k", t0 + Duration::from_millis(500), t0);
        assert_eq!(
            r.refused_for("k", t0 + Duration::from_millis(100)),
            Some(Duration::from_millis(400))
        );
        assert_eq!(r.refused_for("other", t0), None);
        assert_eq!(r.refused_for("k", t0 + Duration::from_millis(500)), None);
        // An earlier moment learned later does not shorten a known one.
        r.remember("k", t0 + Duration::from_millis(200), t0);
        assert!(
            r.refused_for("k", t0 + Duration::from_millis(300))
                .is_some()
        );
        // A moment already past is not kept.
        r.remember("past", t0, t0 + Duration::from_millis(1));
        assert_eq!(r.refused_for("past", t0), None);
    }

    #[test]
    fn expired_refusals_are_swept_as_the_map_grows() {
        let r = Refusals::default();
        let t0 = Instant::now();
        for i in 0..10 * SWEEP_FROM {
            // Each lives 1 ms; by the time the next thousand arrive the earlier ones are gone.
            let now = t0 + Duration::from_millis(i as u64);
            r.remember(&format!("ip-{i}"), now + Duration::from_millis(1), now);
        }
        assert!(r.len() <= 2 * SWEEP_FROM, "{} entries kept", r.len());
    }
}
