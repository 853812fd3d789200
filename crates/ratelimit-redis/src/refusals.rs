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

/// Remembered refusals per Redis key, bounded by the keys refused within the last two windows.
pub(crate) struct Refusals {
    inner: Mutex<Inner>,
    /// The limit's window: a refusal lasts at most this long (Redis's clock permitting), and the
    /// map is swept at least this often while it is used.
    window: Duration,
}

#[derive(Default)]
struct Inner {
    until: HashMap<String, Instant>,
    /// Entries after the last sweep: the map is swept when it has doubled since.
    swept_len: usize,
    /// And at the first call a window after the last sweep (or the first call), so that the
    /// refusals of an attack that has stopped do not stay until the map doubles, which it may
    /// never do again.
    swept_at: Option<Instant>,
}

/// The map is never swept below this size: sweeping a few entries is not worth it.
const SWEEP_FROM: usize = 1024;

impl Refusals {
    pub(crate) fn new(window: Duration) -> Self {
        Refusals {
            inner: Mutex::default(),
            window,
        }
    }

    /// How long `key` is still certainly refused at `now`, if it is.
    pub(crate) fn refused_for(&self, key: &str, now: Instant) -> Option<Duration> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let until = inner.until.get(key).copied();
        self.sweep_if_due(&mut inner, now);
        let until = until?;
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
        self.sweep_if_due(&mut inner, now);
    }

    /// Forgets the refusals past at `now` when the map has doubled since the last sweep or a
    /// window has passed since it: each refusal is looked at O(1) times in all, and none stays
    /// more than about a window after its moment.
    fn sweep_if_due(&self, inner: &mut Inner, now: Instant) {
        let len = inner.until.len();
        let doubled = len >= SWEEP_FROM && len >= 2 * inner.swept_len;
        // A difference, not `now + window`: a window of any configured length cannot overflow.
        let swept_at = *inner.swept_at.get_or_insert(now);
        if !doubled && now.saturating_duration_since(swept_at) < self.window {
            return;
        }
        if len > 0 {
            inner.until.retain(|_, t| *t > now);
            let kept = inner.until.len();
            if inner.until.capacity() > 4 * kept.max(SWEEP_FROM) {
                inner.until.shrink_to(2 * kept);
            }
        }
        inner.swept_len = inner.until.len();
        inner.swept_at = Some(now);
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
        let r = Refusals::new(Duration::from_secs(60));
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
        let r = Refusals::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..10 * SWEEP_FROM {
            // Each lives 1 ms; by the time the next thousand arrive the earlier ones are gone.
            let now = t0 + Duration::from_millis(i as u64);
            r.remember(&format!("ip-{i}"), now + Duration::from_millis(1), now);
        }
        assert!(r.len() <= 2 * SWEEP_FROM, "{} entries kept", r.len());
    }

    #[test]
    fn a_window_of_any_length_is_accepted() {
        let r = Refusals::new(Duration::MAX);
        let t0 = Instant::now();
        r.remember("k", t0 + Duration::from_secs(1), t0);
        assert!(r.refused_for("k", t0 + Duration::from_secs(3600)).is_none());
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn the_refusals_of_an_attack_that_stopped_are_forgotten_within_a_window() {
        let window = Duration::from_secs(60);
        let r = Refusals::new(window);
        let t0 = Instant::now();
        // An attack from 4000 addresses, each refused for a window: every size-triggered sweep
        // on the way finds them all live, and the map stops short of doubling again.
        for i in 0..4000 {
            r.remember(&format!("ip-{i}"), t0 + window, t0);
        }
        assert_eq!(r.len(), 4000);
        // Two windows later, the attack over: an ordinary request and one more refusal.
        let later = t0 + 2 * window;
        assert_eq!(r.refused_for("someone", later), None);
        r.remember("late", later + window, later);
        assert!(r.len() <= 1, "{} refusals of the past attack kept", r.len());
        assert!(r.refused_for("late", later).is_some());
    }
}
