//! The driver: executes one run through the model's routes. It owns everything adapters do
//! not: the per-model timeout, retries with backoff on transient errors (429, 5xx, dropped
//! connections), falling back to the next route, cancelling the upstream job when the run is
//! canceled or times out, and copying output files out of the provider.

use crate::Providers;
use crate::http::{self, Fetched};
use runbase_domain::catalog::{Model, Route};
use runbase_domain::provider::{
    FileData, Job, Progress, Provider, ProviderError, ProviderOutput, RunRequest, Submitted,
};
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Retry policy for transient upstream errors.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts after the first, per route.
    pub max_retries: u32,
    /// First pause; doubled each attempt.
    pub base_backoff: Duration,
    /// Longest pause (also caps a provider's `Retry-After`).
    pub max_backoff: Duration,
    /// Consecutive failed polls tolerated before the job is given up.
    pub max_poll_errors: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_poll_errors: 5,
        }
    }
}

/// An output file with its bytes, ready to store.
pub struct ReadyFile {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// What a run produced.
pub struct ReadyOutput {
    pub fields: Map<String, Value>,
    pub files: Vec<ReadyFile>,
}

/// How an execution ended.
pub enum Execution {
    Succeeded(ReadyOutput),
    Failed(ProviderError),
    /// The run was canceled while executing (the store has already refunded it).
    Canceled,
}

/// The job being worked on, for cancelling it from outside the attempt.
type Current = Arc<Mutex<Option<(usize, Option<Job>)>>>;

impl Providers {
    /// Executes a run of `model` with `input`. `test` runs go to the simulator. Stops early
    /// when `cancel` is notified.
    pub async fn execute(
        &self,
        run_id: &str,
        model: &Model,
        input: &Value,
        test: bool,
        cancel: &Notify,
    ) -> Execution {
        let routes: Vec<(Route, Arc<dyn Provider>)> = if test {
            vec![(crate::simulator::route(), self.simulator.clone())]
        } else {
            model
                .routes
                .iter()
                .filter_map(|r| self.adapter(&r.provider).map(|p| (r.clone(), p)))
                .collect()
        };
        if routes.is_empty() {
            return Execution::Failed(ProviderError::new(
                "model_unavailable",
                format!("No provider is configured for {}", model.id),
            ));
        }
        let current: Current = Arc::default();
        let work = self.through_routes(run_id, model, input, &routes, &current);
        let ended = tokio::select! {
            r = tokio::time::timeout(model.timeout, work) => match r {
                Ok(Ok(out)) => return Execution::Succeeded(out),
                Ok(Err(e)) => return Execution::Failed(e),
                Err(_) => Execution::Failed(ProviderError::new(
                    "timeout",
                    format!("The model did not finish within {} s", model.timeout.as_secs()),
                )),
            },
            _ = cancel.notified() => Execution::Canceled,
        };
        // Timed out or canceled: ask the provider to stop, so it does not keep working (and
        // billing) for a run nobody will read.
        let job = current.lock().map(|c| c.clone()).unwrap_or(None);
        if let Some((i, job)) = job {
            let (route, provider) = &routes[i];
            let req = RunRequest {
                run_id,
                model,
                route,
                input,
            };
            match tokio::time::timeout(Duration::from_secs(10), provider.cancel(&req, job.as_ref()))
                .await
            {
                Ok(Ok(())) => tracing::info!(provider = %route.provider, "upstream job canceled"),
                Ok(Err(e)) => {
                    tracing::warn!(provider = %route.provider, error = %e, "canceling the upstream job failed")
                }
                Err(_) => {
                    tracing::warn!(provider = %route.provider, "canceling the upstream job timed out")
                }
            }
        }
        ended
    }

    async fn through_routes(
        &self,
        run_id: &str,
        model: &Model,
        input: &Value,
        routes: &[(Route, Arc<dyn Provider>)],
        current: &Current,
    ) -> Result<ReadyOutput, ProviderError> {
        let mut last = None;
        for (i, (route, provider)) in routes.iter().enumerate() {
            let req = RunRequest {
                run_id,
                model,
                route,
                input,
            };
            match self.with_retries(i, &req, provider.as_ref(), current).await {
                Ok(out) => return Ok(out),
                // Transient failures that outlasted the retries move on to the next route; a
                // final answer (the model failed, the input was refused) is the run's answer.
                Err(e) if e.is_retryable() && i + 1 < routes.len() => {
                    tracing::warn!(provider = %route.provider, error = %e, "route failed; falling back");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ProviderError::new("model_unavailable", "no route left")))
    }

    async fn with_retries(
        &self,
        route_index: usize,
        req: &RunRequest<'_>,
        provider: &dyn Provider,
        current: &Current,
    ) -> Result<ReadyOutput, ProviderError> {
        let policy = &self.retry;
        let mut attempt = 0;
        loop {
            if let Ok(mut c) = current.lock() {
                *c = Some((route_index, None));
            }
            match self.attempt(route_index, req, provider, current).await {
                Ok(out) => return Ok(out),
                Err(e) if e.is_retryable() && attempt < policy.max_retries => {
                    let pause = backoff(policy, attempt, e.retry_after);
                    tracing::info!(provider = %req.route.provider, attempt, error = %e, pause_ms = pause.as_millis() as u64, "retrying");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One submission, polled to the end, with its files fetched.
    async fn attempt(
        &self,
        route_index: usize,
        req: &RunRequest<'_>,
        provider: &dyn Provider,
        current: &Current,
    ) -> Result<ReadyOutput, ProviderError> {
        let out = match provider.submit(req).await? {
            Submitted::Done(out) => out,
            Submitted::Started(job) => {
                if let Ok(mut c) = current.lock() {
                    *c = Some((route_index, Some(job.clone())));
                }
                self.poll_until_done(req, provider, &job).await?
            }
        };
        self.fetch_files(out).await
    }

    async fn poll_until_done(
        &self,
        req: &RunRequest<'_>,
        provider: &dyn Provider,
        job: &Job,
    ) -> Result<ProviderOutput, ProviderError> {
        let mut errors = 0;
        loop {
            tokio::time::sleep(provider.poll_interval()).await;
            match provider.poll(req, job).await {
                Ok(Progress::Running) => errors = 0,
                Ok(Progress::Done(out)) => return Ok(out),
                Err(e) if e.is_retryable() && errors < self.retry.max_poll_errors => {
                    errors += 1;
                    tracing::info!(provider = %req.route.provider, error = %e, "poll failed; polling again");
                    if let Some(after) = e.retry_after {
                        tokio::time::sleep(after.min(self.retry.max_backoff)).await;
                    }
                }
                // The job may still be running upstream: submitting it again could run it
                // twice, so a poll that keeps failing ends the run instead of retrying it.
                Err(e) => {
                    return Err(ProviderError {
                        retry: runbase_domain::provider::Retry::No,
                        ..e
                    });
                }
            }
        }
    }

    /// Turns every file into bytes: URLs are downloaded (a few tries), data URIs decoded.
    async fn fetch_files(&self, out: ProviderOutput) -> Result<ReadyOutput, ProviderError> {
        let mut files = Vec::with_capacity(out.files.len());
        for f in out.files {
            let (bytes, fetched_type) = match f.data {
                FileData::Bytes(b) => (b, None),
                FileData::Url(url) => {
                    let Fetched {
                        bytes,
                        content_type,
                    } = self.fetch_with_retries(&url).await?;
                    (bytes, content_type)
                }
            };
            let content_type = if f.content_type.is_empty() {
                fetched_type.unwrap_or_else(|| "application/octet-stream".into())
            } else {
                f.content_type
            };
            files.push(ReadyFile {
                name: f.name,
                content_type,
                bytes,
            });
        }
        Ok(ReadyOutput {
            fields: out.fields,
            files,
        })
    }

    async fn fetch_with_retries(&self, url: &str) -> Result<Fetched, ProviderError> {
        let mut attempt = 0;
        loop {
            match http::fetch(&self.client, url).await {
                Ok(f) => return Ok(f),
                Err(e) if e.is_retryable() && attempt < self.retry.max_retries => {
                    tokio::time::sleep(backoff(&self.retry, attempt, e.retry_after)).await;
                    attempt += 1;
                }
                Err(e) => {
                    return Err(ProviderError {
                        code: "output_unavailable".into(),
                        message: format!(
                            "The model's output file could not be fetched: {}",
                            e.message
                        ),
                        retry: runbase_domain::provider::Retry::No,
                        retry_after: None,
                    });
                }
            }
        }
    }
}

/// The pause before retry `attempt` (0-based): exponential with jitter, at least what the
/// provider asked for, at most `max_backoff`.
fn backoff(policy: &RetryPolicy, attempt: u32, asked: Option<Duration>) -> Duration {
    let exp = policy
        .base_backoff
        .saturating_mul(1u32 << attempt.min(16))
        .min(policy.max_backoff);
    // Up to 25% jitter, so many runs hitting one 429 do not retry in lockstep.
    let jitter = exp.mul_f64(rand::random::<f64>() * 0.25);
    (exp + jitter)
        .max(asked.unwrap_or_default())
        .min(policy.max_backoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_honours_retry_after_and_is_capped() {
        let p = RetryPolicy {
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            ..RetryPolicy::default()
        };
        let b0 = backoff(&p, 0, None);
        assert!(b0 >= Duration::from_millis(100) && b0 <= Duration::from_millis(125));
        let b2 = backoff(&p, 2, None);
        assert!(b2 >= Duration::from_millis(400) && b2 <= Duration::from_millis(500));
        assert_eq!(
            backoff(&p, 0, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert_eq!(
            backoff(&p, 10, Some(Duration::from_secs(60))),
            Duration::from_secs(2)
        );
    }
}
