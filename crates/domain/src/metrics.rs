//! What the operator's metrics count, as events the API and the worker report. The domain knows
//! no metrics library: the binary installs an implementation (Prometheus text on
//! `--metrics-listen`), and without one every event is dropped at the cost of a virtual call.

/// Receives the events worth counting. Every method has a default that ignores the event.
pub trait Metrics: Send + Sync + 'static {
    /// Whether events are counted at all (so that the API can skip timing its requests).
    fn enabled(&self) -> bool {
        true
    }
    /// An HTTP request was answered: its route template (not its path: bounded label values),
    /// method, status and how long it took.
    fn request(&self, _route: &str, _method: &str, _status: u16, _seconds: f64) {}
    /// A limiter refused a request (`runs`, `auth`, `session`, `uploads`).
    fn rate_limited(&self, _limiter: &str) {}
    /// A run was created (charged and queued).
    fn run_created(&self, _model: &str) {}
    /// A create without an idempotency key was authenticated: from its key's row, read, or from
    /// this node's copy of the key ([`crate::auth::KeySeen`]).
    fn create_authenticated(&self, _seen: crate::auth::KeySeen) {}
    /// A worker asked the queue for `asked` runs and was given `got` (an idle worker asks once
    /// per poll interval or queue signal, not in a loop).
    fn queue_claimed(&self, _asked: u32, _got: u32) {}
    /// A worker started a run's provider call this long after the run was created (once per
    /// start: a taking put back in the queue before its call is not counted).
    fn run_picked_up(&self, _waited_seconds: f64) {}
    /// A provider call ended: `succeeded`, `failed` (with the error's code) or `canceled`.
    fn provider_call(
        &self,
        _model: &str,
        _outcome: &str,
        _error_code: Option<&str>,
        _seconds: f64,
    ) {
    }
    /// A run reached a terminal status through its worker (`succeeded` or `failed`).
    fn run_finished(&self, _model: &str, _status: &str) {}
    /// An event stream (`GET /api/v1/runs/{id}/events`) opened (`+1`) or ended (`-1`).
    fn event_streams(&self, _delta: i64) {}
    /// A webhook delivery attempt ended: `delivered`, `retrying` (it failed and will be tried
    /// again) or `failed` (it failed and was given up).
    fn webhook_delivery(&self, _outcome: &str) {}
}

/// Counts nothing (no `--metrics-listen`).
pub struct NoMetrics;

impl Metrics for NoMetrics {
    fn enabled(&self) -> bool {
        false
    }
}
