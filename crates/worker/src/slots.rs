//! A worker's bounds and what decides the handoff (docs/DECISIONS.md, "A worker's slot is the
//! provider call"): the places it holds, its provider calls, the outcomes being written, how
//! long its calls take, and its own background tasks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A worker's bounds (the runs it holds, `intake`; the provider calls it makes at once,
/// `concurrency`; the outcomes being written) and what decides the handoff, shared by the worker's
/// loop and every run it holds.
pub(crate) struct Slots {
    pub(crate) held: Arc<Semaphore>,
    pub(crate) calls: Arc<Semaphore>,
    /// Outcomes being written: a run gives its call back once its provider has answered and
    /// its outputs are stored, holding one of these until its outcome is committed, so that
    /// outcomes waiting on the store (and the outputs they carry) stay bounded.
    pub(crate) settling: Arc<Semaphore>,
    /// `intake` and `concurrency`.
    pub(crate) capacity: usize,
    pub(crate) concurrency: usize,
    /// The handoff is open (`Handoff::drained`): the last claim found the queue drained, and no
    /// run has waited too long for a call since.
    pub(crate) handoff_open: Arc<AtomicBool>,
    pub(crate) call_time: CallTime,
}

impl Slots {
    /// `capacity` places (`intake`), `concurrency` calls and as many outcomes being written.
    pub(crate) fn new(capacity: usize, concurrency: usize) -> Self {
        Slots {
            held: Arc::new(Semaphore::new(capacity)),
            calls: Arc::new(Semaphore::new(concurrency)),
            settling: Arc::new(Semaphore::new(concurrency)),
            capacity,
            concurrency,
            handoff_open: Arc::new(AtomicBool::new(false)),
            call_time: CallTime::new(),
        }
    }

    /// See [`CallTime::turning_over`].
    pub(crate) fn turning_over(&self) -> bool {
        self.call_time.turning_over(self.concurrency)
    }

    /// Turning over once `starting` more calls have started (those of a claim under way).
    pub(crate) fn turning_over_starting(&self, starting: usize) -> bool {
        self.call_time
            .turning_over(self.concurrency.saturating_sub(starting))
    }

    /// Runs holding a place without having started: handed over and committing, or waiting for
    /// a call. Read without a lock, so approximate; `intake` is the hard bound.
    pub(crate) fn not_started(&self) -> usize {
        let used = |s: &Semaphore, of: usize| of - s.available_permits().min(of);
        let started = used(&self.calls, self.concurrency) + used(&self.settling, self.concurrency);
        used(&self.held, self.capacity).saturating_sub(started)
    }
}

/// How long this worker's provider calls take, as a moving average in microseconds (unknown
/// until one has ended), and when the last one ended. While no call is free, runs are handed over
/// only if calls are quick and one ended a moment ago: then a call frees up within a few calls'
/// time. A fast model's calls are often all taken for an instant under load; a slow model's, or
/// the long call of a model that is usually quick, are not turning over.
pub(crate) struct CallTime {
    average_us: AtomicU64,
    /// Microseconds from `since` to the end of the last call.
    last_end_us: AtomicU64,
    /// Calls started since the last one ended. Once it reaches `concurrency`, every call in
    /// flight is one that began after that end, and the quick calls that just ended say nothing
    /// of when they will (a long run taking the only call right after a quick one ended).
    started_since_end: AtomicUsize,
    since: std::time::Instant,
}

/// Calls quicker than this on average are quick, and one that ended within it is recent.
const QUICK_CALL: Duration = Duration::from_millis(10);

impl CallTime {
    pub(crate) fn new() -> Self {
        CallTime {
            average_us: AtomicU64::new(u64::MAX),
            last_end_us: AtomicU64::new(0),
            started_since_end: AtomicUsize::new(0),
            since: std::time::Instant::now(),
        }
    }

    pub(crate) fn record(&self, took: Duration) {
        let took = u64::try_from(took.as_micros()).unwrap_or(u64::MAX / 2);
        let before = self.average_us.load(Ordering::Relaxed);
        // Racing updates may lose a sample; an average does not mind.
        let after = if before == u64::MAX {
            took
        } else {
            before - before / 8 + took / 8
        };
        self.average_us.store(after, Ordering::Relaxed);
        // Reset before the end is stamped: a start racing in between is counted, not erased
        // (erring towards "not turning over"). A canceled call is not recorded, so its start
        // stays counted: the count is approximate, on the same side.
        self.started_since_end.store(0, Ordering::Relaxed);
        let now = u64::try_from(self.since.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_end_us.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn started(&self) {
        self.started_since_end.fetch_add(1, Ordering::Relaxed);
    }

    /// Quick on average, one ended within [`QUICK_CALL`], and not every call in flight started
    /// after it.
    pub(crate) fn turning_over(&self, concurrency: usize) -> bool {
        let now = u64::try_from(self.since.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.turning_over_at(concurrency, now)
    }

    /// [`Self::turning_over`] at `now`, microseconds from `since`.
    fn turning_over_at(&self, concurrency: usize, now: u64) -> bool {
        let quick = QUICK_CALL.as_micros() as u64;
        if self.average_us.load(Ordering::Relaxed) >= quick
            || self.started_since_end.load(Ordering::Relaxed) >= concurrency
        {
            return false;
        }
        now.saturating_sub(self.last_end_us.load(Ordering::Relaxed)) < quick
    }
}

/// What a run holds in its worker: its place among the runs held, and its call (`None`: it waits
/// for one, as a run handed over in its create does).
pub(crate) struct Place {
    pub(crate) held: OwnedSemaphorePermit,
    pub(crate) call: Option<OwnedSemaphorePermit>,
    pub(crate) slots: Arc<Slots>,
}

/// A worker's own tasks (the intake of handed runs, the lease keeper, the cancel follower),
/// stopped when this is dropped: at the end of [`crate::Worker::run`], or when its future is
/// dropped instead of shut down. The handoff is closed first and the calls too, so that no run
/// is handed over and no run waiting for a call starts one (each goes back to the queue). Runs
/// already calling their provider are not stopped: they finish, their leases no longer renewed.
pub(crate) struct Background {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    slots: Arc<Slots>,
}

impl Background {
    pub(crate) fn new(tasks: Vec<tokio::task::JoinHandle<()>>, slots: Arc<Slots>) -> Self {
        Background { tasks, slots }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.slots.handoff_open.store(false, Ordering::Release);
        self.slots.calls.close();
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dropping a worker's tasks (as when `Worker::run`'s future is dropped) stops them and
    /// closes the handoff and the calls.
    #[tokio::test]
    async fn background_tasks_stop_with_their_guard() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        let slots = Arc::new(Slots::new(4, 2));
        slots.handoff_open.store(true, Ordering::Release);
        drop(Background::new(vec![task], slots.clone()));
        // The task was aborted: its sender is dropped without sending.
        assert!(rx.await.is_err());
        // Nothing more is handed over, and no call is started.
        assert!(!slots.handoff_open.load(Ordering::Acquire));
        assert!(slots.calls.clone().try_acquire_owned().is_err());
    }

    #[test]
    fn calls_are_not_turning_over_once_every_call_started_after_the_last_end() {
        let t = CallTime::new();
        // Nothing known before a call has ended.
        assert!(!t.turning_over(1));
        t.record(Duration::from_millis(1));
        // A moment after that end (a clock of its own: this test does not race the window).
        let soon = t.last_end_us.load(Ordering::Relaxed) + 1_000;
        let later = soon + QUICK_CALL.as_micros() as u64;
        assert!(!t.turning_over_at(1, later));
        assert!(t.turning_over_at(1, soon));
        // A long run takes the only call right after a quick one ended: nothing will free up
        // soon, whatever the average says.
        t.started();
        assert!(!t.turning_over_at(1, soon));
        // With two calls, the other one (started before that end) may still be quick.
        assert!(t.turning_over_at(2, soon));
        t.started();
        assert!(!t.turning_over_at(2, soon));
        // An end turns them over again.
        t.record(Duration::from_millis(1));
        assert!(t.turning_over_at(2, soon));
        // A claim that starts every call free (`Slots::turning_over_starting`): not turning over.
        assert!(!t.turning_over_at(0, soon));
        // Slow on average: never.
        let slow = CallTime::new();
        slow.record(Duration::from_millis(200));
        assert!(!slow.turning_over(64));
    }
}
