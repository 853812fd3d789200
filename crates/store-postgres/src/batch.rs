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
