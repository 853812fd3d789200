//! A node's queue of writes of one kind, written in batches: what arrives while a batch is being
//! written forms the next one, so under load each commit carries many writes and at rest a
//! write waits for nobody. One batch of a kind is written at a time (measured: a second batch
//! in flight only split the waiting writes into smaller batches queued on the same row locks;
//! BENCHMARKS.md, issue 13).

use crate::Error;
use std::future::Future;
use std::pin::Pin;
use tokio::sync::{mpsc, oneshot};

/// Writes waiting for a batch before callers wait for room (back-pressure).
const QUEUE: usize = 8192;

/// One write waiting in a batch, and where its outcome goes.
pub(crate) struct Pending<Req, Out> {
    pub req: Req,
    pub reply: oneshot::Sender<Result<Out, Error>>,
}

/// Writes a whole batch with what it needs (`Ctx`: the pool, and for creates the worker's
/// handoff) and answers each of its writes.
pub(crate) type WriteBatch<Ctx, Req, Out> =
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
        write: WriteBatch<Ctx, Req, Out>,
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
    write: WriteBatch<Ctx, Req, Out>,
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
