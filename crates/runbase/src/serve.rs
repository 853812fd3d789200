//! `runbase serve`: the API, the worker and the dashboard in one process, or (`--role`) the API
//! and the dashboard alone, or the worker alone.

use crate::config::Config;
use crate::role::{self, Role};
use anyhow::{Context, bail};
use runbase_domain::catalog::Catalog;
use runbase_domain::inflight::InFlight;
use runbase_domain::payments::PaymentProvider;
use runbase_domain::ratelimit::RateLimit;
use runbase_domain::store::Store;
use runbase_domain::time::Timestamp;
use runbase_http::{AppState, HttpConfig, Limits, Shared};
use runbase_providers::Providers;
use runbase_worker::{Worker, WorkerConfig};
use std::sync::Arc;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// The built-in catalogue plus configured files. Routes whose provider is not configured here
/// are dropped; a model left with none stays listed as unavailable (test keys can run it).
pub fn load_catalog(config: &Config, providers: &Providers) -> anyhow::Result<Catalog> {
    let mut catalog = Catalog::builtin().map_err(anyhow::Error::msg)?;
    for file in &config.catalog {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading catalogue {}", file.display()))?;
        catalog
            .merge_toml(&text)
            .map_err(|e| anyhow::anyhow!("catalogue {}: {e}", file.display()))?;
    }
    for m in catalog.models() {
        for r in &m.routes {
            if let Some(problem) = providers.route_problem(r) {
                tracing::warn!(model.id = %m.id, "route not used: {problem}");
            }
        }
    }
    catalog
        .restrict_routes(|r| providers.can_route(r))
        .map_err(anyhow::Error::msg)?;
    let unavailable: Vec<&str> = catalog
        .models()
        .iter()
        .filter(|m| !m.is_available())
        .map(|m| m.id.as_str())
        .collect();
    if !unavailable.is_empty() {
        tracing::info!(
            models = %unavailable.join(", "),
            "models without a configured provider are offered to test keys only"
        );
    }
    Ok(catalog)
}

pub async fn run(config: Config, warnings: Vec<String>, migrate: bool) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log));
    use std::io::IsTerminal;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_format == "json" {
        // One object per line; the request span's fields (`request_id`, route) go with each.
        logs.json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
    for w in warnings {
        tracing::warn!("{w}");
    }

    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let role = Role::from_config(&config);
    for w in role::warnings(role, &config) {
        tracing::warn!("{w}");
    }
    let schema = if migrate {
        crate::database::Schema::Migrate
    } else {
        crate::database::Schema::MustBeCurrent
    };
    let store: Arc<dyn Store> = crate::database::open(&config, schema).await?;
    // Held until the process exits.
    let _worker_lock = if role.executes_runs() && role::is_sqlite(&config) {
        Some(role::lock_sqlite_worker(&config)?)
    } else {
        None
    };
    if role.executes_runs() {
        // SQLite: every run still `processing` was this node's. PostgreSQL: only runs whose
        // lease ran out (see `Store::recover_interrupted`).
        let (requeued, failed) = store
            .recover_interrupted(config.worker.max_attempts, Timestamp::now())
            .await
            .context("recovering runs interrupted by the last stop")?;
        if requeued + failed > 0 {
            tracing::warn!(
                requeued,
                failed,
                "recovered runs interrupted by the last stop"
            );
        }
    }

    let providers = Providers::from_config(&config.providers, |var| std::env::var(var).ok())
        .map_err(anyhow::Error::msg)?;
    tracing::info!(providers = %providers.names().join(", "), "providers configured");
    let catalog = Arc::new(load_catalog(&config, &providers)?);
    let files =
        runbase_files::open(&config.storage, &config.data_dir).map_err(anyhow::Error::msg)?;
    let inflight = InFlight::default();
    let trusted_proxies = config
        .trusted_proxies
        .iter()
        .map(|p| {
            p.parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    anyhow::anyhow!("trusted_proxies: {p:?} is not an IP address or CIDR block")
                })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let payments = runbase_payments::Stripe::from_config(&config.payments.stripe, |var| {
        std::env::var(var).ok()
    })
    .map_err(|e| anyhow::anyhow!("payments.stripe: {e}"))?
    .map(|s| Arc::new(s) as Arc<dyn PaymentProvider>);
    tracing::info!(
        payments = payments.as_ref().map_or("off", |p| p.name()),
        "top-ups"
    );

    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    // Metrics are counted only when someone can read them.
    let (metrics, metrics_listener) = match &config.metrics_listen {
        Some(at) => {
            let l = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("listening for metrics on {at}"))?;
            (Some(Arc::new(crate::metrics::Prometheus::new())), Some(l))
        }
        None => (None, None),
    };
    let events: Arc<dyn runbase_domain::metrics::Metrics> = match &metrics {
        Some(m) => m.clone(),
        None => Arc::new(runbase_domain::metrics::NoMetrics),
    };
    let public_url = match &config.public_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => format!("http://{addr}"),
    };
    if !public_url.starts_with("http://") && !public_url.starts_with("https://") {
        bail!("public_url must start with http:// or https://");
    }
    // Uploads and earlier outputs named in a run's input are read from storage, not fetched.
    providers.read_own_files_from(&public_url, files.clone());

    let limit = |l: crate::config::Limit| RateLimit {
        requests: l.requests,
        window: Duration::from_secs(l.window_secs),
    };
    let limits = Limits {
        runs: limit(config.rate_limits.runs),
        auth: limit(config.rate_limits.auth),
        session: limit(config.rate_limits.session),
    };
    let limiters = crate::limiters::build(&config, limits).await?;
    let state = AppState::new(Shared {
        store: store.clone(),
        catalog: catalog.clone(),
        files: files.clone(),
        runs_limiter: limiters.runs,
        auth_limiter: limiters.auth,
        session_limiter: limiters.session,
        payments,
        inflight: inflight.clone(),
        recent_keys: Arc::default(),
        metrics: events.clone(),
        idempotency_keys: Arc::default(),
        upload_slots: Arc::new(runbase_http::upload_slots::UploadSlots::new(
            config.uploads.max_concurrent,
            config.uploads.max_concurrent_per_account,
            config.uploads.max_concurrent_per_ip,
        )),
        run_events: runbase_domain::events::RunEvents::start(
            store.run_changes(),
            config.events.limits(),
        ),
        config: Arc::new(HttpConfig {
            trusted_proxies,
            max_body_bytes: 1 << 20,
            limits,
            public_url: public_url.clone(),
            max_upload_bytes: config.uploads.max_bytes,
            upload_quota: runbase_domain::uploads::UploadQuota::from_config(
                config.uploads.quota_bytes_per_account,
                config.uploads.uncredited_quota_bytes,
                config.uploads.uncredited_total_bytes,
            ),
            upload_retention_days: config.uploads.retention_days,
            signup_credit: config
                .accounts
                .signup_credit()
                .map_err(anyhow::Error::msg)?,
        }),
    });

    let shutdown = shutdown_signal()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = Worker {
        store: store.clone(),
        catalog,
        providers,
        files,
        inflight,
        config: WorkerConfig {
            concurrency: config.worker.concurrency,
            intake: config.worker.intake(),
            poll_interval: Duration::from_millis(config.worker.poll_interval_ms.max(10)),
            public_url: public_url.clone(),
            shutdown_grace: Duration::from_secs(10),
            lease: Duration::from_millis(config.worker.lease_ms),
            max_attempts: config.worker.max_attempts,
        },
        executing: Default::default(),
        metrics: events.clone(),
    };
    // Run webhooks are sent by the nodes that execute runs, from the store's outbox.
    let dispatcher_task = role.executes_runs().then(|| {
        let w = &config.webhooks;
        let dispatcher = runbase_worker::webhooks::Dispatcher {
            store: store.clone(),
            config: runbase_worker::webhooks::DispatcherConfig {
                allow_private_targets: w.allow_private_targets,
                retry: runbase_domain::webhooks::RetryPolicy {
                    base: Duration::from_millis(w.retry_base_ms),
                    max: Duration::from_millis(w.retry_max_ms.max(w.retry_base_ms)),
                    window: Duration::from_secs(w.retry_for_secs),
                },
                timeout: Duration::from_secs(w.timeout_secs),
                poll_interval: Duration::from_millis(w.retry_base_ms.clamp(50, 1000)),
            },
            metrics: events,
        };
        let mut stop = stop_rx.clone();
        tokio::spawn(dispatcher.run(async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    });
    let mut worker_stop = stop_rx.clone();
    let worker_task = role.executes_runs().then(|| {
        tokio::spawn(worker.run(async move {
            let _ = worker_stop.wait_for(|s| *s).await;
        }))
    });
    // Expired uploads are deleted by the nodes that execute runs (the store makes each
    // deletion one node's); every node removes the stale partial files of its storage.
    let retention = role
        .executes_runs()
        .then_some(config.uploads.retention_days)
        .filter(|days| *days > 0);
    let mut sweep_stop = stop_rx.clone();
    let sweep_task = {
        let (store, files) = (store.clone(), state.files.clone());
        tokio::spawn(async move {
            runbase_domain::uploads::sweep_forever(
                store.as_ref(),
                files.as_ref(),
                retention,
                async move {
                    let _ = sweep_stop.wait_for(|s| *s).await;
                },
            )
            .await;
        })
    };

    // Idempotency keys past their 24 hours are deleted now and then (a reused one is replaced
    // anyway), and finished webhook deliveries past `[webhooks] keep_days`; every API node
    // does it, which is harmless.
    let sweeper = role.serves_api().then(|| {
        let store = store.clone();
        let keep_deliveries = (config.webhooks.keep_days > 0)
            .then(|| Duration::from_secs(config.webhooks.keep_days.saturating_mul(86_400)));
        tokio::spawn(async move {
            let every = Duration::from_secs(runbase_domain::idempotency::SWEEP_EVERY_SECS);
            loop {
                tokio::time::sleep(every).await;
                match runbase_domain::idempotency::sweep(store.as_ref()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(keys = n, "expired idempotency keys deleted"),
                    Err(e) => {
                        tracing::warn!(error = %e, "deleting expired idempotency keys failed")
                    }
                }
                if let Some(keep) = keep_deliveries {
                    match runbase_domain::webhooks::sweep(store.as_ref(), keep).await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(deliveries = n, "old webhook deliveries deleted"),
                        Err(e) => {
                            tracing::warn!(error = %e, "deleting old webhook deliveries failed")
                        }
                    }
                }
            }
        })
    });

    tracing::info!(%addr, data_dir = %config.data_dir.display(), role = role.name(), "runbase is ready");
    // The one line on stdout: scripts and tests read the address from it.
    println!("Runbase listening on http://{addr}");

    // Event streams and waiting creates end when the server stops, not when they would.
    let run_events = state.run_events.clone();
    let mut http_stop = stop_rx.clone();
    let serve_config = runbase_http::ServeConfig {
        header_timeout: Duration::from_secs(config.http.header_timeout_secs),
        body_timeout: Duration::from_secs(config.http.body_timeout_secs),
        write_timeout: Duration::from_secs(config.http.write_timeout_secs),
        max_connections: config.http.max_connections,
        max_connections_per_ip: config.http.max_connections_per_ip,
        exempt: state.config.trusted_proxies.clone(),
    };
    // The API and the dashboard, one router; a worker serves only its health and the files.
    let router = if role.serves_api() {
        let oidc =
            runbase_dashboard::oidc::Oidc::from_config(&config.auth).map_err(anyhow::Error::msg)?;
        runbase_dashboard::router(state, oidc)
    } else {
        runbase_http::routes::worker_router(state)
    };
    let server = runbase_http::serve(listener, router, serve_config, async move {
        let _ = http_stop.wait_for(|s| *s).await;
        run_events.close();
    });
    let server = tokio::spawn(server);
    let metrics_task = match (metrics, metrics_listener) {
        (Some(m), Some(l)) => {
            let at = l.local_addr()?;
            tracing::info!(%at, "metrics at /metrics");
            let mut metrics_stop = stop_rx.clone();
            Some(tokio::spawn(crate::metrics::serve(
                l,
                m,
                store.clone(),
                async move {
                    let _ = metrics_stop.wait_for(|s| *s).await;
                },
            )))
        }
        _ => None,
    };
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    if let Some(sweeper) = sweeper {
        sweeper.abort();
    }
    let _ = server.await;
    if let Some(w) = worker_task {
        let _ = w.await;
    }
    let _ = sweep_task.await;
    if let Some(d) = dispatcher_task {
        let _ = d.await;
    }
    if let Some(m) = metrics_task {
        let _ = m.await;
    }
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers at once and returns what resolves on the first of
/// them. Installed before the server answers anything: a signal sent as soon as `/health`
/// answers must start the graceful shutdown, not meet the default action (an abrupt exit).
fn shutdown_signal()
-> anyhow::Result<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(Box::pin(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }))
    }
    #[cfg(not(unix))]
    Ok(Box::pin(async {
        let _ = tokio::signal::ctrl_c().await;
    }))
}
