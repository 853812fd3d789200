//! Authenticating an API request: the bearer key, its state, the client's address.

use crate::account::ApiKey;
use crate::error::{ApiError, ErrorCode};
use crate::ids::KeyHash;
use crate::store::Store;
use crate::time::Timestamp;
use std::net::IpAddr;

/// The key in an `Authorization: Bearer sk-...` header, or `missing_api_key`.
pub fn bearer_key(header: Option<&str>) -> Result<&str, ApiError> {
    let value = header.ok_or(ErrorCode::MissingApiKey)?.trim();
    let (scheme, token) = value.split_once(' ').ok_or(ErrorCode::MissingApiKey)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || !token.starts_with("sk-") {
        return Err(ErrorCode::MissingApiKey.into());
    }
    Ok(token)
}

/// Steps 1 and 2 of the check order: a well-formed header naming a usable key. Reads the key's
/// current row, so a disabled, expired or deleted key fails on the very next request.
pub async fn authenticate(
    store: &dyn Store,
    header: Option<&str>,
    now: Timestamp,
) -> Result<ApiKey, ApiError> {
    let token = bearer_key(header)?;
    if token.len() > 200 {
        return Err(ErrorCode::InvalidApiKey.into());
    }
    let hash = KeyHash::of(token);
    let key = store.key_by_hash(&hash).await.map_err(|e| {
        tracing::error!(error = %e, "key lookup failed");
        ApiError::internal()
    })?;
    match key {
        Some(k) if k.hash.ct_eq(&hash) && k.is_usable(now) => Ok(k),
        _ => Err(ErrorCode::InvalidApiKey.into()),
    }
}

/// How stale `last_used_at` may get before a request refreshes it. Keeps the hot path free of a
/// write per request while the dashboard still shows when a key was last used, to the minute.
pub const LAST_USED_RESOLUTION_MICROS: i64 = 60_000_000;

/// Whether this use of the key should be recorded (see [`LAST_USED_RESOLUTION_MICROS`]).
pub fn should_touch(key: &ApiKey, now: Timestamp) -> bool {
    key.last_used_at
        .is_none_or(|t| now.0 - t.0 >= LAST_USED_RESOLUTION_MICROS)
}

/// Step 3: the client address against the key's allowlist.
pub fn check_ip(key: &ApiKey, client: IpAddr) -> Result<(), ApiError> {
    if key.allow_ips.allows(client) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::IpNotAllowed,
            format!(
                "Your IP address ({}) is not in this API key's allowed list",
                crate::ip::canonical(client)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer_key(Some("Bearer sk-abc")).unwrap(), "sk-abc");
        assert_eq!(bearer_key(Some("bearer  sk-abc ")).unwrap(), "sk-abc");
        for bad in [
            None,
            Some(""),
            Some("sk-abc"),
            Some("Basic sk-abc"),
            Some("Bearer abc"),
            Some("Bearer"),
        ] {
            assert_eq!(
                bearer_key(bad).unwrap_err().code,
                ErrorCode::MissingApiKey,
                "{bad:?}"
            );
        }
    }
}
