//! Runs: one request to execute a model, and its lifecycle.

use crate::money::Millicents;
use crate::time::Timestamp;
use serde::Serialize;
use serde_json::Value;

/// Where a run is in its lifecycle: `pending` (queued) → `processing` (at the provider) →
/// `succeeded` or `failed`; a `pending` or `processing` run can also be `canceled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Pending,
    Processing,
    Succeeded,
    Failed,
    Canceled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Processing => "processing",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => RunStatus::Pending,
            "processing" => RunStatus::Processing,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "canceled" => RunStatus::Canceled,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Canceled
        )
    }
}

/// Why a run failed, as shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunError {
    pub message: String,
    pub code: String,
}

/// A run as stored and as returned by the API. The JSON is runbase.net's run object: camelCase,
/// `costUsd` in integer micro-USD, timestamps with milliseconds; every field always present,
/// `null` until known.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub id: String,
    pub model: String,
    pub status: RunStatus,
    /// The input as submitted, after schema defaults were applied.
    pub input: Value,
    /// `{"urls": [...], ...}` once succeeded.
    pub output: Option<Value>,
    pub error: Option<RunError>,
    /// What was charged (zero for test runs); refunds do not change it.
    #[serde(rename = "costUsd")]
    pub cost: Millicents,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    #[serde(skip)]
    pub account_id: String,
    #[serde(skip)]
    pub key_id: String,
    /// How many times a worker has started this run (restarts re-queue it).
    #[serde(skip)]
    pub attempts: u32,
    /// Created with a test key: executed by the simulator, never charged.
    #[serde(skip)]
    pub test: bool,
}

impl RunError {
    /// The error of a run whose worker stopped (a crash, a restart, a lost lease) after it had
    /// been started `attempts` times, the most allowed: it fails (and is refunded) rather than
    /// being queued again. Both stores use it, so the rule reads the same on either.
    pub fn interrupted(attempts: u32) -> RunError {
        RunError {
            message: format!(
                "The run was interrupted {attempts} times by a server restart and was not retried again"
            ),
            code: "interrupted".into(),
        }
    }
}

/// How a run ended, as reported by the worker.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    Succeeded { output: Value },
    Failed { error: RunError },
}

/// Everything the store needs to create a run atomically with its charge and its job.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub account_id: String,
    pub key_id: String,
    pub model: String,
    pub input: Value,
    pub price: Millicents,
    pub created_at: Timestamp,
    /// Created with a test key (simulated, free).
    pub test: bool,
    /// The idempotency key the run is created under: the store records the `201` under it in
    /// the run's transaction ([`crate::idempotency`]).
    pub idempotency: Option<crate::idempotency::RunMark>,
    /// Where to send the run's webhooks, and for which events ([`crate::webhooks`]).
    pub webhook: Option<crate::webhooks::Subscription>,
}

impl NewRun {
    /// The run as created: queued, not yet attempted. What every store returns from a create,
    /// and what the create answers.
    pub fn pending(&self) -> Run {
        Run {
            id: self.id.clone(),
            model: self.model.clone(),
            status: RunStatus::Pending,
            input: self.input.clone(),
            output: None,
            error: None,
            cost: self.price,
            created_at: self.created_at,
            started_at: None,
            completed_at: None,
            account_id: self.account_id.clone(),
            key_id: self.key_id.clone(),
            attempts: 0,
            test: self.test,
        }
    }
}
