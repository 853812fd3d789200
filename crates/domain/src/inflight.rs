//! Runs executing in this process, so that `POST /api/v1/runs/{id}/cancel` can stop the
//! provider call of a run that is already `processing`. The money side of a cancel happens in
//! the store (the run is canceled and refunded at once); this only tells the worker to stop.

use dashmap::DashMap;
use std::sync::Arc;
use tokio::sync::Notify;

/// The cancel signals of the runs in flight, by run id.
#[derive(Clone, Default)]
pub struct InFlight {
    runs: Arc<DashMap<String, Arc<Notify>>>,
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
        Registration {
            runs: self.runs.clone(),
            run_id: run_id.to_owned(),
            signal,
        }
    }

    /// Signals the run to stop; false when it is not executing here. The signal is kept if
    /// the worker is not waiting yet, so it cannot be missed.
    pub fn cancel(&self, run_id: &str) -> bool {
        match self.runs.get(run_id) {
            Some(s) => {
                s.notify_one();
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
