//! Identifiers and secrets: opaque prefixed ids, API keys and their hashes.

use rand::RngExt;
use sha2::{Digest, Sha256};
use std::fmt;

const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Whether `s` could be a run id Runbase made: `run_` then up to 60 of `[0-9a-z]` (older ids
/// included). Anything else names no run, and is answered without asking the store (PostgreSQL,
/// for one, refuses a NUL in a text parameter as an error).
pub fn looks_like_run_id(s: &str) -> bool {
    s.strip_prefix("run_").is_some_and(|rest| {
        !rest.is_empty()
            && rest.len() <= 60
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// `len` random characters from `[0-9a-z]`, from the operating system's CSPRNG-seeded generator.
pub fn random_token(len: usize) -> String {
    prefixed_token("", len)
}

/// `prefix` followed by [`random_token`]`(len)`, in one allocation (ids are made on every
/// request: a `Request-Id`, a run's id).
pub fn prefixed_token(prefix: &str, len: usize) -> String {
    let mut s = String::with_capacity(prefix.len() + len);
    s.push_str(prefix);
    push_random(&mut s, len);
    s
}

fn push_random(out: &mut String, len: usize) {
    let mut rng = rand::rng();
    out.extend((0..len).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char));
}

/// A new run id: `run_`, the creation time (microseconds, 10 base-36 digits), then 16 random
/// base-36 characters (about 82 bits, which keeps the output file URLs under it unguessable).
///
/// Time first, so ids sort roughly by creation: the unique index on run ids (and the ledger's
/// index by run) grow at their right edge instead of taking every insert on a random page, which
/// halved the pages each commit writes (BENCHMARKS.md).
pub fn new_run_id() -> String {
    time_ordered("run_")
}

/// `prefix`, the time in microseconds as 10 base-36 digits, then 16 random characters.
fn time_ordered(prefix: &str) -> String {
    let micros = u64::try_from(crate::time::Timestamp::now().micros()).unwrap_or(0);
    let mut s = String::with_capacity(prefix.len() + 26);
    s.push_str(prefix);
    push_base36_fixed(&mut s, micros, 10);
    push_random(&mut s, 16);
    s
}

/// `n` in base 36, left-padded with zeros to `width` digits (wider if it does not fit).
fn push_base36_fixed(out: &mut String, mut n: u64, width: usize) {
    // u64::MAX has 13 base-36 digits.
    let mut digits = [b'0'; 13];
    let mut first = digits.len();
    while n > 0 {
        first -= 1;
        digits[first] = ALPHABET[(n % 36) as usize];
        n /= 36;
    }
    out.extend(std::iter::repeat_n(
        '0',
        width.saturating_sub(digits.len() - first),
    ));
    out.extend(digits[first..].iter().map(|&b| b as char));
}

/// A new upload id: `upl_`, then the same time-ordered, ~82-bit random shape as a run id. The
/// upload's URL is learned from the answer to the upload, never guessed.
pub fn new_upload_id() -> String {
    time_ordered("upl_")
}

pub fn new_account_id() -> String {
    format!("acct_{}", random_token(16))
}

pub fn new_key_id() -> String {
    format!("key_{}", random_token(16))
}

/// A freshly generated API key: the secret (shown once) and what is stored of it.
pub struct NewKeySecret {
    pub secret: ApiKeySecret,
    pub hash: KeyHash,
    /// The first characters, safe to show in listings (`sk-ab12cd34`).
    pub prefix: String,
}

/// Generates a key: `sk-` followed by 40 base-36 characters (about 206 bits of randomness);
/// `test` keys are `sk-test-...`.
pub fn generate_api_key(test: bool) -> NewKeySecret {
    let body = random_token(40);
    let secret = if test {
        format!("sk-test-{body}")
    } else {
        format!("sk-{body}")
    };
    let prefix_len = if test { 16 } else { 11 };
    let prefix = secret[..prefix_len].to_owned();
    let hash = KeyHash::of(&secret);
    NewKeySecret {
        secret: ApiKeySecret(secret),
        hash,
        prefix,
    }
}

/// The secret API key. Its `Debug` is redacted so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(pub String);

impl ApiKeySecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeySecret(<redacted>)")
    }
}

/// SHA-256 of a key, hex encoded: what the store keeps and looks keys up by. Keys carry enough
/// randomness that a fast unsalted hash is the right tool (as for session tokens).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyHash(pub String);

impl KeyHash {
    pub fn of(secret: &str) -> Self {
        KeyHash(hex::encode(Sha256::digest(secret.as_bytes())))
    }

    /// Constant-time comparison, for confirming a row found by hash.
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_sort_by_creation_and_stay_unguessable() {
        let a = new_run_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_run_id();
        assert!(a < b, "{a} < {b}");
        assert_eq!(a.len(), 30);
        assert!(a.starts_with("run_"));
        assert_ne!(a[14..], b[14..]);
        let base36 = |n, width| {
            let mut s = String::new();
            push_base36_fixed(&mut s, n, width);
            s
        };
        assert_eq!(base36(35, 3), "00z");
        assert_eq!(base36(0, 3), "000");
        assert_eq!(base36(36 * 36, 2), "100");
        assert_eq!(base36(u64::MAX, 10), "3w5e11264sgsf");
        assert_eq!(base36(1, 15), "000000000000001");
        assert!(new_upload_id().starts_with("upl_") && new_upload_id().len() == 30);
        assert_eq!(prefixed_token("req_", 20).len(), 24);
    }

    #[test]
    fn keys_have_the_documented_shape() {
        let k = generate_api_key(false);
        assert!(k.secret.expose().starts_with("sk-"));
        assert_eq!(k.secret.expose().len(), 43);
        assert!(k.secret.expose().starts_with(&k.prefix));
        assert_eq!(KeyHash::of(k.secret.expose()), k.hash);
        assert!(
            generate_api_key(true)
                .secret
                .expose()
                .starts_with("sk-test-")
        );
        assert_ne!(
            generate_api_key(false).secret,
            generate_api_key(false).secret
        );
        assert_eq!(format!("{:?}", k.secret), "ApiKeySecret(<redacted>)");
    }
}
