//! A node's queues of statements of one kind, run in batches: what arrives while a batch is
//! being run forms the next one, so under load each round trip carries many requests and at rest
//! a request waits for nobody.
//!
//! - [`Batcher`], for writes: one batch of a kind at a time (measured: a second batch in flight
//!   only split the waiting writes into smaller batches queued on the same row locks;
//!   BENCHMARKS.md, issue 13).
//! - [`ReadBatcher`], for reads, which take no locks: up to a few batches at once. A request
//!   that finds a lane free starts its batch at once; one that finds every lane busy waits, and
//!   goes in the next batch with everything else that waited.

use crate::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Writes waiting for a batch before callers wait for room (back-pressure); reads waiting for a
/// lane before more are refused as unavailable.
const QUEUE: usize = 8192;

/// One request waiting in a batch, and where its outcome goes.
pub(crate) struct Pending<Req, Out> {
    pub req: Req,
    pub reply: oneshot::Sender<Result<Out, Error>>,
}

/// Runs a whole batch with what it needs (`Ctx`: the pool, and for creates the worker's
/// handoff) and answers each of its requests.
pub(crate) type RunBatch<Ctx, Req, Out> =
    fn(Ctx, Vec<Pending<Req, Out>>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// The queue; dropping it ends its task once the queued writes are done.
pub(crate) struct Batcher<Req, Out> {
    queue: mpsc::Sender<Pending<Req, Out>>,
}

impl<Req: Send + 'static, Out: Send + 'static> Batcher<Req, Out> {
    /// Starts the task that writes batches of at most `max` writes with `write`.
    pub(crate) fn start<Ctx: Clone + Send + 'static>(
        ctx: Ctx,
        max: usize,
        write: RunBatch<Ctx, Req, Out>,
    ) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(ctx, rx, max, write));
        Batcher { queue }
    }

    /// Queues one write; answers once its batch is written.
    pub(crate) async fn submit(&self, req: Req) -> Result<Out, Error> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { req, reply })
            .await
            .map_err(|_| Error::Data("the write queue has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Data("the write batch was abandoned".into()))?
    }
}

async fn run<Ctx: Clone, Req, Out>(
    ctx: Ctx,
    mut rx: mpsc::Receiver<Pending<Req, Out>>,
    max: usize,
    write: RunBatch<Ctx, Req, Out>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::with_capacity(64);
        batch.push(first);
        while batch.len() < max {
            match rx.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        write(ctx.clone(), batch).await;
    }
}

/// A queue of reads of one kind, run in batches on up to `lanes` tasks at once.
pub(crate) struct ReadBatcher<Ctx, Req, Out> {
    inner: Arc<Lanes<Ctx, Req, Out>>,
}

struct Lanes<Ctx, Req, Out> {
    ctx: Ctx,
    max: usize,
    lanes: usize,
    run: RunBatch<Ctx, Req, Out>,
    state: Mutex<LaneState<Req, Out>>,
}

struct LaneState<Req, Out> {
    /// Requests waiting for a lane.
    waiting: Vec<Pending<Req, Out>>,
    /// Lanes running a batch.
    busy: usize,
}

impl<Ctx, Req, Out> ReadBatcher<Ctx, Req, Out>
where
    Ctx: Clone + Send + Sync + 'static,
    Req: Send + 'static,
    Out: Send + 'static,
{
    /// Batches of at most `max` requests, run with `run`, at most `lanes` at once.
    pub(crate) fn new(ctx: Ctx, max: usize, lanes: usize, run: RunBatch<Ctx, Req, Out>) -> Self {
        ReadBatcher {
            inner: Arc::new(Lanes {
                ctx,
                max: max.max(1),
                lanes: lanes.max(1),
                run,
                state: Mutex::new(LaneState {
                    waiting: Vec::new(),
                    busy: 0,
                }),
            }),
        }
    }

    /// Queues one read; answers once its batch has run. The batch runs on a task of its own, so
    /// a caller that goes away (a client that hung up) takes no one else's answer with it.
    /// (Running a lone read in the caller's own task instead was tried: no difference measured.)
    pub(crate) async fn submit(&self, req: Req) -> Result<Out, Error> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut state = self
                .inner
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if state.waiting.len() >= QUEUE {
                state.waiting.retain(|p| !p.reply.is_closed());
                if state.waiting.len() >= QUEUE {
                    return Err(Error::Unavailable(format!(
                        "every connection is busy and {QUEUE} reads are waiting"
                    )));
                }
            }
            state.waiting.push(Pending { req, reply });
            if state.busy < self.inner.lanes {
                state.busy += 1;
                Some(take(&mut state.waiting, self.inner.max))
            } else {
                None
            }
        };
        if let Some(batch) = start {
            tokio::spawn(lane(self.inner.clone(), batch));
        }
        answer
            .await
            .map_err(|_| Error::Data("the read batch was abandoned".into()))?
    }
}

/// Runs `batch`, then the requests that waited meanwhile, until none is left. A batch that
/// panics answers its requests with an error (their replies are dropped) and frees nothing
/// else: the lane goes on.
async fn lane<Ctx: Clone, Req, Out>(
    lanes: Arc<Lanes<Ctx, Req, Out>>,
    mut batch: Vec<Pending<Req, Out>>,
) {
    use futures_util::FutureExt;
    loop {
        let run = std::panic::AssertUnwindSafe((lanes.run)(lanes.ctx.clone(), batch));
        if run.catch_unwind().await.is_err() {
            tracing::error!("a batch of reads panicked");
        }
        let mut state = lanes
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        batch = take(&mut state.waiting, lanes.max);
        if batch.is_empty() {
            state.busy -= 1;
            return;
        }
    }
}

/// The oldest `max` of `waiting` whose callers still wait for an answer (a client that hung up
/// costs no statement).
fn take<Req, Out>(waiting: &mut Vec<Pending<Req, Out>>, max: usize) -> Vec<Pending<Req, Out>> {
    waiting.retain(|p| !p.reply.is_closed());
    if waiting.len() <= max {
        std::mem::take(waiting)
    } else {
        waiting.drain(..max).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests may unwrap")]

    use super::*;
    use tokio::sync::Semaphore;

    /// What the batches saw (each batch's requests), and a gate each batch waits at before it
    /// answers, so a test decides when a lane is busy.
    struct Probe {
        batches: Mutex<Vec<Vec<u32>>>,
        gate: Semaphore,
    }

    impl Probe {
        /// Each batch's requests so far.
        fn seen(&self) -> Vec<Vec<u32>> {
            self.batches.lock().unwrap().clone()
        }
    }

    type Reads = ReadBatcher<Arc<Probe>, u32, u32>;

    /// Answers each request twice its value; a batch holding 666 panics instead.
    fn double(
        probe: Arc<Probe>,
        batch: Vec<Pending<u32, u32>>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            probe
                .batches
                .lock()
                .unwrap()
                .push(batch.iter().map(|p| p.req).collect());
            probe.gate.acquire().await.unwrap().forget();
            assert!(batch.iter().all(|p| p.req != 666), "a batch that panics");
            for p in batch {
                let _ = p.reply.send(Ok(p.req * 2));
            }
        })
    }

    fn reads(lanes: usize) -> (Arc<Reads>, Arc<Probe>) {
        let probe = Arc::new(Probe {
            batches: Mutex::new(Vec::new()),
            gate: Semaphore::new(0),
        });
        (
            Arc::new(ReadBatcher::new(probe.clone(), 100, lanes, double)),
            probe,
        )
    }

    /// One lane, busy with a first read (1) until the gate opens; that read's handle.
    async fn one_lane_busy() -> (
        Arc<Reads>,
        Arc<Probe>,
        tokio::task::JoinHandle<Result<u32, Error>>,
    ) {
        let (reads, probe) = reads(1);
        let first = submit(&reads, 1);
        until(|| probe.seen().len() == 1).await;
        (reads, probe, first)
    }

    fn waiting(reads: &Reads) -> usize {
        reads.inner.state.lock().unwrap().waiting.len()
    }

    fn busy(reads: &Reads) -> usize {
        reads.inner.state.lock().unwrap().busy
    }

    async fn until(mut done: impl FnMut() -> bool) {
        for _ in 0..10_000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the condition never held");
    }

    fn submit(reads: &Arc<Reads>, n: u32) -> tokio::task::JoinHandle<Result<u32, Error>> {
        let reads = reads.clone();
        tokio::spawn(async move { reads.submit(n).await })
    }

    #[tokio::test]
    async fn reads_that_wait_for_a_lane_form_the_next_batch_and_each_gets_its_own_answer() {
        let (reads, probe, first) = one_lane_busy().await;
        let rest: Vec<_> = (2..=10).map(|n| submit(&reads, n)).collect();
        until(|| waiting(&reads) == 9).await;
        probe.gate.add_permits(2);
        assert_eq!(first.await.unwrap().unwrap(), 2);
        for (n, r) in (2..=10).zip(rest) {
            assert_eq!(r.await.unwrap().unwrap(), n * 2);
        }
        assert_eq!(probe.seen(), vec![vec![1], (2..=10).collect::<Vec<_>>()]);
        until(|| busy(&reads) == 0).await;
    }

    #[tokio::test]
    async fn a_read_whose_caller_hung_up_costs_no_statement() {
        let (reads, probe, first) = one_lane_busy().await;
        let gone = submit(&reads, 2);
        until(|| waiting(&reads) == 1).await;
        gone.abort();
        let _ = gone.await;
        let kept = submit(&reads, 3);
        until(|| waiting(&reads) == 2).await;
        probe.gate.add_permits(2);
        assert_eq!(first.await.unwrap().unwrap(), 2);
        assert_eq!(kept.await.unwrap().unwrap(), 6);
        assert_eq!(probe.seen(), vec![vec![1], vec![3]]);
    }

    #[tokio::test]
    async fn a_batch_that_panics_fails_its_reads_and_the_lane_goes_on() {
        let (reads, probe) = reads(1);
        probe.gate.add_permits(10);
        assert!(submit(&reads, 666).await.unwrap().is_err());
        assert_eq!(submit(&reads, 4).await.unwrap().unwrap(), 8);
        until(|| busy(&reads) == 0).await;
    }

    #[tokio::test]
    async fn lanes_run_at_once_up_to_their_number() {
        let (reads, probe) = reads(3);
        let running: Vec<_> = (1..=3).map(|n| submit(&reads, n)).collect();
        until(|| probe.seen().len() == 3).await;
        let queued = submit(&reads, 4);
        until(|| waiting(&reads) == 1).await;
        assert_eq!(busy(&reads), 3);
        probe.gate.add_permits(4);
        for r in running {
            r.await.unwrap().unwrap();
        }
        assert_eq!(queued.await.unwrap().unwrap(), 8);
        until(|| busy(&reads) == 0).await;
    }

    #[tokio::test]
    async fn past_the_cap_a_read_is_refused_as_unavailable() {
        let (reads, probe, first) = one_lane_busy().await;
        let queued: Vec<_> = (0..QUEUE as u32)
            .map(|n| submit(&reads, n + 1000))
            .collect();
        until(|| waiting(&reads) == QUEUE).await;
        let refused = reads.submit(0).await.unwrap_err();
        assert!(matches!(refused, Error::Unavailable(_)), "{refused}");
        probe.gate.add_permits(1000);
        first.await.unwrap().unwrap();
        for r in queued {
            r.await.unwrap().unwrap();
        }
    }
}
