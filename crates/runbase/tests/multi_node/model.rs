//! A model server speaking Cog's protocol that counts, at the model, every prediction it is
//! asked for: by run id (Runbase uses the run id as the prediction id), with the worker that
//! asked (each worker's catalogue points at its own path, `/{node}/predictions/{id}`) and how
//! the request ended.
//!
//! The prompt says what the model does: `hold:...` holds the prediction until it is canceled
//! (`POST /{node}/predictions/{id}/cancel`) or its connection drops; `hold-first:...` holds
//! only the first attempt of a run and answers later ones; anything else is answered at once
//! with `"<prompt> ran on <node>"`.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How one prediction request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still being answered.
    InFlight,
    /// Answered `succeeded`: the model ran to the end.
    Succeeded,
    /// Answered `canceled` after a cancel request.
    Canceled,
    /// The client went away before the answer (its connection closed).
    Dropped,
}

#[derive(Debug, Clone)]
pub struct Attempt {
    pub node: String,
    pub outcome: Outcome,
}

#[derive(Default)]
pub struct Seen {
    /// Per run id, every prediction request in arrival order.
    attempts: Mutex<HashMap<String, Vec<Attempt>>>,
    /// Cancel requests: (node, run id).
    cancels: Mutex<Vec<(String, String)>>,
    /// Per run id, what releases a held prediction.
    release: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Seen {
    /// Every run id with its attempts.
    pub fn all(&self) -> HashMap<String, Vec<Attempt>> {
        self.attempts.lock().unwrap().clone()
    }

    pub fn attempts(&self, id: &str) -> Vec<Attempt> {
        self.attempts
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    pub fn cancels(&self) -> Vec<(String, String)> {
        self.cancels.lock().unwrap().clone()
    }

    /// Polls until `done` holds for the attempts of `id` (up to 30 s); returns them.
    pub async fn wait_for(
        &self,
        id: &str,
        what: &str,
        done: impl Fn(&[Attempt]) -> bool,
    ) -> Vec<Attempt> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let a = self.attempts(id);
            if done(&a) {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "the model never saw {what} for {id}: {a:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn begin(&self, id: &str, node: &str) -> usize {
        let mut m = self.attempts.lock().unwrap();
        let list = m.entry(id.to_owned()).or_default();
        list.push(Attempt {
            node: node.to_owned(),
            outcome: Outcome::InFlight,
        });
        list.len() - 1
    }

    fn end(&self, id: &str, index: usize, outcome: Outcome) {
        if let Some(a) = self
            .attempts
            .lock()
            .unwrap()
            .get_mut(id)
            .and_then(|l| l.get_mut(index))
        {
            a.outcome = outcome;
        }
    }

    fn release_of(&self, id: &str) -> Arc<Notify> {
        self.release
            .lock()
            .unwrap()
            .entry(id.to_owned())
            .or_default()
            .clone()
    }
}

/// Marks an attempt `Dropped` unless it was answered: hyper drops the handler's future when
/// the client's connection closes.
struct InFlight {
    seen: Arc<Seen>,
    id: String,
    index: usize,
    answered: bool,
}

impl InFlight {
    fn answer(mut self, outcome: Outcome) {
        self.seen.end(&self.id, self.index, outcome);
        self.answered = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.answered {
            self.seen.end(&self.id, self.index, Outcome::Dropped);
        }
    }
}

pub struct ModelDouble {
    pub url: String,
    pub seen: Arc<Seen>,
}

async fn predict(
    State(seen): State<Arc<Seen>>,
    Path((node, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    if body["id"] != id.as_str() {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"detail": "id mismatch"})),
        )
            .into_response();
    }
    let prompt = body["input"]["prompt"].as_str().unwrap_or("").to_owned();
    let index = seen.begin(&id, &node);
    let attempt = InFlight {
        seen: seen.clone(),
        id: id.clone(),
        index,
        answered: false,
    };
    let hold = prompt.starts_with("hold:") || (prompt.starts_with("hold-first:") && index == 0);
    if hold {
        seen.release_of(&id).notified().await;
        attempt.answer(Outcome::Canceled);
        return Json(json!({"id": id, "status": "canceled", "output": null, "logs": ""}))
            .into_response();
    }
    attempt.answer(Outcome::Succeeded);
    Json(json!({
        "id": id, "status": "succeeded", "logs": "", "metrics": {"predict_time": 0.001},
        "output": format!("{prompt} ran on {node}"),
    }))
    .into_response()
}

async fn cancel(
    State(seen): State<Arc<Seen>>,
    Path((node, id)): Path<(String, String)>,
) -> Response {
    seen.cancels.lock().unwrap().push((node, id.clone()));
    seen.release_of(&id).notify_one();
    Json(json!({})).into_response()
}

/// Starts the double on a port of its own; it lives as long as the test's runtime.
pub async fn start() -> ModelDouble {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/{node}/predictions/{id}", put(predict))
        .route("/{node}/predictions/{id}/cancel", post(cancel))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    ModelDouble { url, seen }
}
