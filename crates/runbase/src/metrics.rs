//! The operator's metrics in Prometheus' text format, on an address of their own
//! (`--metrics-listen`): the API's requests by route and status with latency histograms, runs
//! created and finished by model, the queue's depth and pickup latency, provider calls' latency
//! and errors, and rate-limit refusals. The API and the worker report events through the
//! domain's [`Metrics`] trait; this is its implementation with `prometheus-client`, the
//! Prometheus project's own Rust client.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use runbase_domain::auth::KeySeen;
use runbase_domain::metrics::Metrics;
use runbase_domain::store::Store;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    model: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderErrorLabels {
    model: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClaimLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    key: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimiterLabels {
    limiter: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds, from half a millisecond to about 9 minutes (doubling).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 21))
}

/// Every metric, registered once.
pub struct Prometheus {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<RouteLabels>,
    runs_created: Family<ModelLabels, Counter>,
    runs_finished: Family<RunLabels, Counter>,
    pickup_seconds: Histogram,
    claims: Family<ClaimLabels, Counter>,
    provider_seconds: Histograms<RunLabels>,
    provider_errors: Family<ProviderErrorLabels, Counter>,
    rate_limited: Family<LimiterLabels, Counter>,
    create_keys: Family<KeyLabels, Counter>,
    webhook_deliveries: Family<OutcomeLabels, Counter>,
    queued: Gauge,
    executing: Gauge,
    event_streams: Gauge,
}

impl Prometheus {
    pub fn new() -> Prometheus {
        let mut registry = Registry::with_prefix("runbase");
        let requests = Family::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            requests.clone(),
        );
        let request_seconds: Histograms<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method",
            request_seconds.clone(),
        );
        let runs_created = Family::default();
        registry.register(
            "runs_created",
            "Runs created (charged and queued), by model",
            runs_created.clone(),
        );
        let runs_finished = Family::default();
        registry.register(
            "runs_finished",
            "Runs ended by a worker of this node, by model and status (succeeded, failed)",
            runs_finished.clone(),
        );
        let pickup_seconds = latency_histogram();
        registry.register(
            "run_pickup_seconds",
            "Time from a run's creation to the start of its provider call on a worker of this node",
            pickup_seconds.clone(),
        );
        let claims = Family::default();
        registry.register(
            "worker_claims",
            "Claims this node's worker made on the queue, by result: full (as many runs as it \
             had free slots), short (fewer) or empty",
            claims.clone(),
        );
        let provider_seconds: Histograms<RunLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "provider_call_duration_seconds",
            "Time a model's provider took, by model and outcome (succeeded, failed, canceled)",
            provider_seconds.clone(),
        );
        let provider_errors = Family::default();
        registry.register(
            "provider_errors",
            "Provider calls that failed, by model and error code",
            provider_errors.clone(),
        );
        let rate_limited = Family::default();
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit, by limiter (runs, auth, session, uploads)",
            rate_limited.clone(),
        );
        let create_keys = Family::default();
        registry.register(
            "create_key_checks",
            "Creates without an idempotency key, by how their key was authenticated: read (its \
             row) or remembered (this node's copy of it, read within the last second; the \
             create's transaction checks the key on the row it locks)",
            create_keys.clone(),
        );
        let webhook_deliveries = Family::default();
        registry.register(
            "webhook_delivery_attempts",
            "Webhook delivery attempts made by this node, by outcome (delivered, retrying, failed)",
            webhook_deliveries.clone(),
        );
        let queued = Gauge::default();
        registry.register(
            "queue_runs_pending",
            "Runs queued, not yet claimed (the whole store)",
            queued.clone(),
        );
        let executing = Gauge::default();
        registry.register(
            "queue_runs_processing",
            "Runs claimed and executing (the whole store)",
            executing.clone(),
        );
        let event_streams = Gauge::default();
        registry.register(
            "event_streams_open",
            "Event streams (GET /api/v1/runs/{id}/events) open on this node",
            event_streams.clone(),
        );
        Prometheus {
            registry,
            requests,
            request_seconds,
            runs_created,
            runs_finished,
            pickup_seconds,
            claims,
            provider_seconds,
            provider_errors,
            rate_limited,
            create_keys,
            webhook_deliveries,
            queued,
            executing,
            event_streams,
        }
    }

    /// The text exposition, with the queue's depth read from the store now.
    pub async fn render(&self, store: &dyn Store) -> Result<String, std::fmt::Error> {
        match store.queue_depth().await {
            Ok((pending, processing)) => {
                self.queued.set(i64::try_from(pending).unwrap_or(i64::MAX));
                self.executing
                    .set(i64::try_from(processing).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::warn!(error = %e, "reading the queue depth for the metrics failed"),
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Metrics for Prometheus {
    fn request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
                method: method.to_owned(),
            })
            .observe(seconds);
    }

    fn rate_limited(&self, limiter: &str) {
        self.rate_limited
            .get_or_create(&LimiterLabels {
                limiter: limiter.to_owned(),
            })
            .inc();
    }

    fn create_authenticated(&self, seen: KeySeen) {
        let key = match seen {
            KeySeen::Read => "read",
            KeySeen::Remembered => "remembered",
        };
        self.create_keys.get_or_create(&KeyLabels { key }).inc();
    }

    fn run_created(&self, model: &str) {
        self.runs_created
            .get_or_create(&ModelLabels {
                model: model.to_owned(),
            })
            .inc();
    }

    fn run_picked_up(&self, waited_seconds: f64) {
        self.pickup_seconds.observe(waited_seconds);
    }

    fn queue_claimed(&self, asked: u32, got: u32) {
        let result = match got {
            0 => "empty",
            n if n < asked => "short",
            _ => "full",
        };
        self.claims.get_or_create(&ClaimLabels { result }).inc();
    }

    fn provider_call(&self, model: &str, outcome: &str, error_code: Option<&str>, seconds: f64) {
        self.provider_seconds
            .get_or_create(&RunLabels {
                model: model.to_owned(),
                status: outcome.to_owned(),
            })
            .observe(seconds);
        if let Some(code) = error_code {
            self.provider_errors
                .get_or_create(&ProviderErrorLabels {
                    model: model.to_owned(),
                    code: code.to_owned(),
                })
                .inc();
        }
    }

    fn event_streams(&self, delta: i64) {
        self.event_streams.inc_by(delta);
    }

    fn webhook_delivery(&self, outcome: &str) {
        self.webhook_deliveries
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    fn run_finished(&self, model: &str, status: &str) {
        self.runs_finished
            .get_or_create(&RunLabels {
                model: model.to_owned(),
                status: status.to_owned(),
            })
            .inc();
    }
}

/// Serves `GET /metrics` on `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Prometheus>,
    store: Arc<dyn Store>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (metrics, store) = (metrics.clone(), store.clone());
            async move {
                match metrics.render(store.as_ref()).await {
                    Ok(text) => (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                        .into_response(),
                    Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }
        }),
    );
    // The API's hardened server with small bounds: a scraper needs a connection or two, and
    // an idle or slow one is closed as on the API's port.
    let config = runbase_http::ServeConfig {
        header_timeout: std::time::Duration::from_secs(10),
        body_timeout: std::time::Duration::from_secs(10),
        write_timeout: std::time::Duration::from_secs(10),
        max_connections: 64,
        max_connections_per_ip: 16,
        exempt: Vec::new(),
    };
    runbase_http::serve(listener, app, config, stop).await
}
