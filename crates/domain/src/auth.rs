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

/// Step 1: a well-formed header; answers the hash the key is looked up by.
pub fn key_hash(header: Option<&str>) -> Result<KeyHash, ApiError> {
    let token = bearer_key(header)?;
    if token.len() > 200 {
        return Err(ErrorCode::InvalidApiKey.into());
    }
    Ok(KeyHash::of(token))
}

/// Step 2 on a looked-up row: it is the key with this hash, and usable at `now`.
pub fn usable(found: Option<ApiKey>, hash: &KeyHash, now: Timestamp) -> Result<ApiKey, ApiError> {
    match found {
        Some(k) if k.hash.ct_eq(hash) && k.is_usable(now) => Ok(k),
        _ => Err(ErrorCode::InvalidApiKey.into()),
    }
}

/// Steps 1 and 2 of the check order: a well-formed header naming a usable key. Reads the key's
/// current row, so a disabled, expired or deleted key fails on the very next request.
pub async fn authenticate(
    store: &dyn Store,
    header: Option<&str>,
    now: Timestamp,
) -> Result<ApiKey, ApiError> {
    let hash = key_hash(header)?;
    let key = store
        .key_by_hash(&hash)
        .await
        .map_err(crate::service::internal)?;
    usable(key, &hash, now)
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

/// How a request's key was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySeen {
    /// From its current row, read for the request: steps 1–3 passed on it.
    Read,
    /// From [`RecentKeys`]' copy, without a read: a create whose store transaction re-checks
    /// the key on the row it locks ([`crate::run::NewRun::key_remembered`]). Only for a copy
    /// that is usable and has no IP allowlist.
    Remembered,
}

/// How old a remembered key may be when [`RecentKeys`] answers it.
pub const RECENT_KEY_TTL: std::time::Duration = std::time::Duration::from_secs(1);
/// Keys remembered at most; past it the memory starts over (a flood of distinct keys cannot
/// grow it).
const RECENT_KEYS_MAX: usize = 65_536;

/// The keys this process authenticated in the last [`RECENT_KEY_TTL`], by hash. Used for two
/// things, neither of which lets a disabled key do anything on its very next request:
/// - to answer 429 to a key that is over its rate limit without reading its row (the limiter is
///   asked first; when it refuses, the answer is 429 whatever the row says now). For at most
///   [`RECENT_KEY_TTL`] after a disable, a deletion or an allowlist change, a key that is also
///   over its limit is answered 429 instead of 401 or 403;
/// - to authenticate a create without reading the key's row ([`KeySeen::Remembered`]), when the
///   copy is usable and has no allowlist. The create's store transaction checks the key again
///   on the row it locks, and any other answer than the run created is given only after the
///   row was read ([`crate::run::NewRun::key_remembered`], the HTTP create).
///
/// Every other request reads the key's current row. Only what those uses read of a key is kept
/// current: its id, whether it is usable, and its allowlist (its account and test flag never
/// change). A key read again with those unchanged only has its time renewed (every create
/// changes its spend and count): a request costs no copy of the key here. So the copy's spend,
/// quota and limits may be old: a create does not trust them (its store transaction checks
/// them on the row), and a create they refused is answered from the row. A create refused in
/// any way forgets the copy, so that the row read next (for that answer, or by the next
/// request) is copied afresh.
///
/// A key read by a path that may leave columns out ([`crate::store::Store::key_and_run`]) is
/// remembered as partial: it serves the early refusal, never a create.
#[derive(Default)]
pub struct RecentKeys {
    keys: std::sync::Mutex<std::collections::HashMap<String, Remembered>>,
}

/// A remembered key: the copy, when it was last read, and whether every column was read.
struct Remembered {
    key: std::sync::Arc<ApiKey>,
    at: std::time::Instant,
    whole: bool,
}

impl RecentKeys {
    /// The remembered key with this hash, whole or partial, unless it is older than
    /// [`RECENT_KEY_TTL`]. Only its id, usability and allowlist are current (see
    /// [`RecentKeys`]).
    pub fn get(&self, hash: &KeyHash) -> Option<std::sync::Arc<ApiKey>> {
        self.find(hash, false)
    }

    /// [`RecentKeys::get`], for a copy read whole (every column): its account and test flag
    /// are the row's.
    pub fn get_whole(&self, hash: &KeyHash) -> Option<std::sync::Arc<ApiKey>> {
        self.find(hash, true)
    }

    fn find(&self, hash: &KeyHash, whole: bool) -> Option<std::sync::Arc<ApiKey>> {
        let keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.get(&hash.0)
            .filter(|r| r.at.elapsed() < RECENT_KEY_TTL && (r.whole || !whole))
            .map(|r| r.key.clone())
    }

    /// Remembers a key just read from the store; `whole` when every column was read.
    pub fn put(&self, key: &ApiKey, whole: bool) {
        let now = std::time::Instant::now();
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(known) = keys.get_mut(&key.hash.0)
            && same_for_refusal(&known.key, key)
            && (known.whole || !whole)
        {
            known.at = now;
            return;
        }
        if keys.len() >= RECENT_KEYS_MAX && !keys.contains_key(&key.hash.0) {
            keys.clear();
        }
        keys.insert(
            key.hash.0.clone(),
            Remembered {
                key: std::sync::Arc::new(key.clone()),
                at: now,
                whole,
            },
        );
    }

    /// Forgets the key with this hash: the next request reads its row.
    pub fn forget(&self, hash: &KeyHash) {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&hash.0);
    }
}

/// Whether `a` and `b` agree on everything the early refusal reads of a key.
fn same_for_refusal(a: &ApiKey, b: &ApiKey) -> bool {
    a.id == b.id
        && a.disabled == b.disabled
        && a.deleted_at == b.deleted_at
        && a.expires_at == b.expires_at
        && a.allow_ips == b.allow_ips
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ApiKey {
        ApiKey {
            id: "key_1".into(),
            account_id: "acct_1".into(),
            name: String::new(),
            prefix: "sk-x".into(),
            hash: KeyHash::of("sk-x"),
            disabled: false,
            test: false,
            expires_at: None,
            allow_ips: Default::default(),
            spend_limit: None,
            spent: crate::money::Millicents::ZERO,
            quota: None,
            runs_created: 0,
            created_at: Timestamp(0),
            last_used_at: None,
            deleted_at: None,
        }
    }

    /// A key read again with what the early refusal reads unchanged keeps its remembered copy
    /// (a create changes only its spend and count); any change of those is remembered at once.
    #[test]
    fn recent_keys_copy_a_key_only_when_what_the_refusal_reads_changed() {
        let recent = RecentKeys::default();
        let mut k = key();
        recent.put(&k, true);
        let first = recent.get(&k.hash).unwrap();
        k.spent = crate::money::Millicents(500);
        k.runs_created = 7;
        recent.put(&k, true);
        assert!(std::sync::Arc::ptr_eq(
            &first,
            &recent.get(&k.hash).unwrap()
        ));
        for change in [
            |k: &mut ApiKey| k.id = "key_2".into(),
            |k: &mut ApiKey| k.disabled = true,
            |k: &mut ApiKey| k.deleted_at = Some(Timestamp(5)),
            |k: &mut ApiKey| k.expires_at = Some(Timestamp(9)),
            |k: &mut ApiKey| k.allow_ips = crate::ip::IpAllowlist::parse(&["10.0.0.0/8"]).unwrap(),
        ] {
            let mut changed = key();
            change(&mut changed);
            recent.put(&changed, true);
            assert_eq!(*recent.get(&k.hash).unwrap(), changed);
            recent.put(&key(), true);
            assert_eq!(*recent.get(&k.hash).unwrap(), key());
        }
    }

    /// A copy read partially (some columns left out) serves the early refusal but never a
    /// create, does not replace a whole copy that agrees with it (only renews it), and is
    /// replaced by a whole read. A forgotten key is not remembered at all.
    #[test]
    fn partial_copies_never_serve_a_create() {
        let recent = RecentKeys::default();
        let mut partial = key();
        partial.test = false;
        partial.quota = None;
        let mut whole = key();
        whole.test = true;
        recent.put(&partial, false);
        assert!(recent.get(&whole.hash).is_some());
        assert!(recent.get_whole(&whole.hash).is_none());
        recent.put(&whole, true);
        assert!(recent.get_whole(&whole.hash).unwrap().test);
        recent.put(&partial, false);
        assert!(recent.get_whole(&whole.hash).unwrap().test, "kept whole");
        recent.forget(&whole.hash);
        assert!(recent.get(&whole.hash).is_none());
    }

    /// A key read again is remembered for another [`RECENT_KEY_TTL`] from then, also when its
    /// copy is kept. (Timed with sleeps: an attempt the machine delayed too long to tell is
    /// tried again.)
    #[test]
    fn a_key_read_again_is_remembered_from_then() {
        for _ in 0..5 {
            let recent = RecentKeys::default();
            let mut k = key();
            let first = std::time::Instant::now();
            recent.put(&k, true);
            std::thread::sleep(RECENT_KEY_TTL * 6 / 10);
            let renewed = std::time::Instant::now();
            k.runs_created = 1;
            recent.put(&k, true);
            std::thread::sleep(RECENT_KEY_TTL * 6 / 10);
            let got = recent.get(&k.hash);
            if renewed.elapsed() >= RECENT_KEY_TTL {
                continue;
            }
            // Past a TTL from the first read: only the second kept the key.
            assert!(first.elapsed() >= RECENT_KEY_TTL);
            assert!(got.is_some(), "renewed by the second read");
            std::thread::sleep(RECENT_KEY_TTL);
            assert!(
                recent.get(&k.hash).is_none(),
                "forgotten a TTL after the last read"
            );
            return;
        }
        panic!("every attempt was delayed past the TTL");
    }

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
