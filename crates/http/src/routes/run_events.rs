//! `GET /api/v1/runs/{id}/events`: a Server-Sent Events stream of the run's states
//! (`runbase_domain::events`).
//!
//! Each event is named after the run's status, carries the run object exactly as
//! `GET /api/v1/runs/{id}` answers it, and has the id of that state
//! ([`events::event_id`]); the stream ends after the terminal event. A client that reconnects
//! with `Last-Event-ID` gets only the states after that one; one that has seen the terminal
//! event already is answered `204 No Content`, which tells an `EventSource` to stop
//! reconnecting. The request is checked and rate-limited as a GET of the run, once; then the
//! stream holds one of the key's [`StreamLimits::per_key`] slots for at most
//! [`StreamLimits::max_duration`], with a keep-alive comment every [`KEEP_ALIVE`].
//!
//! The key is read again before every later event and every [`StreamLimits::recheck`]: a
//! stream whose key has been disabled, deleted or has expired, or whose allowlist no longer
//! holds the client, ends without sending another event.
//!
//! [`StreamLimits::per_key`]: runbase_domain::events::StreamLimits::per_key
//! [`StreamLimits::max_duration`]: runbase_domain::events::StreamLimits::max_duration
//! [`StreamLimits::recheck`]: runbase_domain::events::StreamLimits::recheck

use super::api_key::{Peer, authorize_runs_and_read, with_rate_headers};
use super::runs::RunIdPath;
use crate::client_ip::client_ip;
use crate::error::HttpError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::Stream;
use runbase_domain::ErrorCode;
use runbase_domain::events::{self, StreamSlot, Watch};
use runbase_domain::run::Run;
use runbase_domain::store::{Store, StoreError};
use runbase_domain::time::Timestamp;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// How often an idle stream sends a comment, so that proxies and clients see it alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One event of a run's stream, as a Server-Sent Events client reads it.
#[derive(utoipa::ToSchema)]
#[schema(as = RunEvent)]
#[allow(dead_code, reason = "a schema only: events are written by `events`")]
pub struct RunEventSchema {
    /// The run's status: `pending`, `processing`, `succeeded`, `failed` or `canceled`.
    #[schema(pattern = "^(pending|processing|succeeded|failed|canceled)$")]
    event: String,
    /// Ordered within the run: send it back as `Last-Event-ID` to resume after it.
    #[schema(pattern = "^[0-9]+$")]
    id: String,
    /// The run object, as `GET /api/v1/runs/{id}` answers it, as JSON text.
    data: String,
}

#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/events",
    operation_id = "streamRunEvents",
    tag = "runs",
    summary = "Server-Sent Events of the status changes of a run of the key's mode, until its last",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The run's id, `run_...`"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event"),
    ),
    responses(
        (status = 200, description = "An event stream: each event is named after the run's status, its data the run object, its id ordered", content_type = "text/event-stream", body = RunEventSchema),
        (status = 204, description = "The run's last event was already seen (`Last-Event-ID`): nothing more will come"),
    ),
)]
pub async fn events(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    id: RunIdPath,
) -> Response {
    // Watching before the first read: a change committed after it is not missed.
    let watch = state.run_events.watch(&id.raw);
    // The same checks as GET of the run, counted once by the runs limiter.
    let (key, rate, run) = match authorize_runs_and_read(&state, &headers, peer, id.run_id()).await
    {
        Ok(ok) => ok,
        Err(resp) => return resp,
    };
    let Some(run) = run else {
        return with_rate_headers(HttpError(ErrorCode::RunNotFound.into()), &rate);
    };
    // An id above the live run's current state names nothing this run has had (it is from
    // another run, or made up): the stream starts from the current state, as without one.
    let seen = last_event_id(&headers)
        .filter(|&seen| run.status.is_terminal() || seen <= events::event_id(&run));
    if run.status.is_terminal() && seen.is_some_and(|seen| seen >= events::event_id(&run)) {
        // Everything was seen: nothing to stream, and an EventSource stops reconnecting.
        return with_rate_headers(StatusCode::NO_CONTENT, &rate);
    }
    let Some(slot) = state.run_events.open_stream(&key.id) else {
        return with_rate_headers(HttpError(ErrorCode::TooManyStreams.into()), &rate);
    };
    let holder = Holder {
        key_id: key.id,
        client: client_ip(peer, &headers, &state.config.trusted_proxies),
    };
    let stream = stream(
        state.store.clone(),
        &state.run_events,
        key.account_id,
        holder,
        run,
        seen,
        Streaming::new(watch, slot, state.metrics.clone()),
    );
    let mut resp = with_rate_headers(
        Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)),
        &rate,
    );
    // Proxies that buffer (nginx) would hold the events back.
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// `Last-Event-ID`, when it is an id this server gave; anything else is no id (the stream
/// starts from the run's current state).
fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get("last-event-id")?.to_str().ok()?.trim();
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// What an open stream holds until it ends: its watch of the run, its key's slot, and its
/// place in the open-streams gauge.
struct Streaming {
    watch: Watch,
    _slot: StreamSlot,
    metrics: Arc<dyn runbase_domain::metrics::Metrics>,
}

impl Streaming {
    fn new(
        watch: Watch,
        slot: StreamSlot,
        metrics: Arc<dyn runbase_domain::metrics::Metrics>,
    ) -> Self {
        metrics.event_streams(1);
        Streaming {
            watch,
            _slot: slot,
            metrics,
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.metrics.event_streams(-1);
    }
}

/// Whose stream it is: its key, and the client's address as the key's allowlist sees it.
#[derive(Clone)]
struct Holder {
    key_id: String,
    client: Option<IpAddr>,
}

impl Holder {
    /// Whether the key may still read the run: it exists, is usable now, and its allowlist (as
    /// it is now) holds the client.
    async fn may_read(&self, store: &dyn Store) -> Result<bool, StoreError> {
        let Some(key) = store.key_by_id(&self.key_id).await? else {
            return Ok(false);
        };
        Ok(key.is_usable(Timestamp::now())
            && (key.allow_ips.is_empty() || self.client.is_some_and(|ip| key.allow_ips.allows(ip))))
    }

    /// Resolves once the key may no longer read (checked every `every`, the first time after a
    /// random part of it); a failed read is logged and tried again, since the next event's own
    /// check fails closed.
    async fn revoked(self, store: Arc<dyn Store>, every: Duration) {
        let mut wait = events::first_recheck(every);
        loop {
            tokio::time::sleep(wait).await;
            wait = every;
            match self.may_read(store.as_ref()).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => tracing::warn!(error = %e, "re-reading an event stream's key failed"),
            }
        }
    }
}

struct Progress {
    store: Arc<dyn Store>,
    account_id: String,
    holder: Holder,
    /// The state read by the request, sent first unless `seen` covers it.
    first: Option<Run>,
    seen: Option<u64>,
    done: bool,
    held: Streaming,
}

/// The events after `seen`, starting with `first` if it is newer; ends after the terminal event,
/// at the maximum duration, when the key may no longer read the run, or when the server stops.
fn stream(
    store: Arc<dyn Store>,
    run_events: &events::RunEvents,
    account_id: String,
    holder: Holder,
    first: Run,
    seen: Option<u64>,
    held: Streaming,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let limits = run_events.limits();
    let revoked = holder.clone().revoked(store.clone(), limits.recheck);
    let progress = Progress {
        store,
        account_id,
        holder,
        first: Some(first),
        seen,
        done: false,
        held,
    };
    let states = futures_util::stream::unfold(progress, |mut p| async move {
        if p.done {
            return None;
        }
        let run = match p.first.take() {
            // The state read, with the key, by the stream's request.
            Some(run) if p.seen.is_none_or(|seen| events::event_id(&run) > seen) => run,
            _ => {
                let run = loop {
                    match events::next_state(p.store.as_ref(), &p.held.watch, &p.account_id, p.seen)
                        .await
                    {
                        Ok(Some(run)) => break run,
                        // The terminal state was sent already, or the run is gone.
                        Ok(None) => return None,
                        Err(e) => {
                            tracing::warn!(error = %e, "reading a run for its event stream failed");
                            p.held.watch.changed().await;
                        }
                    }
                };
                // A key that may no longer read the run, or that cannot be read now, is sent
                // nothing more; its client resumes with `Last-Event-ID` and is checked anew.
                match p.holder.may_read(p.store.as_ref()).await {
                    Ok(true) => run,
                    Ok(false) => return None,
                    Err(e) => {
                        tracing::warn!(error = %e, "re-reading an event stream's key failed");
                        return None;
                    }
                }
            }
        };
        let id = events::event_id(&run);
        p.seen = Some(id);
        p.done = run.status.is_terminal();
        let event = Event::default()
            .event(run.status.as_str())
            .id(id.to_string())
            .json_data(&run)
            .unwrap_or_else(|_| Event::default().comment("unserializable run"));
        Some((Ok(event), p))
    });
    let deadline = tokio::time::sleep(limits.max_duration);
    let closed = run_events.closed();
    // Ends (dropping the watch and the slot) at whichever comes first.
    let ends = futures_util::future::select(
        Box::pin(revoked),
        futures_util::future::select(Box::pin(deadline), Box::pin(closed)),
    );
    futures_util::StreamExt::take_until(states, ends)
}
