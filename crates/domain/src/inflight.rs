//! Runs executing in this process, so that `POST /api/v1/runs/{id}/cancel` can stop the
//! provider call of a run that is already `processing`. The money side of a cancel happens in
//! the store (the run is canceled and refunded at once); this only tells the worker to stop.

use dashmap::DashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How long a cancel of a run that is not (yet) registered is remembered: covers the moment
/// between the worker claiming a run and registering it.
const REMEMBER: Duration = Duration::from_secs(60);

/// The cancel signals of the runs in flight, by run id.
#[derive(Clone, Default)]
pub struct InFlight {
    runs: Arc<DashMap<String, Arc<Notify>>>,
    /// Cancels that found no registered run, with when they came.
    early: Arc<DashMap<String, Instant>>,
}

/// Keeps a run registered while it executes; dropping it unregisters the run.
pub struct Registration {
    runs: Arc<DashMap<String, Arc<Notify>>>,
    run_id: String,
    pub signal: Arc<Notify>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.runs.remove(&self.run_id);
    }
}

impl InFlight {
    /// Registers a run the worker is about to execute.
    pub fn register(&self, run_id: &str) -> Registration {
        let signal = Arc::new(Notify::new());
        self.runs.insert(run_id.to_owned(), signal.clone());
        if self.early.remove(run_id).is_some() {
            signal.notify_one();
        }
        Registration {
            runs: self.runs.clone(),
            run_id: run_id.to_owned(),
            signal,
        }
    }

    /// Signals the run to stop; false when it is not executing here. The signal is kept if
    /// the worker is not waiting yet, and a run registered within a minute after its cancel
    /// starts canceled, so a cancel racing the worker's claim is not lost.
    pub fn cancel(&self, run_id: &str) -> bool {
        if let Some(s) = self.runs.get(run_id) {
            s.notify_one();
            return true;
        }
        let now = Instant::now();
        self.early
            .retain(|_, at| now.duration_since(*at) < REMEMBER);
        self.early.insert(run_id.to_owned(), now);
        false
    }

    /// Signals the run to stop if it is registered here, and otherwise does nothing: for a
    /// worker that learns a run it was executing is no longer its own (a lease lost). Unlike
    /// [`InFlight::cancel`], nothing is remembered for a later registration, which may be the
    /// same run claimed again.
    pub fn stop(&self, run_id: &str) -> bool {
        match self.runs.get(run_id) {
            Some(s) => {
                s.notify_one();
                true
            }
            None => false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_of_a_run_not_here_is_not_remembered() {
        let inflight = InFlight::default();
        assert!(!inflight.stop("run_a"));
        let reg = inflight.register("run_a");
        let notified = tokio::time::timeout(Duration::from_millis(50), reg.signal.notified());
        assert!(
            notified.await.is_err(),
            "registered afterwards, not stopped"
        );
        assert!(inflight.stop("run_a"));
        reg.signal.notified().await;
    }

    #[tokio::test]
    async fn a_cancel_before_the_wait_is_not_lost() {
        let inflight = InFlight::default();
        let reg = inflight.register("run_a");
        assert!(inflight.cancel("run_a"));
        reg.signal.notified().await;
        drop(reg);
        assert!(!inflight.cancel("run_a"));
        assert!(inflight.is_empty());
    }

    #[tokio::test]
    async fn a_cancel_before_the_registration_is_not_lost() {
        let inflight = InFlight::default();
        assert!(!inflight.cancel("run_b"));
        let reg = inflight.register("run_b");
        reg.signal.notified().await;
    }
}
