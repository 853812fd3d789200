//! The API's objects as they are on the wire (camelCase, money in integer micro-USD,
//! timestamps as ISO 8601 UTC strings with milliseconds).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// Where a run is: `pending` (queued) → `processing` (at the provider) → `succeeded` or
/// `failed`; a `pending` or `processing` run can also be `canceled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum RunStatus {
    Pending,
    Processing,
    Succeeded,
    Failed,
    Canceled,
    /// A status this client does not know (a newer server); treated as not finished.
    #[serde(other)]
    Unknown,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Processing => "processing",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Canceled => "canceled",
            RunStatus::Unknown => "unknown",
        }
    }

    /// `succeeded`, `failed` or `canceled`: the run will not change any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Canceled
        )
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunError {
    pub message: String,
    pub code: String,
}

/// The run object (`POST /api/v1/runs`, `GET /api/v1/runs/{id}`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// `run_...`
    pub id: String,
    /// `provider/name`
    pub model: String,
    pub status: RunStatus,
    /// The input as submitted, with the schema's defaults applied.
    #[serde(default)]
    pub input: Value,
    /// The model's output once succeeded, shaped by its output schema: `{"urls": [...], ...}`.
    #[serde(default)]
    pub output: Option<Value>,
    /// Why the run failed (`failed` runs; `null` otherwise).
    #[serde(default)]
    pub error: Option<RunError>,
    /// What was charged, in micro-USD (1 USD = 1,000,000); a failed run is refunded in full.
    pub cost_usd: i64,
    /// ISO 8601 UTC with milliseconds, e.g. `2026-06-01T12:00:04.200Z`.
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub completed_at: Option<String>,
    /// Fields this client does not know (a newer server's), kept so that printing the run
    /// shows everything the server sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Run {
    /// The output files' URLs (`output.urls`), empty until the run has succeeded.
    pub fn output_urls(&self) -> Vec<&str> {
        self.output
            .as_ref()
            .and_then(|o| o.get("urls"))
            .and_then(Value::as_array)
            .map(|urls| urls.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }
}

/// One page of `GET /api/v1/runs`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunPage {
    pub data: Vec<Run>,
    /// More (older) runs follow; ask with `startingAfter` = the last run's id.
    pub has_more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_shape_round_trips() {
        let wire = serde_json::json!({
            "id": "run_1", "model": "runbase/echo", "status": "succeeded",
            "input": {"text": "hi"}, "output": {"urls": ["http://x/files/run_1/a.png"], "text": "hi"},
            "error": null, "costUsd": 10000, "createdAt": "2026-06-01T12:00:00.000Z",
            "startedAt": "2026-06-01T12:00:00.100Z", "completedAt": "2026-06-01T12:00:04.200Z",
            "webhook": "https://example.com/hook"
        });
        let run: Run = serde_json::from_value(wire.clone()).expect("decode");
        assert_eq!(run.status, RunStatus::Succeeded);
        assert_eq!(run.cost_usd, 10_000);
        assert_eq!(run.output_urls(), ["http://x/files/run_1/a.png"]);
        assert_eq!(run.extra["webhook"], "https://example.com/hook");
        assert_eq!(serde_json::to_value(&run).expect("encode"), wire);
        let odd: Run = serde_json::from_value(serde_json::json!({
            "id": "run_2", "model": "m/x", "status": "paused", "costUsd": 0
        }))
        .expect("decode");
        assert_eq!(odd.status, RunStatus::Unknown);
        assert!(!odd.status.is_terminal());
    }
}
