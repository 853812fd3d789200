//! Runs: one request to execute a model, and its lifecycle.

use crate::money::Millicents;
use crate::time::Timestamp;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// A succeeded run's output as documented (the stored value is the model's own: `urls` always,
/// `text` for text models, and whatever else its output schema names).
#[derive(Serialize, ToSchema)]
pub struct RunOutput {
    /// The output files, served by this server (`/files/...`).
    #[serde(default)]
    pub urls: Vec<String>,
}

/// Where a run is in its lifecycle: `pending` (queued) → `processing` (at the provider) →
/// `succeeded` or `failed`; a `pending` or `processing` run can also be `canceled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RunError {
    pub message: String,
    /// A provider's or the worker's code (`timeout`, `interrupted`, `provider_error`, ...).
    pub code: String,
}

/// A run as stored and as returned by the API. The JSON is runbase.net's run object: camelCase,
/// `costUsd` in integer micro-USD, timestamps with milliseconds; every field always present,
/// `null` until known.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// `run_` and 26 characters.
    #[schema(pattern = "^run_[0-9A-Za-z]+$")]
    pub id: String,
    /// The model's id, `provider/name`.
    pub model: String,
    pub status: RunStatus,
    /// The input as submitted, after schema defaults were applied (the model's input schema:
    /// `#/components/schemas/ModelInput_<provider>_<name>`).
    #[schema(value_type = Object)]
    pub input: Value,
    /// `{"urls": [...], ...}` once succeeded, else `null`.
    #[schema(value_type = Option<RunOutput>, required = true)]
    pub output: Option<Value>,
    /// Why the run failed, once `failed` (or `canceled`); else `null`.
    #[schema(required = true)]
    pub error: Option<RunError>,
    /// What was charged, in integer micro-USD (zero for test runs); refunds do not change it.
    #[serde(rename = "costUsd")]
    #[schema(value_type = i64, minimum = 0)]
    pub cost: Millicents,
    /// ISO 8601 UTC with milliseconds.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub started_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub completed_at: Option<Timestamp>,
    #[serde(skip)]
    pub account_id: String,
    #[serde(skip)]
    pub key_id: String,
    /// How many times a worker has taken this run (claimed, or handed over in its create;
    /// restarts re-queue it). Takings put back before their provider call count here too, and
    /// in the store's `put_backs`, which `max_attempts` leaves out.
    #[serde(skip)]
    pub attempts: u32,
    /// Created with a test key: executed by the simulator, never charged.
    #[serde(skip)]
    pub test: bool,
}

impl RunError {
    /// The error of a run whose worker stopped (a crash, a restart, a lost lease), if it has been
    /// started `max_attempts` times: it fails (and is refunded) rather than being queued again.
    /// Its starts are its takings (`attempts`) less those put back in the queue before their
    /// provider call (`put_backs`). Both stores use it, so the rule reads the same on either.
    pub fn interrupted(attempts: i64, put_backs: i64, max_attempts: u32) -> Option<RunError> {
        let started = attempts.saturating_sub(put_backs.max(0));
        (started >= i64::from(max_attempts)).then(|| RunError {
            message: format!(
                "The run was interrupted {started} times by a server restart and was not retried again"
            ),
            code: "interrupted".into(),
        })
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
    /// The request was authenticated from this process's remembered copy of the key
    /// ([`crate::auth::KeySeen::Remembered`]), which had no IP allowlist, not from its row: the
    /// store's check of the key it locks also refuses the run if the key has an allowlist now.
    pub key_remembered: bool,
}

impl NewRun {
    /// The run as created: queued, not yet attempted. What every store returns from a create,
    /// and what the create answers.
    pub fn pending(&self) -> Run {
        Run {
            id: self.id.clone(),
            model: self.model.clone(),
            input: self.input.clone(),
            account_id: self.account_id.clone(),
            key_id: self.key_id.clone(),
            ..self.pending_without_strings()
        }
    }

    /// [`NewRun::pending`], taking the run's strings and input instead of copying them.
    pub fn into_pending(self) -> Run {
        let rest = self.pending_without_strings();
        Run {
            id: self.id,
            model: self.model,
            input: self.input,
            account_id: self.account_id,
            key_id: self.key_id,
            ..rest
        }
    }

    /// The pending run's fields that are not the run's own strings (those left empty).
    fn pending_without_strings(&self) -> Run {
        Run {
            id: String::new(),
            model: String::new(),
            status: RunStatus::Pending,
            input: Value::Null,
            output: None,
            error: None,
            cost: self.price,
            created_at: self.created_at,
            started_at: None,
            completed_at: None,
            account_id: String::new(),
            key_id: String::new(),
            attempts: 0,
            test: self.test,
        }
    }
}
