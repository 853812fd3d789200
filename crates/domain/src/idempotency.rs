//! Safe retries: the `Idempotency-Key` header of `POST /api/v1/runs` and
//! `POST /api/v1/runs/{id}/cancel`, with Stripe's semantics.
//!
//! A key (1–255 printable ASCII characters, chosen by the client) is scoped to the account and
//! the API key's mode (test keys have keys of their own: [`stored_key`]) and kept [`KEEP_HOURS`]
//! hours. The first request under a key claims it: the store inserts a row
//! per (account, key), "in flight", so of concurrent duplicates exactly one executes. Its answer
//! is then recorded, and a repeat of the same request (same method, path and body: a SHA-256
//! [`fingerprint`]) gets that answer again, status and body byte for byte, marked
//! `Idempotent-Replayed: true`, without charging or queueing anything. The same key with another
//! request is `409 idempotency_key_mismatch`; a repeat while the first is still executing is
//! `409 idempotency_key_in_use` (with `Retry-After: 1`).
//!
//! Which answers are kept ([`is_kept`]), as Stripe decides it: an answer is kept once the request
//! has started executing, refusals included (`402 insufficient_balance`,
//! `403 api_key_spend_limit_exceeded`, `404 run_not_found`): retrying them gives the same
//! refusal. Not kept, the key being released so that a retry executes afresh:
//! - a request that never started executing: one whose body fails validation (`invalid_json`,
//!   `missing_model`, `missing_input`, `model_not_found`, `invalid_input`; these are checked
//!   after the key is claimed, so a replay is answered before them);
//! - a `429` (`USAGE_EXCEEDED`: the quota may be raised) and every `5xx` (`500`, `503`): the
//!   failure is the server's or the moment's, and a retry may succeed.
//!
//! A create's run id is chosen when the key is claimed and kept in the key's row; the run is
//! inserted under that id, and the 201 answer recorded, in the very transaction that charges it.
//! So a process killed after the charge but before the answer left cannot lead to a second run:
//! the key's row stays "in flight", and once it is [`STALE_AFTER_SECS`] seconds old a retry takes
//! it over, finds the run under the chosen id and answers it (201). Two requests that both
//! believe they hold the key (a slow first one and the retry that took it over) can only insert
//! the one run id, which the store keeps unique: one run, one charge, whatever the timing.

use crate::account::ApiKey;
use crate::auth::KeySeen;
use crate::catalog::Catalog;
use crate::error::{ApiError, ErrorCode};
use crate::run::Run;
use crate::service::{self, CreateFailure, internal};
use crate::store::{Store, StoreError};
use crate::time::Timestamp;
use sha2::{Digest, Sha256};

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// The response header of a replayed answer (`true`).
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// The longest key accepted, in characters (Stripe's bound).
pub const MAX_KEY_LEN: usize = 255;
/// How long a key and its answer are kept; a key reused later starts afresh.
pub const KEEP_HOURS: i64 = 24;
/// How long a claim may stay "in flight" before a retry may take it over (its process is taken
/// to have died). Creates and cancels take milliseconds; a request that is merely slow and is
/// taken over is still safe (see the module's documentation), so this bound only decides how long
/// a retry after a crash meets `idempotency_key_in_use`.
pub const STALE_AFTER_SECS: i64 = 10;
/// How often a server deletes expired keys ([`sweep`]).
pub const SWEEP_EVERY_SECS: u64 = 600;

const MICROS_PER_SEC: i64 = 1_000_000;

/// The key a request carries, checked: `None` without the header; `invalid_request` when it is
/// repeated, empty, longer than [`MAX_KEY_LEN`], or not printable ASCII.
pub fn parse_key<'a>(
    mut values: impl Iterator<Item = &'a [u8]>,
) -> Result<Option<String>, ApiError> {
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = |m: String| ApiError::new(ErrorCode::InvalidRequest, m);
    if values.next().is_some() {
        return Err(invalid(
            "Idempotency-Key: send the header once per request".into(),
        ));
    }
    if value.is_empty() {
        return Err(invalid(format!(
            "Idempotency-Key: must not be empty; use 1 to {MAX_KEY_LEN} printable ASCII characters, such as a UUID"
        )));
    }
    if !value.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(invalid(format!(
            "Idempotency-Key: only printable ASCII characters are accepted (1 to {MAX_KEY_LEN} of them, such as a UUID)"
        )));
    }
    if value.len() > MAX_KEY_LEN {
        return Err(invalid(format!(
            "Idempotency-Key: is {} characters long; at most {MAX_KEY_LEN} are accepted",
            value.len()
        )));
    }
    // Printable ASCII, checked above.
    Ok(Some(value.iter().map(|&b| b as char).collect()))
}

/// What makes two requests "the same": SHA-256 of the method, the path and the body bytes, hex.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update(b"\n");
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(body);
    hex::encode(h.finalize())
}

/// The fingerprint of a request made with `key`. The same bytes sent with a test key and with a
/// live key are different requests (a simulated run must never answer for a real one, or the
/// reverse): a test key's path is marked with a fragment, which no request path can carry, so
/// a live key's fingerprint is what it always was.
fn key_fingerprint(key: &ApiKey, method: &str, path: &str, body: &[u8]) -> String {
    if key.test {
        fingerprint(method, &format!("{path}#test"), body)
    } else {
        fingerprint(method, path, body)
    }
}

/// The key a request's answer is kept under: the `Idempotency-Key` as sent for a live key; for a
/// test key, the same after `test` and a tab, which no sent key can hold (printable ASCII only).
/// So the two modes' keys never meet: a test key (handed to CI) cannot take a key the live
/// integration will send, nor learn from a `409` that it was sent, as a key of another account
/// cannot.
fn stored_key(key: &ApiKey, idempotency_key: &str) -> String {
    if key.test {
        format!("test\t{idempotency_key}")
    } else {
        idempotency_key.to_owned()
    }
}

/// Whether an answer of this status, given by a request that started executing, is kept under
/// its key: everything below 500 but 429.
pub fn is_kept(status: u16) -> bool {
    status < 500 && status != 429
}

/// Whether a request's error answer is kept under its key: [`is_kept`]'s statuses, but not a key
/// the store found unusable (`invalid_api_key`). That is the API key's state at that moment (a
/// disable, an expiry, an allowlist), not the request's answer: the same request, made once the
/// key is usable again, is made, not answered `401` for a day.
fn keeps(e: &ApiError) -> bool {
    is_kept(e.code.status()) && e.code != ErrorCode::InvalidApiKey
}

/// An answer as sent: its status and its JSON body, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    /// `201` with the run: what a create answers. The stores record exactly these bytes.
    pub fn created(run: &Run) -> Answer {
        Answer {
            status: 201,
            body: run_json(run),
        }
    }

    /// `200` with the run: what a cancel answers.
    pub fn ok(run: &Run) -> Answer {
        Answer {
            status: 200,
            body: run_json(run),
        }
    }

    /// The error's status and envelope.
    pub fn error(e: &ApiError) -> Answer {
        Answer {
            status: e.code.status(),
            body: e.envelope(),
        }
    }
}

fn run_json(run: &Run) -> Vec<u8> {
    // A run serializes without error: its maps have string keys and its numbers are integers.
    serde_json::to_vec(run).unwrap_or_default()
}

/// An answer to send, and whether it is a replay of an earlier request's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    pub answer: Answer,
    pub replayed: bool,
}

/// What a store is asked to claim.
#[derive(Debug, Clone)]
pub struct NewClaim {
    pub account_id: String,
    pub key: String,
    pub fingerprint: String,
    /// For a create: the id its run will have (a claim that takes over a stale one keeps the
    /// earlier id instead).
    pub run_id: Option<String>,
    pub now: Timestamp,
    /// A key whose row was created before this is expired: it is replaced, as if new.
    pub expired_before: Timestamp,
    /// An in-flight claim made before this may be taken over.
    pub stale_before: Timestamp,
}

impl NewClaim {
    pub fn new(account_id: &str, key: &str, fingerprint: String, run_id: Option<String>) -> Self {
        let now = Timestamp::now();
        NewClaim {
            account_id: account_id.to_owned(),
            key: key.to_owned(),
            fingerprint,
            run_id,
            now,
            expired_before: Timestamp(now.0 - KEEP_HOURS * 3600 * MICROS_PER_SEC),
            stale_before: Timestamp(now.0 - STALE_AFTER_SECS * MICROS_PER_SEC),
        }
    }
}

/// A claim on a key, held by the request executing under it. `claimed_at` identifies the claim:
/// only its holder may settle it, so a request whose claim was taken over changes nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub account_id: String,
    pub key: String,
    pub claimed_at: Timestamp,
    /// The id the create's run has, or will have.
    pub run_id: Option<String>,
    /// Taken over from an earlier claim that went stale (its request may have done its work).
    pub resumed: bool,
}

/// What is kept under a key that could not be claimed.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub fingerprint: String,
    /// `None` while the first request is in flight.
    pub answer: Option<Answer>,
}

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimOutcome {
    /// The key is the caller's: it was free (or expired), or its claim had gone stale.
    Claimed(Claim),
    /// Another request has (or had) the key.
    Existing(Record),
}

/// How a claim ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Settle {
    /// The answer is kept for replays.
    Record(Answer),
    /// The request never started executing: the key is deleted, as if never used.
    Release,
    /// The request failed in a way that may have left its work done (a lost commit answer): the
    /// key stays with its request but may be taken over at once, and a retry finds any run the
    /// request created.
    Abandon,
}

/// The mark a create carries into the store, so that its transaction also records its `201`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunMark {
    pub key: String,
    pub claimed_at: Timestamp,
    /// Set when the key was not claimed before the create (a store that
    /// [claims keys in creates](crate::store::Store::claims_keys_in_creates)): the create's own
    /// transaction claims it, writing the key's row with the `201`, or, when a live row already
    /// has the key, writes nothing at all ([`CreateRunError::KeyTaken`]).
    ///
    /// [`CreateRunError::KeyTaken`]: crate::store::CreateRunError::KeyTaken
    pub fresh: Option<FreshKey>,
}

/// What a create that claims its key itself writes under it.
#[derive(Debug, Clone, PartialEq)]
pub struct FreshKey {
    pub fingerprint: String,
    /// A row created before this is expired: it is replaced, as if the key were new.
    pub expired_before: Timestamp,
}

/// The keys whose first request this process is executing now. Where the store claims a key in
/// the create's own transaction, nothing is written before that transaction, so this is what
/// answers a concurrent duplicate `409 idempotency_key_in_use`; across processes, the store's
/// unique key does (the second transaction finds the first's row).
#[derive(Debug, Default)]
pub struct InFlightKeys {
    keys: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
}

/// A key held in [`InFlightKeys`] until dropped.
pub struct InFlightKey<'a> {
    keys: &'a InFlightKeys,
    entry: (String, String),
}

impl InFlightKeys {
    /// Holds (account, key), or `None` when a request of this process already holds it.
    pub fn hold(&self, account_id: &str, key: &str) -> Option<InFlightKey<'_>> {
        let entry = (account_id.to_owned(), key.to_owned());
        let fresh = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(entry.clone());
        // Built only when held, after the lock is released: dropping one removes its entry.
        fresh.then(|| InFlightKey { keys: self, entry })
    }
}

impl Drop for InFlightKey<'_> {
    fn drop(&mut self) {
        let mut keys = self
            .keys
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.remove(&self.entry);
    }
}

/// Claims the key, or answers from what is kept under it.
async fn begin(store: &dyn Store, new: &NewClaim) -> Result<Result<Claim, Answered>, ApiError> {
    match store.claim_idempotency_key(new).await.map_err(internal)? {
        ClaimOutcome::Claimed(claim) => Ok(Ok(claim)),
        ClaimOutcome::Existing(record) if record.fingerprint != new.fingerprint => {
            Err(ErrorCode::IdempotencyKeyMismatch.into())
        }
        ClaimOutcome::Existing(Record {
            answer: Some(answer),
            ..
        }) => Ok(Err(Answered {
            answer,
            replayed: true,
        })),
        ClaimOutcome::Existing(Record { answer: None, .. }) => {
            Err(ErrorCode::IdempotencyKeyInUse.into())
        }
    }
}

/// Ends a claim. A failure to write is logged, not answered: the client gets the real answer,
/// and the claim, left in flight, goes stale and is taken over by a retry.
async fn settle(store: &dyn Store, claim: &Claim, how: Settle) {
    if let Err(e) = store.settle_idempotency_key(claim, &how).await {
        tracing::warn!(error = %e, "settling an idempotency key failed; a retry will take it over once stale");
    }
}

/// Records a kept answer and returns it.
async fn answer(store: &dyn Store, claim: &Claim, answer: Answer, replayed: bool) -> Answered {
    settle(store, claim, Settle::Record(answer.clone())).await;
    Answered { answer, replayed }
}

/// `POST /api/v1/runs` with an `Idempotency-Key`: see the module's documentation.
pub async fn create_run(
    store: &dyn Store,
    catalog: &Catalog,
    in_flight: &InFlightKeys,
    key: &ApiKey,
    body: &[u8],
    idempotency_key: &str,
) -> Result<Answered, ApiError> {
    let new = create_claim(key, body, idempotency_key);
    if store.claims_keys_in_creates() {
        let Some(_held) = in_flight.hold(&key.account_id, &new.key) else {
            return Err(ErrorCode::IdempotencyKeyInUse.into());
        };
        if let Some(answered) =
            create_claiming_in_the_create(store, catalog, key, body, &new).await?
        {
            return Ok(answered);
        }
        // The key's row is an in-flight claim (a cancel's, or left by a process that died
        // between its claim and its create): the claiming path below decides, taking over a
        // stale claim of the same request.
    }
    let claim = match begin(store, &new).await? {
        Ok(claim) => claim,
        Err(answered) => return Ok(answered),
    };
    // A claim made for a create always names its run; the fallback only guards a damaged row.
    let run_id = claim.run_id.clone().unwrap_or_else(crate::ids::new_run_id);
    if claim.resumed
        && let Some(run) = existing_run(store, &key.account_id, &run_id).await
    {
        // The first request created the run, then its process died before its answer was kept.
        return Ok(answer(store, &claim, Answer::created(&run), true).await);
    }
    let mark = RunMark {
        key: claim.key.clone(),
        claimed_at: claim.claimed_at,
        fresh: None,
    };
    match service::create_run_as(
        store,
        catalog,
        key,
        KeySeen::Read,
        body,
        run_id.clone(),
        Some(mark),
    )
    .await
    {
        // The store recorded this answer in the transaction that created the run.
        Ok(run) => Ok(Answered {
            answer: Answer::created(&run),
            replayed: false,
        }),
        Err(CreateFailure::NotStarted(e)) => {
            settle(store, &claim, Settle::Release).await;
            Err(e)
        }
        // Only a fresh key is claimed by the create; this one was claimed before it.
        Err(CreateFailure::KeyTaken) => {
            settle(store, &claim, Settle::Release).await;
            Err(ErrorCode::IdempotencyKeyInUse.into())
        }
        Err(CreateFailure::Refused(e)) if keeps(&e) => {
            Ok(answer(store, &claim, Answer::error(&e), false).await)
        }
        Err(CreateFailure::Refused(e)) => {
            settle(store, &claim, Settle::Release).await;
            Err(e)
        }
        Err(CreateFailure::Failed(e)) => {
            // The commit may have happened though its answer was lost.
            if let Some(run) = existing_run(store, &key.account_id, &run_id).await {
                return Ok(answer(store, &claim, Answer::created(&run), false).await);
            }
            settle(store, &claim, Settle::Abandon).await;
            Err(e)
        }
    }
}

/// A create with an `Idempotency-Key` whose API key was authenticated from this node's
/// remembered copy ([`KeySeen::Remembered`]), without reading its row. Answers `Some` only for
/// what the store decided on the key's locked row: the run created (with its `201` written under
/// the idempotency key in the same transaction), or a create whose outcome is unknown. `None`
/// for anything else (a replay, a key in use, any refusal): nothing was written under the key,
/// and the caller reads the key's row and calls [`create_run`], so that no recorded answer,
/// refusal or conflict is given on the copy's word.
pub async fn create_run_remembered(
    store: &dyn Store,
    catalog: &Catalog,
    in_flight: &InFlightKeys,
    key: &ApiKey,
    body: &[u8],
    idempotency_key: &str,
) -> Result<Option<Answered>, ApiError> {
    if !store.claims_keys_in_creates() {
        return Ok(None);
    }
    let new = create_claim(key, body, idempotency_key);
    let Some(_held) = in_flight.hold(&key.account_id, &new.key) else {
        return Ok(None);
    };
    match create_fresh(store, catalog, key, KeySeen::Remembered, body, &new).await {
        Ok(answered) => Ok(Some(answered)),
        Err(CreateFailure::Failed(e)) => Err(e),
        Err(_) => Ok(None),
    }
}

/// The claim a create with `idempotency_key` makes: the key as stored for the API key's mode,
/// the request's fingerprint, and the run id chosen for it.
fn create_claim(key: &ApiKey, body: &[u8], idempotency_key: &str) -> NewClaim {
    NewClaim::new(
        &key.account_id,
        &stored_key(key, idempotency_key),
        key_fingerprint(key, "POST", "/api/v1/runs", body),
        Some(crate::ids::new_run_id()),
    )
}

/// The create, claiming its fresh key in its own transaction. Answers the run created (its `201`
/// was written under the key in that transaction), or, after a failure, the run if it exists
/// (the transaction wrote both or neither); gives back any other failure.
async fn create_fresh(
    store: &dyn Store,
    catalog: &Catalog,
    key: &ApiKey,
    seen: KeySeen,
    body: &[u8],
    new: &NewClaim,
) -> Result<Answered, CreateFailure> {
    let run_id = new.run_id.clone().unwrap_or_else(crate::ids::new_run_id);
    let mark = RunMark {
        key: new.key.clone(),
        claimed_at: new.now,
        fresh: Some(FreshKey {
            fingerprint: new.fingerprint.clone(),
            expired_before: new.expired_before,
        }),
    };
    let run =
        match service::create_run_as(store, catalog, key, seen, body, run_id.clone(), Some(mark))
            .await
        {
            Ok(run) => run,
            Err(CreateFailure::Failed(e)) => existing_run(store, &key.account_id, &run_id)
                .await
                .ok_or(CreateFailure::Failed(e))?,
            Err(failure) => return Err(failure),
        };
    Ok(Answered {
        answer: Answer::created(&run),
        replayed: false,
    })
}

/// A create whose key is claimed by the create's own transaction: one write for a first
/// request, whatever its answer. `None` when the key's row is an in-flight claim, which the
/// claiming path must settle.
async fn create_claiming_in_the_create(
    store: &dyn Store,
    catalog: &Catalog,
    key: &ApiKey,
    body: &[u8],
    new: &NewClaim,
) -> Result<Option<Answered>, ApiError> {
    let failure = match create_fresh(store, catalog, key, KeySeen::Read, body, new).await {
        Ok(answered) => return Ok(Some(answered)),
        Err(failure) => failure,
    };
    match failure {
        // The key has a row: a replay, another request's, or an in-flight claim.
        CreateFailure::KeyTaken => answer_from_record(store, new).await,
        // Nothing was written under the key. A body refused before it was checked may still be
        // a repeat of a kept request (replays come before the body's checks).
        CreateFailure::NotStarted(e) => match answer_from_record(store, new).await {
            Ok(Some(answered)) => Ok(Some(answered)),
            Err(conflict) if conflict.code == ErrorCode::IdempotencyKeyMismatch => Err(conflict),
            _ => Err(e),
        },
        // A kept refusal is written under the key now: claimed, then settled with it.
        CreateFailure::Refused(e) if keeps(&e) => {
            let claim = match begin(store, new).await? {
                Ok(claim) => claim,
                Err(answered) => return Ok(Some(answered)),
            };
            Ok(Some(answer(store, &claim, Answer::error(&e), false).await))
        }
        // Refused, or failed with no run made (`create_fresh` looked).
        CreateFailure::Refused(e) | CreateFailure::Failed(e) => Err(e),
    }
}

/// The answer a key's row gives a request (a replay, or a `409`); `None` when the row is an
/// in-flight claim of the same request, or gone.
async fn answer_from_record(
    store: &dyn Store,
    new: &NewClaim,
) -> Result<Option<Answered>, ApiError> {
    let record = store
        .idempotency_record(&new.account_id, &new.key, new.expired_before)
        .await
        .map_err(internal)?;
    match record {
        None => Ok(None),
        Some(r) if r.fingerprint != new.fingerprint => {
            Err(ErrorCode::IdempotencyKeyMismatch.into())
        }
        Some(Record {
            answer: Some(answer),
            ..
        }) => Ok(Some(Answered {
            answer,
            replayed: true,
        })),
        Some(Record { answer: None, .. }) => Ok(None),
    }
}

async fn existing_run(store: &dyn Store, account_id: &str, run_id: &str) -> Option<Run> {
    store.get_run(account_id, run_id).await.ok().flatten()
}

/// `POST /api/v1/runs/{id}/cancel` with an `Idempotency-Key`. A cancel is idempotent in itself;
/// the key makes its answer, the run as the first cancel left it, the one every retry gets.
pub async fn cancel_run(
    store: &dyn Store,
    key: &ApiKey,
    run_id: &str,
    body: &[u8],
    idempotency_key: &str,
) -> Result<Answered, ApiError> {
    let path = format!("/api/v1/runs/{run_id}/cancel");
    let new = NewClaim::new(
        &key.account_id,
        &stored_key(key, idempotency_key),
        key_fingerprint(key, "POST", &path, body),
        None,
    );
    let claim = match begin(store, &new).await? {
        Ok(claim) => claim,
        Err(answered) => return Ok(answered),
    };
    match service::cancel_run(store, key, run_id).await {
        Ok(run) => Ok(answer(store, &claim, Answer::ok(&run), false).await),
        Err(e) if keeps(&e) => Ok(answer(store, &claim, Answer::error(&e), false).await),
        Err(e) => {
            settle(store, &claim, Settle::Abandon).await;
            Err(e)
        }
    }
}

/// Deletes the keys kept longer than [`KEEP_HOURS`], a bounded batch at a time; returns how
/// many. Expired keys are also replaced when reused, so this only bounds the table's size.
pub async fn sweep(store: &dyn Store) -> Result<u64, StoreError> {
    const BATCH: u32 = 10_000;
    let expired_before = Timestamp(Timestamp::now().0 - KEEP_HOURS * 3600 * MICROS_PER_SEC);
    let mut total = 0;
    loop {
        let n = store.sweep_idempotency_keys(expired_before, BATCH).await?;
        total += n;
        if n < u64::from(BATCH) {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Result<Option<String>, ApiError> {
        parse_key(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn keys_are_1_to_255_printable_ascii_characters() {
        assert_eq!(parse(&[]).unwrap(), None);
        assert_eq!(parse(&["a"]).unwrap().as_deref(), Some("a"));
        let longest = "k".repeat(255);
        assert_eq!(parse(&[&longest]).unwrap(), Some(longest));
        for bad in ["", "é", "tab\there"] {
            let e = parse(&[bad]).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{bad:?}");
        }
        let e = parse(&[&"k".repeat(256)]).unwrap_err();
        assert!(e.message.contains("256"), "{}", e.message);
        assert!(parse(&["a", "b"]).is_err());
    }

    #[test]
    fn the_fingerprint_covers_method_path_and_body() {
        let f = fingerprint("POST", "/api/v1/runs", b"{}");
        assert_eq!(f.len(), 64);
        assert_eq!(f, fingerprint("POST", "/api/v1/runs", b"{}"));
        assert_ne!(f, fingerprint("POST", "/api/v1/runs", b"{} "));
        assert_ne!(f, fingerprint("POST", "/api/v1/runs/x/cancel", b"{}"));
        assert_ne!(f, fingerprint("PUT", "/api/v1/runs", b"{}"));
    }

    #[test]
    fn a_key_is_held_once_until_its_holder_is_dropped() {
        let keys = InFlightKeys::default();
        let held = keys.hold("acct_a", "k").unwrap();
        assert!(keys.hold("acct_a", "k").is_none(), "held already");
        assert!(
            keys.hold("acct_a", "k").is_none(),
            "a refused hold leaves the holder's"
        );
        let other = keys.hold("acct_b", "k").unwrap();
        drop(held);
        assert!(keys.hold("acct_a", "k").is_some());
        drop(other);
    }

    #[test]
    fn refusals_are_kept_and_transient_failures_are_not() {
        for kept in [200, 201, 401, 402, 403, 404] {
            assert!(is_kept(kept), "{kept}");
        }
        for not in [429, 500, 502, 503] {
            assert!(!is_kept(not), "{not}");
        }
    }
}
