//! The webhook dispatcher: claims due deliveries from the store's outbox, POSTs each run's
//! object to its webhook, signed after the Standard Webhooks spec, and records every attempt
//! (and the next one, with backoff, or the end) in the store. Runs in every process that
//! executes runs (`--role all` or `worker`); with several, the store's claims keep two of them
//! from sending the same attempt at once.

use runbase_domain::metrics::Metrics;
use runbase_domain::store::Store;
use runbase_domain::time::Timestamp;
use runbase_domain::webhooks::{self, AttemptResult, DueDelivery, RetryPolicy};
use runbase_providers::http::is_public;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most of a receiver's answer that is read (the rest is dropped with the connection).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// How long a claim on a delivery lasts: far longer than one attempt can take.
const LEASE: Duration = Duration::from_secs(120);
/// How many deliveries one dispatcher sends at once.
const IN_FLIGHT: usize = 64;
/// How many of them may be one account's, and how many are claimed at a time: a receiver that
/// hangs (until the attempt's timeout) holds at most this many of the dispatcher's sends, and
/// every other account's deliveries go on beside it (the review of issue 14 held one account's
/// hanging URL up against everyone's deliveries).
const PER_ACCOUNT: usize = 8;

/// Dispatcher settings (`[webhooks]`).
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Send to loopback, private and other non-public addresses too (for tests and private
    /// networks); otherwise such targets are refused at connect time.
    pub allow_private_targets: bool,
    pub retry: RetryPolicy,
    /// The limit of one attempt, connection to answer.
    pub timeout: Duration,
    /// How often the outbox is looked at.
    pub poll_interval: Duration,
}

/// Sends the outbox's deliveries.
#[derive(Clone)]
pub struct Dispatcher {
    pub store: Arc<dyn Store>,
    pub config: DispatcherConfig,
    pub metrics: Arc<dyn Metrics>,
}

impl Dispatcher {
    /// Sends due deliveries until `shutdown` resolves. Attempts in flight then are dropped:
    /// their claims run out and the next dispatcher sends them again.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let client = build_client(self.config.timeout, None);
        tokio::pin!(shutdown);
        // Sends in flight, the account of each (by task, so that even a send that panicked
        // gives its share back), and how many each account has.
        let mut sends = tokio::task::JoinSet::new();
        let mut account_of: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut per_account: HashMap<String, usize> = HashMap::new();
        // Whether to look at the outbox now: after a full claim (there may be more), when the
        // poll interval has passed since a claim came back short, or when a send ends for an
        // account that claim left out (its deliveries may be waiting). Not after every send:
        // an empty outbox is not asked again for each delivery that ends.
        let mut look = true;
        let mut left_out: Vec<String> = Vec::new();
        let mut next_poll = tokio::time::Instant::now();
        loop {
            // Claim while there is room, a few at a time, leaving out the accounts that already
            // have their share in flight.
            while look && sends.len() < IN_FLIGHT {
                let now = Timestamp::now();
                let until = Timestamp(now.0.saturating_add(LEASE.as_micros() as i64));
                let busy: Vec<String> = per_account
                    .iter()
                    .filter(|&(_, &n)| n >= PER_ACCOUNT)
                    .map(|(a, _)| a.clone())
                    .collect();
                let want = PER_ACCOUNT.min(IN_FLIGHT - sends.len());
                let due = match self
                    .store
                    .claim_deliveries(want as u32, now, until, &busy)
                    .await
                {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::error!(error = %e, "claiming webhook deliveries failed");
                        look = false;
                        next_poll = tokio::time::Instant::now() + self.config.poll_interval;
                        break;
                    }
                };
                let got = due.len();
                for d in due {
                    *per_account.entry(d.account_id.clone()).or_insert(0) += 1;
                    let account = d.account_id.clone();
                    let (me, client) = (self.clone(), client.clone());
                    let task = sends.spawn(async move { me.deliver(&client, d).await });
                    account_of.insert(task.id(), account);
                }
                if got < want {
                    // The outbox has no more due for the accounts asked about.
                    look = false;
                    left_out = busy;
                    next_poll = tokio::time::Instant::now() + self.config.poll_interval;
                    break;
                }
            }
            // Then wait for a send to end (room again), the next look at the outbox, or the end.
            tokio::select! {
                Some(done) = sends.join_next_with_id(), if !sends.is_empty() => {
                    let task = match done {
                        Ok((id, ())) => id,
                        Err(e) => e.id(),
                    };
                    if let Some(account) = account_of.remove(&task) {
                        if left_out.contains(&account) {
                            look = true;
                        }
                        if let Some(n) = per_account.get_mut(&account) {
                            *n -= 1;
                            if *n == 0 {
                                per_account.remove(&account);
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(next_poll), if !look => {
                    look = true;
                }
                _ = &mut shutdown => return,
            }
        }
    }

    async fn deliver(&self, client: &reqwest::Client, d: DueDelivery) {
        let attempt = d.attempts + 1;
        let started = Instant::now();
        let at = Timestamp::now();
        let outcome = self.send(client, &d).await;
        let latency_ms = started.elapsed().as_millis() as u64;
        let (http_status, error, permanent) = match outcome {
            Ok(status) if (200..300).contains(&status) => (Some(status), None, false),
            Ok(status) => (
                Some(status),
                Some(format!("the receiver answered status {status}")),
                false,
            ),
            Err(Failure { message, permanent }) => (None, Some(message), permanent),
        };
        let next_attempt_at = match (&error, permanent) {
            (None, _) | (Some(_), true) => None,
            (Some(_), false) => self
                .config
                .retry
                .next(attempt, d.created_at, Timestamp::now()),
        };
        let outcome = match (&error, next_attempt_at) {
            (None, _) => "delivered",
            (Some(_), Some(_)) => "retrying",
            (Some(_), None) => "failed",
        };
        self.metrics.webhook_delivery(outcome);
        match &error {
            None => {
                tracing::info!(webhook.id = %d.id, run.id = %d.run_id, event = %d.event, attempt, "webhook delivered")
            }
            Some(e) => {
                tracing::warn!(webhook.id = %d.id, run.id = %d.run_id, event = %d.event, attempt, error = %e, outcome, "webhook attempt failed")
            }
        }
        let result = AttemptResult {
            delivery_id: d.id.clone(),
            attempt,
            at,
            http_status,
            latency_ms,
            error,
            next_attempt_at,
        };
        if let Err(e) = self.store.record_delivery_attempt(&result).await {
            // Its claim runs out and the attempt is made again: at least once, not at most.
            tracing::error!(webhook.id = %d.id, error = %e, "recording a webhook attempt failed");
        }
    }

    /// One attempt: the HTTP status of the answer, or why there was none.
    async fn send(&self, shared: &reqwest::Client, d: &DueDelivery) -> Result<u16, Failure> {
        let run = self
            .store
            .get_run(&d.account_id, &d.run_id)
            .await
            .map_err(|e| Failure::retry(format!("the run could not be read ({e})")))?
            .ok_or_else(|| Failure::permanent("the run no longer exists".into()))?;
        let body = serde_json::to_vec(&run)
            .map_err(|e| Failure::permanent(format!("the run could not be encoded ({e})")))?;
        let secrets = self
            .store
            .webhook_secrets(&d.account_id, &webhooks::new_secret(), Timestamp::now())
            .await
            .map_err(|e| Failure::retry(format!("the signing secret could not be read ({e})")))?;
        let url = reqwest::Url::parse(&d.url)
            .map_err(|_| Failure::permanent("the webhook URL is not valid".into()))?;
        let pinned;
        let client = if self.config.allow_private_targets {
            shared
        } else {
            let addr = public_address(&url).await?;
            let host = url.host_str().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            pinned = build_client(self.config.timeout, Some((host, addr)));
            &pinned
        };
        let now = Timestamp::now();
        let ts = now.0.div_euclid(1_000_000);
        let signature = secrets.signature_header(now, &d.id, ts, &body);
        let mut resp = client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &d.id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                Failure::retry(if e.is_timeout() {
                    format!("no answer within {} s", self.config.timeout.as_secs())
                } else if e.is_connect() {
                    "the connection failed".to_owned()
                } else {
                    "the request failed".to_owned()
                })
            })?;
        let status = resp.status().as_u16();
        // Read (a bounded part of) the answer, within the same timeout, then drop the rest.
        let mut read = 0usize;
        while read < MAX_RESPONSE_BYTES {
            match resp.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                _ => break,
            }
        }
        Ok(status)
    }
}

struct Failure {
    message: String,
    permanent: bool,
}

impl Failure {
    fn retry(message: String) -> Self {
        Failure {
            message,
            permanent: false,
        }
    }
    fn permanent(message: String) -> Self {
        Failure {
            message,
            permanent: true,
        }
    }
}

/// The address to connect to, when every address of the URL's host is public. A host that
/// resolves to a private address is refused for good (the delivery is given up).
async fn public_address(url: &reqwest::Url) -> Result<std::net::SocketAddr, Failure> {
    let host = url
        .host_str()
        .ok_or_else(|| Failure::permanent("the webhook URL has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|_| Failure::retry("the host could not be resolved".into()))?
        .collect();
    if addrs.is_empty() {
        return Err(Failure::retry("the host could not be resolved".into()));
    }
    if addrs.iter().any(|a| !is_public(a.ip())) {
        return Err(Failure::permanent(
            "refused: the target is not a public address (the operator may allow private targets with [webhooks] allow_private_targets)".into(),
        ));
    }
    Ok(addrs[0])
}

/// A client that follows no redirects; with `pin`, it connects only to the checked address
/// (no second DNS answer can send it elsewhere).
fn build_client(timeout: Duration, pin: Option<(&str, std::net::SocketAddr)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("runbase-webhooks/", env!("CARGO_PKG_VERSION")));
    if let Some((host, addr)) = pin {
        b = b.resolve(host, addr);
    }
    b.build().unwrap_or_default()
}
