//! `LISTEN` on a connection of its own: a `NOTIFY` sent by any node's `create_run` (or by a
//! reclaim) wakes this node's idle worker, one sent by a cancel names a run this node's
//! worker may be executing, and one on the run channel names a run whose state changed (for
//! event streams and waiting creates; a cancel is such a change too). Reconnects when the
//! connection drops; what was announced meanwhile is lost, which the listeners of run changes
//! make up for by re-reading now and then.

use crate::{CANCEL_CHANNEL, QUEUE_CHANNEL, RUN_CHANNEL};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;

/// What a notification says.
enum Event {
    Queued,
    Canceled(String),
    /// Runs whose state changed: one id, or several comma-separated (the batched successes).
    Changed(String),
}

pub async fn run(
    config: tokio_postgres::Config,
    signal: Arc<Notify>,
    cancels: tokio::sync::broadcast::Sender<String>,
    run_changes: tokio::sync::broadcast::Sender<String>,
) {
    loop {
        match config.connect(tokio_postgres::NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                let event = match n.channel() {
                                    CANCEL_CHANNEL => Event::Canceled(n.payload().to_owned()),
                                    RUN_CHANNEL => Event::Changed(n.payload().to_owned()),
                                    _ => Event::Queued,
                                };
                                if tx.send(event).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "the LISTEN connection failed");
                                return;
                            }
                        }
                    }
                });
                let listen = format!(
                    "LISTEN {QUEUE_CHANNEL}; LISTEN {CANCEL_CHANNEL}; LISTEN {RUN_CHANNEL}"
                );
                match client.batch_execute(&listen).await {
                    Ok(()) => {
                        // Runs queued while we were not listening: look once.
                        signal.notify_one();
                        while let Some(event) = rx.recv().await {
                            // No receiver (no worker, no stream here) is fine.
                            match event {
                                Event::Canceled(run_id) => {
                                    drop(run_changes.send(run_id.clone()));
                                    drop(cancels.send(run_id));
                                }
                                Event::Changed(run_ids) => {
                                    for run_id in run_ids.split(',') {
                                        drop(run_changes.send(run_id.to_owned()));
                                    }
                                }
                                Event::Queued => signal.notify_one(),
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "LISTEN failed"),
                }
                driver.abort();
            }
            Err(e) => tracing::warn!(error = %e, "cannot open the LISTEN connection"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
