//! Waiting for a run to finish, by polling as the public docs advise.

use crate::{Client, Error, Run};
use std::time::Duration;
use tokio::time::Instant;

/// How [`Client::wait_with`] polls.
#[derive(Debug, Clone)]
pub struct WaitOptions {
    /// Between two reads of the run; the docs advise 1–2 s. Default 1 s.
    pub poll_interval: Duration,
    /// Give up (with [`Error::Timeout`]) after this long; `None` (the default) waits as long
    /// as the run takes (the server ends every run at its model's timeout).
    pub timeout: Option<Duration>,
}

impl Default for WaitOptions {
    fn default() -> Self {
        WaitOptions {
            poll_interval: Duration::from_secs(1),
            timeout: None,
        }
    }
}

impl Client {
    /// Polls the run every second until it is `succeeded`, `failed` or `canceled`, and answers
    /// it. A `failed` run is an `Ok`: read its `error`.
    pub async fn wait(&self, id: &str) -> Result<Run, Error> {
        self.wait_with(id, &WaitOptions::default(), |_| {}).await
    }

    /// [`Client::wait`] with options, calling `on_poll` with every state read (for a progress
    /// display). Reads refused with `429` are retried as every call is (1 s, 2 s, 4 s, never
    /// before `Retry-After`).
    pub async fn wait_with(
        &self,
        id: &str,
        options: &WaitOptions,
        mut on_poll: impl FnMut(&Run),
    ) -> Result<Run, Error> {
        // A timeout too long to add to now is no deadline at all.
        let deadline = options.timeout.and_then(|t| Instant::now().checked_add(t));
        let timed_out = |run: Option<Run>| Error::Timeout {
            timeout: options.timeout.unwrap_or_default(),
            run: run.map(Box::new),
        };
        let mut last: Option<Run> = None;
        loop {
            let read = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, self.get(id)).await {
                    Ok(read) => read,
                    Err(_) => return Err(timed_out(last)),
                },
                None => self.get(id).await,
            };
            let run = read?;
            on_poll(&run);
            if run.status.is_terminal() {
                return Ok(run);
            }
            let mut next = Instant::now() + options.poll_interval;
            if let Some(deadline) = deadline {
                if Instant::now() >= deadline {
                    return Err(timed_out(Some(run)));
                }
                next = next.min(deadline);
            }
            last = Some(run);
            tokio::time::sleep_until(next).await;
        }
    }
}
