//! Sign-ins started and not yet finished: the state sent to the provider, with the PKCE
//! verifier and nonce kept on the server (never sent to the browser), bound to the browser that
//! started them, usable once and for [`PENDING_FOR`].
//!
//! They are kept in the store, so that with several API nodes any node can finish a sign-in
//! another one started. Only hashes of the state and of the browser's cookie are stored.

use runbase_domain::identities::PendingSignIn;
use runbase_domain::ids::KeyHash;
use runbase_domain::service::internal;
use runbase_domain::store::Store;
use runbase_domain::time::Timestamp;
use runbase_domain::{ApiError, ErrorCode};
use std::time::Duration;

/// How long a user has at the provider to finish signing in.
pub const PENDING_FOR: Duration = Duration::from_secs(600);

fn hash(s: &str) -> String {
    KeyHash::of(s).0
}

/// What [`start`] keeps.
pub struct NewPending<'a> {
    pub state: &'a str,
    pub provider: &'a str,
    pub verifier: String,
    pub nonce: String,
    pub next: String,
    /// The browser's binding cookie.
    pub binding: &'a str,
}

/// Keeps a sign-in under its `state`.
pub async fn start(store: &dyn Store, p: NewPending<'_>) -> Result<(), ApiError> {
    let now = Timestamp::now();
    let pending = PendingSignIn {
        state_hash: hash(p.state),
        provider: p.provider.to_owned(),
        binding_hash: hash(p.binding),
        verifier: p.verifier,
        nonce: p.nonce,
        next: p.next,
        expires_at: Timestamp(now.0 + PENDING_FOR.as_micros() as i64),
    };
    store
        .put_pending_sign_in(&pending, now)
        .await
        .map_err(internal)
}

/// Takes the sign-in `state` names, once: it must be of this provider, started by this
/// browser (`binding`, its cookie) and not expired. A state that fails is gone all the same.
pub async fn take(
    store: &dyn Store,
    state: &str,
    provider: &str,
    binding: Option<&str>,
) -> Result<Option<PendingSignIn>, ApiError> {
    use subtle::ConstantTimeEq;
    if state.is_empty() || state.len() > 128 {
        return Ok(None);
    }
    let Some(p) = store
        .take_pending_sign_in(&hash(state))
        .await
        .map_err(internal)?
    else {
        return Ok(None);
    };
    let same_browser =
        binding.is_some_and(|b| bool::from(hash(b).as_bytes().ct_eq(p.binding_hash.as_bytes())));
    let fresh = p.expires_at.0 > Timestamp::now().0;
    Ok((same_browser && p.provider == provider && fresh).then_some(p))
}

/// The refusal of a state that is wrong, used, expired or from another browser.
pub fn invalid() -> ApiError {
    ApiError::new(
        ErrorCode::SignInFailed,
        "This sign-in is not valid: it expired, was used already, or was started in another \
         browser. Start again from the log-in page.",
    )
}
