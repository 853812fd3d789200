//! Sign-in with an OpenID Connect provider, once its ID token has been verified: which account
//! an identity (issuer, subject) signs in to, linking or creating one on first use.
//!
//! An email address links an identity to an existing account, or names a new one, only when
//! the provider says it verified the address: otherwise anyone who can type a victim's address
//! into some provider's sign-up form would sign in as the victim.

use crate::account::{Account, NewAccount};
use crate::error::{ApiError, ErrorCode};
use crate::service::{internal, normalize_email};
use crate::sessions::{OpenedSession, open};
use crate::store::{Store, StoreError};
use crate::time::Timestamp;

/// A sign-in started and not yet finished (see the dashboard's `oidc` module).
#[derive(Debug, Clone, PartialEq)]
pub struct PendingSignIn {
    /// SHA-256 (hex) of the `state` sent to the provider.
    pub state_hash: String,
    pub provider: String,
    /// SHA-256 (hex) of the cookie binding it to the browser that started it.
    pub binding_hash: String,
    /// The PKCE code verifier.
    pub verifier: String,
    pub nonce: String,
    /// Where to go once signed in (a local path).
    pub next: String,
    pub expires_at: Timestamp,
}

/// What a verified ID token says about the user.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedIdentity {
    /// The provider's `iss`, exactly as configured and as in the token.
    pub issuer: String,
    /// `sub`: the provider's stable id of the user.
    pub subject: String,
    pub email: Option<String>,
    /// `email_verified`; absent counts as false.
    pub email_verified: bool,
}

/// Opens a session for the identity: the account it is linked to; otherwise the account with
/// its (verified) email, which it is linked to; otherwise a new account with that email, made
/// by the same store call as a password sign-up, and linked.
/// A new account gets `signup_credit` (`[accounts] signup_credit_cents`), as any sign-up does.
pub async fn sign_in(
    store: &dyn Store,
    identity: &VerifiedIdentity,
    signup_credit: crate::money::Millicents,
) -> Result<OpenedSession, ApiError> {
    let (issuer, subject) = (identity.issuer.as_str(), identity.subject.as_str());
    if let Some(account) = linked(store, identity).await? {
        return open(store, account).await;
    }
    let Some(email) = identity.email.as_deref() else {
        return Err(ApiError::new(
            ErrorCode::SignInFailed,
            "The identity provider did not send an email address (the \"email\" scope is needed)",
        ));
    };
    let email = normalize_email(email)
        .map_err(|e| ApiError::new(ErrorCode::SignInFailed, e.to_string()))?;
    if !identity.email_verified {
        return Err(ApiError::new(
            ErrorCode::EmailNotVerified,
            format!(
                "The identity provider has not verified {email}, so it neither signs in to nor \
                 creates an account here. Verify it with the provider, or sign up with a password."
            ),
        ));
    }
    let now = Timestamp::now();
    let account = match store.account_by_email(&email).await.map_err(internal)? {
        // An account with a password was made by someone who typed the address, and nobody has
        // proven they own it: linking would let whoever signed up first in someone else's name
        // keep a way into the account the real owner then uses (pre-account hijacking). The
        // owner logs in with the password instead.
        Some(a)
            if store
                .password_hash(&a.id)
                .await
                .map_err(internal)?
                .is_some() =>
        {
            return Err(ApiError::new(
                ErrorCode::SignInFailed,
                format!(
                    "An account with {email} already exists and signs in with a password. Log in \
                     with your email and password."
                ),
            ));
        }
        Some(a) => a,
        None => match store
            .create_account_with(
                NewAccount {
                    email: email.clone(),
                    password_hash: None,
                    admin: false,
                    signup_credit,
                },
                now,
            )
            .await
        {
            Ok(a) => a,
            // Made in the meantime (another sign-in or sign-up with the same email).
            Err(StoreError::Conflict(_)) => store
                .account_by_email(&email)
                .await
                .map_err(internal)?
                .ok_or_else(ApiError::internal)?,
            Err(e) => return Err(internal(e)),
        },
    };
    match store.link_identity(issuer, subject, &account.id, now).await {
        Ok(()) => open(store, account).await,
        // Linked in the meantime by a concurrent callback: sign in to whatever it linked.
        Err(StoreError::Conflict(_)) => match linked(store, identity).await? {
            Some(a) => open(store, a).await,
            None => Err(ApiError::internal()),
        },
        Err(e) => Err(internal(e)),
    }
}

async fn linked(
    store: &dyn Store,
    identity: &VerifiedIdentity,
) -> Result<Option<Account>, ApiError> {
    store
        .account_by_identity(&identity.issuer, &identity.subject)
        .await
        .map_err(internal)
}
