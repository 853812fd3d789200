//! The storage contract. One implementation per database (SQLite first); every money rule that
//! must hold under concurrency (quota, spend limit, balance, ledger) is enforced inside
//! [`Store::create_run`] and [`Store::finish_run`], atomically with the writes they guard.

use crate::account::{Account, ApiKey, KeySettings, KeyUpdate, LedgerEntry, NewAccount};
use crate::ids::KeyHash;
use crate::money::Millicents;
use crate::run::{NewRun, Run, RunOutcome, RunStatus};
use crate::sessions::Session;
use crate::time::Timestamp;
use async_trait::async_trait;
use std::sync::Arc;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken (e.g. the email is taken); the message is safe to show.
    #[error("{0}")]
    Conflict(String),
    /// The thing to change does not exist; the message is safe to show.
    #[error("{0}")]
    NotFound(String),
    /// The database failed; internal detail, to be logged, never shown.
    #[error("storage backend: {0}")]
    Backend(String),
    /// No connection to the database could be had (server unreachable, out of connections, pool
    /// wait timed out) before anything was sent: nothing was done, and a retry may succeed.
    /// Internal detail, to be logged, never shown.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// Why [`Store::create_run`] refused to create a run. Each maps to one public error code.
#[derive(Debug, thiserror::Error)]
pub enum CreateRunError {
    #[error("key is no longer usable")]
    KeyNotUsable,
    #[error("usage quota exhausted")]
    QuotaExhausted,
    #[error("spend limit would be exceeded")]
    SpendLimit,
    #[error("insufficient balance")]
    InsufficientBalance,
    /// The run's [fresh](crate::idempotency::RunMark::fresh) idempotency key has a live row.
    #[error("idempotency key taken")]
    KeyTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why the administrator role was not taken away: no other account has it.
pub const LAST_ADMIN: &str =
    "this is the only administrator; make another account an administrator first";

/// Which runs a listing shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFilter {
    pub status: Option<RunStatus>,
    pub model: Option<String>,
    /// Look only among the account's next `within` runs (after the cursor, newest first): a
    /// filter that few runs pass then reads a bounded window of the account's runs instead of
    /// all of them. Where the window ends is [`Store::run_before`]`(.., within)`.
    pub within: Option<u32>,
    /// Only the runs of one mode: test runs (`Some(true)`) or live ones (`Some(false)`), as an
    /// API key sees them; `None` lists both (the dashboard's view of the account).
    pub test: Option<bool>,
}

/// The modes of runs each mode filter ([`RunFilter::test`]) reads, in the order
/// [`mode_filter_index`] numbers the filters: both, live only, test only. A store that prepares a
/// statement per filter builds one from each.
pub const MODE_FILTERS: [&[bool]; 3] = [&[false, true], &[false], &[true]];

/// Where the mode filter `test` is in [`MODE_FILTERS`].
pub fn mode_filter_index(test: Option<bool>) -> usize {
    match test {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    }
}

/// What applying a confirmed payment did.
#[derive(Debug, Clone, PartialEq)]
pub enum PaymentCredit {
    /// The account was credited (this entry).
    Credited(LedgerEntry),
    /// The checkout had already been credited (a second delivery of its payment).
    AlreadyCredited,
    /// This very event was applied before (a replayed delivery).
    DuplicateEvent,
    /// No checkout of this provider with this id was started here (or for another account).
    UnknownCheckout,
}

/// Persistent state of Runbase.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // --- accounts and ledger -------------------------------------------------------------
    /// Creates an account; the first one of an empty install is made an administrator in the
    /// same transaction, and `account.signup_credit` (the welcome credit), when not zero, is
    /// granted in it too with its own ledger line. An email already taken is a `Conflict` (and
    /// grants nothing). Every way of signing up (the dashboard, the CLI, an identity provider)
    /// comes through here.
    async fn create_account_with(
        &self,
        account: NewAccount,
        now: Timestamp,
    ) -> Result<Account, StoreError>;
    /// An account without a password (the CLI's `accounts create`).
    async fn create_account(&self, email: &str, now: Timestamp) -> Result<Account, StoreError> {
        let account = NewAccount {
            email: email.to_owned(),
            ..NewAccount::default()
        };
        self.create_account_with(account, now).await
    }
    /// The account's argon2id PHC string, if it has a password.
    async fn password_hash(&self, account_id: &str) -> Result<Option<String>, StoreError>;
    /// Replaces the password and closes every session of the account except `keep_session`.
    async fn set_password_hash(
        &self,
        account_id: &str,
        phc: &str,
        keep_session: Option<&str>,
    ) -> Result<(), StoreError>;
    async fn account_by_email(&self, email: &str) -> Result<Option<Account>, StoreError>;
    async fn account(&self, id: &str) -> Result<Option<Account>, StoreError>;
    /// Every account, oldest first (the CLI's `accounts list`).
    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError>;
    /// Gives or takes away the administrator role. Taking it from the last administrator is a
    /// `Conflict` ([`LAST_ADMIN`]), also when removals race. Returns the account.
    async fn set_admin(&self, account_id: &str, admin: bool) -> Result<Account, StoreError>;
    /// Adds (or with a negative amount, removes) credit; writes the ledger entry, naming the
    /// administrator who granted it, if one did. A positive amount marks the account credited
    /// (it gets the full upload quota, [`crate::uploads::UploadQuota`]), as a payment does.
    async fn add_credits(
        &self,
        account_id: &str,
        amount: Millicents,
        memo: &str,
        granted_by: Option<&str>,
        now: Timestamp,
    ) -> Result<LedgerEntry, StoreError>;
    /// The ledger lines of one run of the account (its charge and any refund), oldest first.
    async fn run_ledger(
        &self,
        account_id: &str,
        run_id: &str,
    ) -> Result<Vec<LedgerEntry>, StoreError>;

    // --- dashboard sessions --------------------------------------------------------------
    async fn create_session(&self, session: &Session) -> Result<(), StoreError>;
    /// The session with this token hash and its account, unless it has expired at `now`.
    async fn session(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<(Session, Account)>, StoreError>;
    async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError>;

    // --- sign-in with OpenID Connect -----------------------------------------------------
    /// The account an OpenID Connect identity (issuer, subject) is linked to.
    async fn account_by_identity(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<Account>, StoreError>;
    /// Keeps a sign-in in progress; expired ones are swept on the way.
    async fn put_pending_sign_in(
        &self,
        pending: &crate::identities::PendingSignIn,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Removes and returns the sign-in in progress under this state hash (whether or not it
    /// has expired: the caller checks).
    async fn take_pending_sign_in(
        &self,
        state_hash: &str,
    ) -> Result<Option<crate::identities::PendingSignIn>, StoreError>;
    /// Links an identity to an account; an identity already linked is a `Conflict`.
    async fn link_identity(
        &self,
        issuer: &str,
        subject: &str,
        account_id: &str,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    // --- payments (top-ups) --------------------------------------------------------------
    /// Records a checkout started for `account_id`, waiting for the provider's confirmation.
    async fn create_payment(
        &self,
        provider: &str,
        checkout_id: &str,
        account_id: &str,
        amount: Millicents,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Applies a provider's confirmation of a checkout, in one transaction: the event is
    /// recorded (each event id once), the payment moves from pending to paid (once), and the
    /// account is credited `amount` with a ledger entry. `account_id`, when the event names
    /// one, must be the account the checkout was started for.
    async fn complete_payment(
        &self,
        provider: &str,
        event_id: &str,
        checkout_id: &str,
        account_id: Option<&str>,
        amount: Millicents,
        now: Timestamp,
    ) -> Result<PaymentCredit, StoreError>;
    /// Newest first; `before` is an entry id for paging.
    async fn ledger(
        &self,
        account_id: &str,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<LedgerEntry>, StoreError>;

    // --- API keys ------------------------------------------------------------------------
    async fn create_key(
        &self,
        account_id: &str,
        id: &str,
        hash: &KeyHash,
        prefix: &str,
        settings: &KeySettings,
        now: Timestamp,
    ) -> Result<ApiKey, StoreError>;
    /// The hot-path lookup; returns deleted keys too (the caller decides), never a stale copy.
    async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<ApiKey>, StoreError>;
    async fn key_by_id(&self, id: &str) -> Result<Option<ApiKey>, StoreError>;
    /// The account's keys that are not deleted, newest first.
    async fn list_keys(&self, account_id: &str) -> Result<Vec<ApiKey>, StoreError>;
    async fn update_key(&self, id: &str, update: &KeyUpdate) -> Result<ApiKey, StoreError>;
    /// Records that the key was used at `now`.
    async fn touch_key(&self, id: &str, now: Timestamp) -> Result<(), StoreError>;
    /// Soft delete: the key stops working at once; its runs and ledger lines keep their history.
    async fn delete_key(&self, id: &str, now: Timestamp) -> Result<(), StoreError>;

    // --- uploads ---------------------------------------------------------------------------
    /// Records an uploaded file and adds its size to its account's upload usage, in one
    /// transaction, only when the usage stays within `quota` (otherwise nothing is written):
    /// the account's own quota ([`UploadQuota::for_account`], smaller while it has never been
    /// credited) and, for a never-credited account, the total of all such accounts' uploads,
    /// to which the file is then added (and taken off again when it is deleted, whatever the
    /// account has become). Concurrent calls, through any node, never pass a quota together.
    ///
    /// [`UploadQuota::for_account`]: crate::uploads::UploadQuota::for_account
    async fn create_upload(
        &self,
        upload: &crate::uploads::Upload,
        quota: &crate::uploads::UploadQuota,
    ) -> Result<(), CreateUploadError>;
    /// The upload with this id, whichever account it belongs to (the caller compares).
    async fn upload(&self, id: &str) -> Result<Option<crate::uploads::Upload>, StoreError>;
    /// Where the account stands for uploads: what its uploads take, whether it has been
    /// credited, and what never-credited accounts' uploads take together.
    async fn upload_usage(
        &self,
        account_id: &str,
    ) -> Result<crate::uploads::UploadUsage, StoreError>;
    /// Claims for deletion up to `max` uploads made before `before`, oldest first, until
    /// `lease_until`: an upload claimed by one caller (in this process or another) is handed
    /// to no other until that lease has ended at `now` (its deleter died before finishing).
    async fn claim_expired_uploads(
        &self,
        before: Timestamp,
        max: u32,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Vec<crate::uploads::Upload>, StoreError>;
    /// Removes an upload's record and takes its size off its account's usage, in one
    /// transaction. Returns whether there was one to remove (a second call does nothing).
    async fn delete_upload(&self, id: &str) -> Result<bool, StoreError>;

    // --- idempotency keys (crate::idempotency) -------------------------------------------
    /// Atomically, for the key (`claim.account_id`, `claim.key`): with no row, or one created
    /// before `claim.expired_before`, (re)places it with a new in-flight claim made at
    /// `claim.now`, with `claim.fingerprint` and `claim.run_id`; with an in-flight row of the
    /// same fingerprint claimed before `claim.stale_before`, takes it over (a new `claimed_at`,
    /// its run id kept, `resumed`); otherwise answers the row as it is. Of concurrent claims of
    /// one key, in this process or another, exactly one is `Claimed`.
    async fn claim_idempotency_key(
        &self,
        claim: &crate::idempotency::NewClaim,
    ) -> Result<crate::idempotency::ClaimOutcome, StoreError>;
    /// Ends a claim, if it is still in flight and still `claim`'s (same `claimed_at`):
    /// records its answer, deletes the row, or marks it stale at once (see
    /// [`crate::idempotency::Settle`]). Otherwise changes nothing.
    async fn settle_idempotency_key(
        &self,
        claim: &crate::idempotency::Claim,
        how: &crate::idempotency::Settle,
    ) -> Result<(), StoreError>;
    /// What is kept under the key (`account_id`, `key`), unless it was created before
    /// `expired_before`.
    async fn idempotency_record(
        &self,
        account_id: &str,
        key: &str,
        expired_before: Timestamp,
    ) -> Result<Option<crate::idempotency::Record>, StoreError>;
    /// Whether [`Store::create_run`] claims a [fresh](crate::idempotency::RunMark::fresh) key
    /// itself, in the create's transaction (one write per create under a key). A store that
    /// does not is given keys already claimed by [`Store::claim_idempotency_key`].
    fn claims_keys_in_creates(&self) -> bool {
        false
    }
    /// Deletes up to `max` keys created before `expired_before`; returns how many.
    async fn sweep_idempotency_keys(
        &self,
        expired_before: Timestamp,
        max: u32,
    ) -> Result<u64, StoreError>;

    // --- runs and their queue ------------------------------------------------------------
    /// In one transaction: re-checks the key (usable, quota, spend limit) and the balance,
    /// charges the price (ledger entry), inserts the run and enqueues its job. With
    /// `run.idempotency`, the same transaction records the `201`
    /// ([`crate::idempotency::Answer::created`] of the run returned) under that key, if the
    /// claim is still the run's; with a [fresh](crate::idempotency::RunMark::fresh) key, the
    /// same transaction first claims it, and refuses with [`CreateRunError::KeyTaken`], having
    /// written nothing, when a row created since its `expired_before` has it. A run id is
    /// unique: a second create under the same id fails.
    async fn create_run(&self, run: NewRun) -> Result<Run, CreateRunError>;
    /// The run if it belongs to `account_id`.
    async fn get_run(&self, account_id: &str, run_id: &str) -> Result<Option<Run>, StoreError>;
    /// The GET path's two reads at once: the key with this hash (as [`Store::key_by_hash`]) and,
    /// when there is one, the run `run_id` if it belongs to the key's account and was made in
    /// the key's mode (a test key sees test runs only, a live key live runs only). A store may answer
    /// both with one statement, and may leave out of the key what authenticating a read does not
    /// look at (its name, test flag, spend, quota and usage counts: the PostgreSQL store does);
    /// callers use only its identity, state, expiry, IP allowlist and last use (such a key is
    /// remembered as partial: `auth::RecentKeys`).
    async fn key_and_run(
        &self,
        hash: &KeyHash,
        run_id: &str,
    ) -> Result<(Option<ApiKey>, Option<Run>), StoreError> {
        let Some(key) = self.key_by_hash(hash).await? else {
            return Ok((None, None));
        };
        let run = self
            .get_run(&key.account_id, run_id)
            .await?
            .filter(|run| run.test == key.test);
        Ok((Some(key), run))
    }
    /// The id of the account's run `skip` places older than the run `starting_after` (than its
    /// newest run when `None`), if it has that many, counting the runs of the mode `test` (of
    /// both when `None`, as [`RunFilter::test`]): where a window of `skip` runs ends. Walks the
    /// account's index only.
    async fn run_before(
        &self,
        account_id: &str,
        test: Option<bool>,
        starting_after: Option<&str>,
        skip: u32,
    ) -> Result<Option<String>, StoreError>;
    /// The account's runs that pass `filter`, newest first, after the run `starting_after`
    /// when given.
    async fn list_runs(
        &self,
        account_id: &str,
        filter: &RunFilter,
        limit: u32,
        starting_after: Option<&str>,
    ) -> Result<Vec<Run>, StoreError>;
    /// Claims up to `max` queued runs for a worker, oldest first, marking them `processing`
    /// (one more attempt) and leased to the caller until `lease_until`. Concurrent callers, in
    /// this process or another, never claim the same run.
    async fn claim_runs(
        &self,
        max: u32,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Vec<Run>, StoreError>;
    /// Puts back in the queue a run that a worker took (claimed, or in its create: [`Handoff`])
    /// and never started: `pending` again with its start and lease cleared, and workers are told
    /// of it. Its attempt stays spent, so that a run id and attempt name one taking of the run
    /// only (a renewal or a late write of this one finds the next claim's attempt changed), and
    /// a `start` webhook, sent with the first attempt, is not sent again. The put-back is counted,
    /// and `max_attempts` counts only the takings that were not put back: a run put back several
    /// times and then interrupted by a crash is retried as any other. `false` when the run is
    /// no longer that attempt's `processing` run (canceled meanwhile, or reclaimed), which is
    /// then left alone.
    async fn release_run(&self, run_id: &str, attempt: u32) -> Result<bool, StoreError>;
    /// Extends to `until` the leases of the runs a worker is executing, each named by its id and
    /// the attempt the worker claimed. Returns those of them that are no longer its to run
    /// (canceled, finished, or reclaimed after the lease ran out), so the worker can stop them.
    async fn renew_leases(
        &self,
        runs: &[(String, u32)],
        until: Timestamp,
    ) -> Result<Vec<String>, StoreError>;
    /// Runs whose lease ended before `now` (their worker died) go back to the queue, or fail
    /// with a refund ([`crate::run::RunError::interrupted`]) once they have been started
    /// `max_attempts` times. Each expired run is reclaimed once, whichever process asks.
    /// Returns (requeued, failed).
    async fn reclaim_expired(
        &self,
        max_attempts: u32,
        now: Timestamp,
    ) -> Result<(u64, u64), StoreError>;
    /// Ends attempt `attempt` (the `attempts` of the claim that started it) of a `processing`
    /// run; a failure refunds its full cost in the same transaction. Finishing a run that is not
    /// `processing` changes nothing (idempotent), and neither does finishing an earlier attempt:
    /// a worker that lost its lease, coming back after the run was reclaimed and started again,
    /// leaves the new attempt's outcome to the new attempt.
    async fn finish_run(
        &self,
        run_id: &str,
        attempt: u32,
        outcome: RunOutcome,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Cancels a `pending` or `processing` run of `account_id`, refunding its full cost in the
    /// same transaction. Returns the run as it now is (a finished run is returned unchanged),
    /// or `None` when the account has no such run.
    async fn cancel_run(
        &self,
        account_id: &str,
        run_id: &str,
        now: Timestamp,
    ) -> Result<Option<Run>, StoreError>;
    /// At the start of a single-node server: every run left `processing` by a crash goes back to
    /// the queue, or fails with a refund once it has been started `max_attempts` times, whatever
    /// its lease says. A store shared by several nodes reclaims only expired leases here (the
    /// other nodes' runs are alive). Returns (requeued, failed).
    async fn recover_interrupted(
        &self,
        max_attempts: u32,
        now: Timestamp,
    ) -> Result<(u64, u64), StoreError>;
    // --- webhooks (crate::webhooks) ------------------------------------------------------
    // The outbox rows themselves are written by the store in the transaction that changes a
    // run's status (to `processing` on its first attempt, for `start`; to `succeeded`,
    // `failed` or `canceled`, for `completed`), for runs subscribed to that event.
    /// The account's signing secrets; when it has none yet, `fresh` becomes its secret (of
    /// concurrent first calls, one secret wins and all answer it).
    async fn webhook_secrets(
        &self,
        account_id: &str,
        fresh: &str,
        now: Timestamp,
    ) -> Result<crate::webhooks::Secrets, StoreError>;
    /// Makes `fresh` the account's secret; the current one (if any) keeps signing until
    /// `previous_until`. Returns the secrets as they now are.
    async fn rotate_webhook_secret(
        &self,
        account_id: &str,
        fresh: &str,
        now: Timestamp,
        previous_until: Timestamp,
    ) -> Result<crate::webhooks::Secrets, StoreError>;
    /// Claims up to `max` deliveries whose next attempt is due at `now`, oldest first, leased
    /// until `lease_until`, none of the accounts in `skip_accounts` (those the caller already
    /// sends its share of): concurrent callers, in this process or another, never claim the
    /// same delivery while its lease holds.
    async fn claim_deliveries(
        &self,
        max: u32,
        now: Timestamp,
        lease_until: Timestamp,
        skip_accounts: &[String],
    ) -> Result<Vec<crate::webhooks::DueDelivery>, StoreError>;
    /// Records an attempt in the delivery's log and moves the delivery on, in one transaction:
    /// delivered, retried at `next_attempt_at`, or given up (failed) without one.
    async fn record_delivery_attempt(
        &self,
        result: &crate::webhooks::AttemptResult,
    ) -> Result<(), StoreError>;
    /// The deliveries of the account's run, oldest first, each with its attempts; `None` when
    /// the account has no such run.
    async fn run_deliveries(
        &self,
        account_id: &str,
        run_id: &str,
    ) -> Result<Option<Vec<crate::webhooks::Delivery>>, StoreError>;
    /// Queues, due at `now`, a new delivery (`id`) of the latest event of the account's run
    /// (`completed` once it has finished, else `start`) to its webhook; when a delivery of that
    /// event is waiting for a retry (pending, and not being sent now), makes that one due at
    /// `now` instead, so a run never has more than one delivery waiting however often it is
    /// redelivered. Returns
    /// whether one is due: `false` when the run has no webhook or has not started; `NotFound`
    /// when the account has no such run.
    /// Deletes up to `max` deliveries that are no longer pending (delivered or given up) and
    /// were queued before `before`, oldest first, with their attempts; returns how many.
    async fn sweep_webhook_deliveries(
        &self,
        before: Timestamp,
        max: u32,
    ) -> Result<u64, StoreError>;
    async fn redeliver(
        &self,
        account_id: &str,
        run_id: &str,
        id: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// How many runs are queued and how many are executing, now (the operator's metrics).
    async fn queue_depth(&self) -> Result<(u64, u64), StoreError>;
    /// Signalled whenever new runs are queued (by this process, or by another one where the
    /// store is shared), so idle workers need not poll.
    fn queue_signal(&self) -> Arc<tokio::sync::Notify>;
    /// Lets the store give runs it creates straight to this process's worker ([`Handoff`]).
    /// A store that does not (the default) queues every run for a claim.
    fn hand_off_to(&self, _handoff: Handoff) {}
    /// Where several processes share the store: the ids of runs canceled through any of them,
    /// so each worker can stop those it is executing. `None` where one process owns the store
    /// (its API signals its worker directly).
    fn cancellations(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        None
    }
    /// The ids of runs whose state changed: claimed (`processing`), finished, canceled, or
    /// requeued or failed by a reclaim, announced once the change is committed. Where several
    /// processes share the store, a change made by any of them is announced in each. A receiver
    /// that falls behind gets `Lagged` (the announcements are bounded), and announcements can be
    /// lost with a connection, so listeners re-read now and then as well
    /// ([`crate::events::StreamLimits::recheck`]). Creation is not announced (its creator answers the run).
    fn run_changes(&self) -> tokio::sync::broadcast::Receiver<String>;
}

/// Why [`Store::create_upload`] recorded nothing.
#[derive(Debug, thiserror::Error)]
pub enum CreateUploadError {
    /// The upload would take its account past its quota; `usage` is where it stood when it was
    /// refused.
    #[error("upload quota exceeded ({} bytes in use)", usage.account_bytes)]
    OverQuota { usage: crate::uploads::UploadUsage },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A worker's offer to take runs from the create that makes them, registered with
/// [`Store::hand_off_to`]. While the worker's last claim found the queue drained, a store may
/// take one of the worker's free slots for a run it is creating, write the run already claimed
/// (`processing`, attempt 1, leased until `lease` from now) in the create's own transaction, and
/// send it with the slot once committed: one write fewer per run than a create and then a claim.
/// The create's answer still shows the run `pending`, as accepted.
pub struct Handoff {
    /// The worker's slots; a run handed over holds one, as a claimed run does.
    pub slots: Arc<tokio::sync::Semaphore>,
    /// Set by the worker while its last claim got fewer runs than it asked for (no older run is
    /// waiting), cleared when a claim fills its slots or fails, when the worker stops, and by the
    /// store when a create batch leaves a run queued.
    pub drained: Arc<std::sync::atomic::AtomicBool>,
    /// Whether a run handed over now would start its provider call soon: the worker's call, made
    /// per run. A run handed over waits for a call with its lease renewed, but it shows
    /// `processing` meanwhile and no other worker can take it, so a worker whose calls are all
    /// held by slow runs leaves new runs queued.
    pub ready: Arc<dyn Fn() -> bool + Send + Sync>,
    /// How long a run handed over is leased for.
    pub lease: std::time::Duration,
    /// Where committed runs go, each with the slot taken for it.
    pub runs: tokio::sync::mpsc::UnboundedSender<(Run, tokio::sync::OwnedSemaphorePermit)>,
}

impl Handoff {
    /// A free slot for a run about to be created, if the worker is idle enough to take one now
    /// and `ready` to start it soon.
    pub fn take_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if !self.drained.load(std::sync::atomic::Ordering::Acquire)
            || self.runs.is_closed()
            || !(self.ready)()
        {
            return None;
        }
        self.slots.clone().try_acquire_owned().ok()
    }
}
