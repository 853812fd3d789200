//! Live run events: who is told that a run changed, for `GET /api/v1/runs/{id}/events` (a
//! Server-Sent Events stream) and `Prefer: wait` on create.
//!
//! The store announces the id of every run whose state it committed a change of (claimed,
//! finished, canceled, requeued or failed by a reclaim): in process where one process owns the
//! store, through `NOTIFY` where several share it ([`Store::run_changes`]). [`RunEvents`] turns
//! that one broadcast into a wake-up of exactly the watchers of that run, so a stream does no
//! work for other runs' changes. A watcher re-reads the run when woken, and also every
//! [`StreamLimits::recheck`] without being woken: a lost notification (a dropped `LISTEN` connection, a lagging
//! receiver, a write by another process on a shared SQLite file) delays an event, never loses it.
//!
//! An event is a snapshot of the run, not a log entry: a state that came and went between two
//! reads (a run that was `processing` for a millisecond) is not seen. Each snapshot has an id
//! ([`event_id`]) that grows along the run's life, so a client resuming with `Last-Event-ID`
//! gets exactly the states newer than the last it saw.

use crate::run::{Run, RunStatus};
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;

/// The bounds on event streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Streams one API key may hold open at once, on one API process.
    pub per_key: usize,
    /// How long one stream may stay open; then it ends and the client resumes with
    /// `Last-Event-ID`.
    pub max_duration: Duration,
    /// How often a watcher re-reads its run without being told of a change (the safety net).
    pub recheck: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            per_key: 10,
            max_duration: Duration::from_secs(30 * 60),
            recheck: Duration::from_secs(5),
        }
    }
}

/// A wait of between half of `every` and `every`, drawn at random: the first of a stream's
/// periodic checks, so that streams opened together do not all check at the same instant.
pub fn first_recheck(every: Duration) -> Duration {
    use rand::RngExt;
    let micros = u64::try_from(every.as_micros()).unwrap_or(u64::MAX).max(2);
    Duration::from_micros(rand::rng().random_range(micros / 2..=micros))
}

/// The id of a run's event: increases along the run's life, whatever path it takes.
///
/// With `a` the times a worker has taken the run (`Run::attempts`): `pending` is `2a` (0 when created, 2 after
/// a first requeue, ...), `processing` is `2a - 1` (1 for the first attempt, 3 for the second),
/// and a terminal status is `2a + 1`, above both states it can follow. Each state of one life
/// has its own id, so `Last-Event-ID` names exactly what a client has seen.
pub fn event_id(run: &Run) -> u64 {
    let a = u64::from(run.attempts);
    match run.status {
        RunStatus::Pending => 2 * a,
        RunStatus::Processing => (2 * a).max(2) - 1,
        RunStatus::Succeeded | RunStatus::Failed | RunStatus::Canceled => 2 * a + 1,
    }
}

/// The runs being watched in this process, and the event streams open in it.
#[derive(Clone)]
pub struct RunEvents {
    inner: Arc<Inner>,
}

/// One watcher of a run: its id (to unregister it) and its wake-up.
type Watcher = (u64, Arc<Notify>);

struct Inner {
    /// The watchers of each run.
    watchers: Mutex<HashMap<String, Vec<Watcher>>>,
    next_watcher: AtomicU64,
    /// Open streams by API key id.
    streams: Mutex<HashMap<String, usize>>,
    limits: StreamLimits,
    /// Set at shutdown: every stream ends, so a graceful stop does not wait for them.
    closing: tokio::sync::watch::Sender<bool>,
}

impl RunEvents {
    /// Starts dispatching `changes` (the store's [`Store::run_changes`]) to watchers; the
    /// dispatching task ends when the store stops announcing or the last clone of this is gone.
    pub fn start(
        changes: tokio::sync::broadcast::Receiver<String>,
        limits: StreamLimits,
    ) -> RunEvents {
        let events = RunEvents {
            inner: Arc::new(Inner {
                watchers: Mutex::default(),
                next_watcher: AtomicU64::new(0),
                streams: Mutex::default(),
                limits,
                closing: tokio::sync::watch::Sender::new(false),
            }),
        };
        tokio::spawn(dispatch(changes, Arc::downgrade(&events.inner)));
        events
    }

    pub fn limits(&self) -> StreamLimits {
        self.inner.limits
    }

    /// Starts watching a run: from now on, every change announced for it wakes the watch (a
    /// change announced before the watch waits is kept for it, not lost).
    pub fn watch(&self, run_id: &str) -> Watch {
        let id = self.inner.next_watcher.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        lock(&self.inner.watchers)
            .entry(run_id.to_owned())
            .or_default()
            .push((id, notify.clone()));
        Watch {
            inner: self.inner.clone(),
            run_id: run_id.to_owned(),
            id,
            notify,
        }
    }

    /// Counts one more open stream of the key; `None` when it already holds
    /// [`StreamLimits::per_key`]. The stream is uncounted when the slot is dropped.
    pub fn open_stream(&self, key_id: &str) -> Option<StreamSlot> {
        let mut streams = lock(&self.inner.streams);
        let open = streams.entry(key_id.to_owned()).or_insert(0);
        if *open >= self.inner.limits.per_key {
            return None;
        }
        *open += 1;
        Some(StreamSlot {
            inner: self.inner.clone(),
            key_id: key_id.to_owned(),
        })
    }

    /// Ends every stream, now and from now on (the server is stopping).
    pub fn close(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Resolves once [`RunEvents::close`] has been called.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.closing.subscribe();
        async move {
            let _ = rx.wait_for(|closing| *closing).await;
        }
    }

    /// How many watches are registered (for tests).
    pub fn watching(&self) -> usize {
        lock(&self.inner.watchers).values().map(Vec::len).sum()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn dispatch(mut changes: tokio::sync::broadcast::Receiver<String>, inner: Weak<Inner>) {
    loop {
        let changed = changes.recv().await;
        let Some(inner) = inner.upgrade() else { return };
        let watchers = lock(&inner.watchers);
        match changed {
            Ok(run_id) => {
                for (_, notify) in watchers.get(&run_id).into_iter().flatten() {
                    notify.notify_one();
                }
            }
            // Some announcements were dropped (this task fell behind): any run may have
            // changed, so every watcher looks.
            Err(RecvError::Lagged(_)) => {
                for (_, notify) in watchers.values().flatten() {
                    notify.notify_one();
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// A registered watcher of one run; unregistered when dropped.
pub struct Watch {
    inner: Arc<Inner>,
    run_id: String,
    id: u64,
    notify: Arc<Notify>,
}

impl Watch {
    /// Waits until the run was announced changed, or [`StreamLimits::recheck`] has passed.
    pub async fn changed(&self) {
        let recheck = self.inner.limits.recheck;
        let _ = tokio::time::timeout(recheck, self.notify.notified()).await;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watchers = lock(&self.inner.watchers);
        if let Some(list) = watchers.get_mut(&self.run_id) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                watchers.remove(&self.run_id);
            }
        }
    }
}

/// One open stream counted against its key; uncounted when dropped.
pub struct StreamSlot {
    inner: Arc<Inner>,
    key_id: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = lock(&self.inner.streams);
        if let Some(open) = streams.get_mut(&self.key_id) {
            *open -= 1;
            if *open == 0 {
                streams.remove(&self.key_id);
            }
        }
    }
}

/// The run's next state after the one with id `seen` (any state when `None`): the first
/// snapshot read whose [`event_id`] is above `seen`. `None` when the run is terminal and
/// `seen` is its terminal state already (nothing more will come), or when it no longer exists.
/// Waits on `watch`, which must have been registered before `seen` was read.
pub async fn next_state(
    store: &dyn Store,
    watch: &Watch,
    account_id: &str,
    seen: Option<u64>,
) -> Result<Option<Run>, StoreError> {
    let mut first = true;
    loop {
        if !first {
            watch.changed().await;
        }
        first = false;
        let Some(run) = store.get_run(account_id, &watch.run_id).await? else {
            return Ok(None);
        };
        if seen.is_none_or(|seen| event_id(&run) > seen) {
            return Ok(Some(run));
        }
        if run.status.is_terminal() {
            return Ok(None);
        }
    }
}

/// `Prefer: wait`: the run `run_id` of `account_id` once it is terminal, or as it is when `wait`
/// has passed (or the server is stopping). `None` if the run cannot be read.
pub async fn wait_until_terminal(
    store: &dyn Store,
    events: &RunEvents,
    account_id: &str,
    run_id: &str,
    wait: Duration,
) -> Result<Option<Run>, StoreError> {
    let watch = events.watch(run_id);
    let deadline = tokio::time::Instant::now() + wait;
    let closed = events.closed();
    tokio::pin!(closed);
    let mut seen = None;
    loop {
        let next = tokio::select! {
            next = next_state(store, &watch, account_id, seen) => next?,
            () = tokio::time::sleep_until(deadline) => None,
            () = &mut closed => None,
        };
        match next {
            Some(run) if run.status.is_terminal() => return Ok(Some(run)),
            Some(run) => seen = Some(event_id(&run)),
            // The deadline (or the run is gone): answer it as it is now.
            None => return store.get_run(account_id, run_id).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Millicents;
    use crate::time::Timestamp;

    fn run(status: RunStatus, attempts: u32) -> Run {
        Run {
            id: "run_1".into(),
            model: "m/n".into(),
            status,
            input: serde_json::json!({}),
            output: None,
            error: None,
            cost: Millicents::ZERO,
            created_at: Timestamp(0),
            started_at: None,
            completed_at: None,
            account_id: "acc".into(),
            key_id: "key".into(),
            attempts,
            test: false,
        }
    }

    #[test]
    fn event_ids_increase_along_every_life() {
        use RunStatus::*;
        let lives: &[&[(RunStatus, u32)]] = &[
            &[(Pending, 0), (Processing, 1), (Succeeded, 1)],
            &[(Pending, 0), (Canceled, 0)],
            &[(Pending, 0), (Processing, 1), (Canceled, 1)],
            &[
                (Pending, 0),
                (Processing, 1),
                (Pending, 1),
                (Processing, 2),
                (Pending, 2),
                (Canceled, 2),
            ],
            &[
                (Pending, 0),
                (Processing, 1),
                (Pending, 1),
                (Processing, 2),
                (Failed, 2),
            ],
        ];
        for life in lives {
            let ids: Vec<u64> = life.iter().map(|(s, a)| event_id(&run(*s, *a))).collect();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "{life:?}: {ids:?}");
        }
    }

    #[tokio::test]
    async fn a_change_wakes_only_the_watchers_of_its_run() {
        let (tx, rx) = tokio::sync::broadcast::channel(16);
        let events = RunEvents::start(rx, StreamLimits::default());
        let a = events.watch("run_a");
        let b = events.watch("run_b");
        tx.send("run_a".to_owned()).unwrap();
        // The permit is kept for a watcher that was not waiting yet.
        tokio::time::timeout(Duration::from_secs(2), a.notify.notified())
            .await
            .expect("run_a's watcher woken");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), b.notify.notified())
                .await
                .is_err()
        );
        assert_eq!(events.watching(), 2);
        drop((a, b));
        assert_eq!(events.watching(), 0);
    }

    #[test]
    fn streams_per_key_are_capped_and_released() {
        let (_tx, rx) = tokio::sync::broadcast::channel::<String>(1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let limits = StreamLimits {
            per_key: 2,
            ..StreamLimits::default()
        };
        let events = RunEvents::start(rx, limits);
        let one = events.open_stream("k").unwrap();
        let _two = events.open_stream("k").unwrap();
        assert!(events.open_stream("k").is_none());
        assert!(events.open_stream("other").is_some());
        drop(one);
        assert!(events.open_stream("k").is_some());
    }
}
