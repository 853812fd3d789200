//! `LISTEN` on a connection of its own: a `NOTIFY` sent by any node's `create_run` (or by a
//! reclaim) wakes this node's idle worker, and one sent by a cancel names a run this node's
//! worker may be executing. Reconnects when the connection drops.

use crate::{CANCEL_CHANNEL, QUEUE_CHANNEL};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;

pub async fn run(
    config: tokio_postgres::Config,
    signal: Arc<Notify>,
    cancels: tokio::sync::broadcast::Sender<String>,
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
                                let event = if n.channel() == CANCEL_CHANNEL {
                                    Some(n.payload().to_owned())
                                } else {
                                    None
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
                let listen = format!("LISTEN {QUEUE_CHANNEL}; LISTEN {CANCEL_CHANNEL}");
                match client.batch_execute(&listen).await {
                    Ok(()) => {
                        // Runs queued while we were not listening: look once.
                        signal.notify_one();
                        while let Some(event) = rx.recv().await {
                            match event {
                                // No receiver (no worker here) is fine.
                                Some(run_id) => drop(cancels.send(run_id)),
                                None => signal.notify_one(),
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
