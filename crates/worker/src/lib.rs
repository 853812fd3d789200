//! The in-process worker: claims queued runs from the store, calls the model's provider, stores
//! output files, and finishes the run (a failure refunds it, in the store's transaction).

#![cfg_attr(test, allow(clippy::unwrap_used, reason = "tests may unwrap"))]

mod slots;
pub mod webhooks;

use runbase_domain::catalog::Catalog;
use runbase_domain::files::FileStore;
use runbase_domain::inflight::InFlight;
use runbase_domain::provider::ProviderError;
use runbase_domain::run::{Run, RunError, RunOutcome};
use runbase_domain::store::{Store, StoreError};
use runbase_domain::time::Timestamp;
use runbase_providers::{Execution, Providers, ReadyOutput};
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use slots::{Background, Place, Slots};

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// How many runs call their provider at once (and hold its output while it is stored).
    pub concurrency: usize,
    /// How many runs this worker holds at once: waiting a moment for one of the `concurrency`
    /// calls, calling their provider, or having their outcome written. At least `concurrency`
    /// (docs/DECISIONS.md, "A worker's slot is the provider call").
    pub intake: usize,
    /// How often to look for runs queued by other processes when nothing signals.
    pub poll_interval: Duration,
    /// Base of output file URLs, e.g. `http://127.0.0.1:8080`.
    pub public_url: String,
    /// How long in-flight runs get to finish at shutdown.
    pub shutdown_grace: Duration,
    /// How long a claim on a run lasts without renewal. Renewed every third of it while the
    /// run executes; a run whose lease ran out (its worker died) is reclaimed by any worker.
    pub lease: Duration,
    /// How many times a run is started before an interruption fails it (with a refund).
    pub max_attempts: u32,
}

/// Everything a worker needs.
#[derive(Clone)]
pub struct Worker {
    pub store: Arc<dyn Store>,
    pub catalog: Arc<Catalog>,
    pub providers: Providers,
    pub files: Arc<dyn FileStore>,
    /// Where the API's cancel endpoint reaches the runs executing here.
    pub inflight: InFlight,
    pub config: WorkerConfig,
    /// The runs executing here, with the attempt each was claimed as (for lease renewal).
    pub executing: Executing,
    /// The operator's metrics (pickup latency, provider calls, finished runs).
    pub metrics: Arc<dyn runbase_domain::metrics::Metrics>,
}

/// How long a run handed over may wait for a call. Past it the run goes back to the queue, and
/// the worker stops taking runs from their creates until its next claim finds the queue drained:
/// a model slow enough to keep every call busy leaves its runs queued, `pending`, where any
/// worker with a call free can claim them.
const HANDED_RUN_WAIT: Duration = Duration::from_millis(50);

/// The runs a worker is executing: run id to the attempt it claimed.
pub type Executing = Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>;

/// Keeps a run in [`Executing`] while it executes here.
struct ExecutingGuard {
    executing: Executing,
    id: String,
}

impl ExecutingGuard {
    fn new(executing: &Executing, run: &Run) -> Self {
        if let Ok(mut m) = executing.lock() {
            m.insert(run.id.clone(), run.attempts);
        }
        ExecutingGuard {
            executing: executing.clone(),
            id: run.id.clone(),
        }
    }
}

impl Drop for ExecutingGuard {
    fn drop(&mut self) {
        if let Ok(mut m) = self.executing.lock() {
            m.remove(&self.id);
        }
    }
}

impl Worker {
    /// Claims and executes runs until `shutdown` resolves, then waits up to the grace period
    /// for runs in flight (any still running are re-queued at the next start).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        // Shared by the tasks below and every run's task: cloning the worker itself per run
        // copied its providers' table and configuration (a dozen allocations a run).
        let this = Arc::new(self);
        let this = &this;
        let capacity = this.config.intake.max(this.config.concurrency).max(1);
        let concurrency = this.config.concurrency.max(1);
        // Runs the store gives this worker from their creates, while it is idle (`Handoff`):
        // each holds the place taken for it, and waits for a call of its own.
        let slots = Arc::new(Slots::new(capacity, concurrency));
        let signal = this.store.queue_signal();
        let (handed_tx, mut handed) = tokio::sync::mpsc::unbounded_channel();
        let ready = {
            let slots = slots.clone();
            // While calls are turning over, runs are handed over up to `intake` (under load a
            // fast model's runs arrive a batch at a time, all calls taken for a moment, and each
            // run takes its call a moment later; one that waits too long goes back to the
            // queue). Otherwise no more than will find a call free.
            Arc::new(move || {
                slots.turning_over() || slots.not_started() < slots.calls.available_permits()
            })
        };
        this.store.hand_off_to(runbase_domain::store::Handoff {
            slots: slots.held.clone(),
            drained: slots.handoff_open.clone(),
            ready,
            lease: this.config.lease,
            runs: handed_tx,
        });
        let intake = {
            let (worker, slots) = (Arc::clone(this), slots.clone());
            tokio::spawn(async move {
                while let Some((run, held)) = handed.recv().await {
                    let place = Place {
                        held,
                        call: None,
                        slots: slots.clone(),
                    };
                    tokio::spawn(worker.clone().execute(run, place));
                }
            })
        };
        let leases = tokio::spawn(Arc::clone(this).keep_leases());
        let cancels = this
            .store
            .cancellations()
            .map(|rx| tokio::spawn(Arc::clone(this).follow_cancels(rx)));
        // Stopped at the end, or if this future is dropped before: nothing more is handed over
        // or called, and none of these tasks outlives the worker.
        let background = Background::new(
            [Some(intake), Some(leases), cancels]
                .into_iter()
                .flatten()
                .collect(),
            slots.clone(),
        );
        tokio::pin!(shutdown);
        loop {
            // Shutdown first: once it is asked for, no run is claimed. A place, then a call:
            // a run waiting for a call never holds one, so the two cannot wait on each other.
            let first = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                p = slots.held.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let first = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                c = slots.calls.clone().acquire_owned() => match c {
                    Ok(c) => Place { held: first, call: Some(c), slots: slots.clone() },
                    Err(_) => break,
                },
            };
            // The calls that runs handed over will take once they arrive are not claimed for:
            // the claim would leave them waiting, `processing`, for a call. While more are owed
            // than are free, this call is given back and the claim waits a moment.
            let owed = slots.not_started();
            let free = slots.calls.available_permits();
            if owed > free {
                drop(first);
                tokio::select! {
                    biased;
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(Duration::from_millis(5)) => continue,
                }
            }
            // The other free calls, each with a place, are taken before the claim asks for as
            // many runs, so that none of them can go to a run handed over meanwhile
            // (`Handoff`), and no run claimed waits: a claim takes what this worker can start
            // now, and leaves the rest of the queue to the other workers.
            let mut places = vec![first];
            for _ in 0..free - owed {
                let Ok(held) = slots.held.clone().try_acquire_owned() else {
                    break;
                };
                let Ok(call) = slots.calls.clone().try_acquire_owned() else {
                    break;
                };
                places.push(Place {
                    held,
                    call: Some(call),
                    slots: slots.clone(),
                });
            }
            // While calls are turning over, a claim takes as many runs again as it has calls
            // free, each to wait a moment for a call, as a run handed over does (and to go back
            // to the queue if none comes): under load a fast model's calls are all taken for an
            // instant, and a claim of only the free calls would leave runs queued behind it, so
            // that the handoff, which reopens once a claim finds the queue drained, never would.
            // Counted with the calls this claim starts: a claim that takes every call (the one
            // call of a worker of one, after a quick run) would leave its waiting runs behind
            // runs whose length nothing tells, to be put back.
            if slots.turning_over_starting(places.len()) {
                let mut waiting = Vec::with_capacity(slots.concurrency + places.len());
                for _ in 0..slots.concurrency {
                    let Ok(held) = slots.held.clone().try_acquire_owned() else {
                        break;
                    };
                    waiting.push(Place {
                        held,
                        call: None,
                        slots: slots.clone(),
                    });
                }
                // Runs are given the places holding a call first (taken from the end).
                waiting.append(&mut places);
                places = waiting;
            }
            let want = places.len() as u32;
            let now = Timestamp::now();
            let until = now.after(this.config.lease);
            let (runs, claimed) = match this.store.claim_runs(want, now, until).await {
                Ok(runs) => {
                    this.metrics.queue_claimed(want, runs.len() as u32);
                    (runs, true)
                }
                Err(e) => {
                    tracing::error!(error = %e, "claiming runs failed");
                    (Vec::new(), false)
                }
            };
            // Fewer than asked for: the queue held no more (as this claim saw it). The next claim
            // waits for news of a run queued since (the signal keeps one that came in meanwhile)
            // or the poll interval, instead of asking again at once; meanwhile the free slots
            // take runs handed over in their creates (`Handoff`). Asking again at once made
            // most claims empty ones on PostgreSQL (a round trip and an index scan each) and,
            // on SQLite, left no slot free for a handoff under load.
            let short = (runs.len() as u32) < want;
            for run in runs {
                let Some(permit) = places.pop() else { break };
                tokio::spawn(Arc::clone(this).execute(run, permit));
            }
            // The places left over are free again, for the next claim or a run handed over.
            drop(places);
            // A failed claim learnt nothing of the queue: no run is handed over before a claim
            // has found it drained.
            slots
                .handoff_open
                .store(short && claimed, std::sync::atomic::Ordering::Release);
            if short {
                tokio::select! {
                    biased;
                    _ = &mut shutdown => break,
                    _ = signal.notified() => {}
                    _ = tokio::time::sleep(this.config.poll_interval) => {}
                }
            }
        }
        // No run is handed over once every place is back here; one handed over before that is
        // executed (the intake runs until then).
        slots
            .handoff_open
            .store(false, std::sync::atomic::Ordering::Release);
        // No call is started now: runs handed over and waiting for one go back to the queue.
        slots.calls.close();
        // Every run held, waiting, executing or being written: none is left half-recorded.
        let all_back = tokio::time::timeout(
            this.config.shutdown_grace,
            slots.held.acquire_many(capacity as u32),
        )
        .await;
        if all_back.is_err() {
            tracing::warn!(
                runs = this.executing.lock().map(|m| m.len()).unwrap_or(0),
                grace_secs = this.config.shutdown_grace.as_secs(),
                "stopping with runs unfinished after the grace period; they stay processing and run again at the next start (or once their lease runs out, on a shared store)"
            );
        }
        drop(background);
    }

    /// Stops the runs executing here that were canceled through another process.
    async fn follow_cancels(self: Arc<Self>, mut rx: tokio::sync::broadcast::Receiver<String>) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match rx.recv().await {
                Ok(id) => {
                    let mine = self.executing.lock().is_ok_and(|m| m.contains_key(&id));
                    if mine {
                        tracing::info!(run.id = %id, "run canceled through another node; stopping it");
                        self.inflight.cancel(&id);
                    }
                }
                // Missed some: the lease renewal still finds them.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Every third of a lease: renews the leases of the runs executing here (stopping those
    /// that are no longer ours: canceled through another node, or reclaimed), then reclaims
    /// runs whose worker died, in whichever process it ran.
    ///
    /// A run whose lease could not be renewed (the database unreachable from here, a
    /// partition) is stopped here before its lease can run out: past that, another worker
    /// takes it over, and two executions would run at once. Nothing is written for it; the
    /// worker that reclaims it runs it again.
    async fn keep_leases(self: Arc<Self>) {
        let every = (self.config.lease / 3).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Until when each run's lease surely holds, as far as this worker knows.
        let mut held: std::collections::HashMap<String, std::time::Instant> =
            std::collections::HashMap::new();
        loop {
            tick.tick().await;
            let mine: Vec<(String, u32)> = match self.executing.lock() {
                Ok(m) => m.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                Err(_) => return,
            };
            let asked = std::time::Instant::now();
            held.retain(|id, _| mine.iter().any(|(m, _)| m == id));
            for (id, _) in &mine {
                // Claimed since the previous tick at the earliest: its lease lasts at least
                // until then plus one lease.
                held.entry(id.clone()).or_insert_with(|| {
                    (asked + self.config.lease)
                        .checked_sub(every)
                        .unwrap_or(asked)
                });
            }
            if !mine.is_empty() {
                let until = Timestamp::now().after(self.config.lease);
                // Bounded: a renewal stuck on a dead connection must not hold up the stopping.
                let renewed = tokio::time::timeout(every, self.store.renew_leases(&mine, until))
                    .await
                    .unwrap_or_else(|_| {
                        Err(StoreError::Unavailable(
                            "no answer within a third of the lease".into(),
                        ))
                    });
                match renewed {
                    Ok(lost) => {
                        for id in &lost {
                            // Only the attempt renewed: the run may have been put back and
                            // claimed here again since the list was taken.
                            let listed = mine.iter().find(|(m, _)| m == id).map(|(_, a)| *a);
                            let current =
                                self.executing.lock().ok().and_then(|m| m.get(id).copied());
                            if listed.is_some() && listed == current {
                                tracing::info!(run.id = %id, "run no longer ours (canceled or reclaimed); stopping it");
                                self.inflight.stop(id);
                            }
                            held.remove(id);
                        }
                        for v in held.values_mut() {
                            *v = asked + self.config.lease;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "renewing run leases failed"),
                }
                // What would lapse before the next renewal is stopped now.
                let horizon = std::time::Instant::now() + every;
                held.retain(|id, until| {
                    if *until > horizon {
                        return true;
                    }
                    tracing::warn!(run.id = %id, "could not renew the run's lease; stopping it here so that another worker can take it over");
                    self.inflight.stop(id);
                    false
                });
            }
            match self
                .store
                .reclaim_expired(self.config.max_attempts, Timestamp::now())
                .await
            {
                Ok((0, 0)) => {}
                Ok((requeued, failed)) => {
                    tracing::warn!(requeued, failed, "reclaimed runs whose worker stopped")
                }
                Err(e) => tracing::error!(error = %e, "reclaiming expired runs failed"),
            }
        }
    }

    async fn execute(self: Arc<Self>, run: Run, place: Place) {
        let span = tracing::info_span!("run.execute", run.id = %run.id, run.model = %run.model);
        self.execute_in_span(run, place).instrument(span).await
    }

    /// Runs the provider holding one of `concurrency` calls, then gives the call back and
    /// writes the outcome: the call is free for the next run while the store commits (a commit
    /// waits for the writer's batch, as long as a fast model's whole execution). The run's
    /// place is held throughout, so shutdown waits for the write.
    async fn execute_in_span(self: Arc<Self>, run: Run, place: Place) {
        let Place { held, call, slots } = place;
        // Shared with the provider's task, not copied into it.
        let run = Arc::new(run);
        let registration = self.inflight.register(&run.id);
        // From here the run's lease is renewed, and a cancel or a lost lease stops it, also
        // while it waits for a call.
        let _executing = ExecutingGuard::new(&self.executing, &run);
        let call = match call {
            Some(c) => c,
            None => match self.wait_for_call(&run, &slots, &registration.signal).await {
                Some(c) => c,
                None => return,
            },
        };
        slots.call_time.started();
        // Picked up: from its creation to its call (a taking put back before a call is not).
        let waited = Timestamp::now().0.saturating_sub(run.created_at.0).max(0);
        self.metrics.run_picked_up(waited as f64 / 1e6);
        let started = std::time::Instant::now();
        let execution = self.call_provider(&run, &registration.signal).await;
        if !matches!(execution, Execution::Canceled) {
            slots.call_time.record(started.elapsed());
        }
        let (outcome_name, code) = match &execution {
            Execution::Succeeded(_) => ("succeeded", None),
            Execution::Failed(e) => ("failed", Some(e.code.as_str())),
            Execution::Canceled => ("canceled", None),
        };
        self.metrics.provider_call(
            &run.model,
            outcome_name,
            code,
            started.elapsed().as_secs_f64(),
        );
        let outcome = match execution {
            Execution::Succeeded(out) => match self.store_output(&run, out).await {
                Ok(output) => RunOutcome::Succeeded { output },
                Err(error) => RunOutcome::Failed { error },
            },
            Execution::Failed(e) => RunOutcome::Failed {
                error: RunError {
                    message: e.message,
                    code: e.code,
                },
            },
            Execution::Canceled => {
                // The cancel endpoint already moved the run to `canceled` and refunded it.
                tracing::info!("run canceled while executing");
                return;
            }
        };
        drop(registration);
        let ok = matches!(outcome, RunOutcome::Succeeded { .. });
        // Taken before the call is given back, so that outcomes waiting on the store stay
        // bounded (at most `concurrency` calling and as many being written).
        let settling = slots.settling.clone().acquire_owned().await;
        drop(call);
        self.finish(&run.id, run.attempts, outcome).await;
        drop(settling);
        drop(held);
        self.metrics
            .run_finished(&run.model, if ok { "succeeded" } else { "failed" });
        tracing::info!(
            succeeded = ok,
            duration_ms = started.elapsed().as_millis() as u64,
            "run finished"
        );
    }

    /// A call for a run handed over, or `None` once the run is no longer this worker's to start:
    /// stopped (canceled, or its lease not renewed), or put back in the queue because no call
    /// came free within [`HANDED_RUN_WAIT`] or the worker is stopping.
    async fn wait_for_call(
        &self,
        run: &Run,
        slots: &Slots,
        stop: &tokio::sync::Notify,
    ) -> Option<OwnedSemaphorePermit> {
        // Most runs of a fast model find a call free: no timer for them.
        if let Ok(c) = slots.calls.clone().try_acquire_owned() {
            return Some(c);
        }
        let acquire = slots.calls.clone().acquire_owned();
        tokio::pin!(acquire);
        let stopping = tokio::select! {
            biased;
            _ = stop.notified() => {
                tracing::info!("run stopped while waiting for a call");
                return None;
            }
            c = &mut acquire => match c {
                Ok(c) => return Some(c),
                // Closed: the worker is stopping.
                Err(_) => true,
            },
            _ = tokio::time::sleep(HANDED_RUN_WAIT) => false,
        };
        slots
            .handoff_open
            .store(false, std::sync::atomic::Ordering::Release);
        match self.store.release_run(&run.id, run.attempts).await {
            Ok(true) => tracing::info!(
                stopping,
                "run put back in the queue before its provider was called"
            ),
            // Canceled or reclaimed meanwhile: no longer this worker's.
            Ok(false) => {}
            // Not known to be put back, so not started either (the release may have committed):
            // no longer renewed here, its lease runs out and any worker reclaims it.
            Err(e) => {
                tracing::warn!(error = %e, "putting a run back in the queue failed; it is reclaimed once its lease runs out")
            }
        }
        None
    }

    async fn call_provider(&self, run: &Arc<Run>, cancel: &tokio::sync::Notify) -> Execution {
        let Some(model) = self.catalog.get(&run.model).cloned() else {
            return Execution::Failed(ProviderError::new(
                "model_unavailable",
                format!("Model {} is no longer offered", run.model),
            ));
        };
        let (providers, run) = (self.providers.clone(), run.clone());
        // A task of its own, so a panicking adapter fails the run instead of leaving it stuck.
        // The cancel signal is forwarded into the task.
        let inner = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn({
            let inner = inner.clone();
            async move {
                providers
                    .execute(&run.id, &model, &run.input, run.test, &inner)
                    .await
            }
        });
        let abort = task.abort_handle();
        tokio::pin!(task);
        let joined = tokio::select! {
            j = &mut task => j,
            _ = cancel.notified() => {
                inner.notify_one();
                (&mut task).await
            }
        };
        drop(abort);
        match joined {
            Ok(execution) => execution,
            Err(e) => {
                tracing::error!(error = %e, "provider task failed");
                Execution::Failed(ProviderError::new(
                    "internal_error",
                    "The model's adapter failed unexpectedly",
                ))
            }
        }
    }

    /// Saves the files and builds `output` (`urls` plus the provider's fields). File names
    /// carry a random part: the files route needs no key, so an address must be learned from
    /// the succeeded run, not guessed (a run canceled while its files are being stored is
    /// refunded, and its files must stay out of reach).
    async fn store_output(&self, run: &Run, out: ReadyOutput) -> Result<Value, RunError> {
        let mut urls = Vec::with_capacity(out.files.len());
        let token = runbase_domain::ids::random_token(16);
        for f in out.files {
            let path = format!("{}/{token}-{}", run.id, f.name);
            self.files
                .put(&path, &f.content_type, f.bytes)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "storing an output file failed");
                    RunError {
                        message: "the output could not be stored".into(),
                        code: "storage_error".into(),
                    }
                })?;
            urls.push(Value::String(format!(
                "{}/files/{path}",
                self.config.public_url.trim_end_matches('/')
            )));
        }
        let mut output = out.fields;
        output.insert("urls".into(), Value::Array(urls));
        Ok(Value::Object(output))
    }

    /// Records the outcome, retrying while the store is unavailable: a run must not be left
    /// `processing` because one write failed.
    async fn finish(&self, run_id: &str, attempt: u32, outcome: RunOutcome) {
        let mut delay = Duration::from_millis(50);
        for tries in 1..=10 {
            match self
                .store
                .finish_run(run_id, attempt, outcome.clone(), Timestamp::now())
                .await
            {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(error = %e, tries, "recording a run's outcome failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::error!(
            "giving up on recording the outcome; the run is re-queued at the next start"
        );
    }
}
