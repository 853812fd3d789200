//! Passwords: argon2id with the `argon2` crate's defaults (the OWASP-recommended parameters,
//! 19 MiB, 2 passes), stored as PHC strings so the parameters can be raised later without
//! invalidating old hashes.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};

/// Shortest password accepted at sign-up and password change.
pub const MIN_LEN: usize = 10;
/// Longest password accepted (bytes): bounds the hashing work an attacker can ask for.
pub const MAX_LEN: usize = 512;

/// Why a new password is refused; the message is for the user.
pub fn check_new(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_LEN {
        return Err(format!(
            "The password must be at least {MIN_LEN} characters long"
        ));
    }
    if password.len() > MAX_LEN {
        return Err(format!("The password must be at most {MAX_LEN} bytes long"));
    }
    Ok(())
}

/// An argon2id PHC string for `password`. CPU-heavy (tens of milliseconds): call it off the
/// async executor.
pub fn hash(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing a password: {e}"))
}

/// Whether `password` matches `phc`. A malformed stored hash never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    if password.len() > MAX_LEN {
        return false;
    }
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash of nothing anyone knows, verified against when the email is unknown, so that a wrong
/// email and a wrong password take the same time (no account enumeration by timing).
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let random = crate::ids::random_token(32);
        hash(&random).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("correct horse battery", &h));
        assert!(!verify("correct horse batterY", &h));
        assert!(!verify("correct horse battery", "not a phc string"));
        assert!(!verify("anything", decoy_hash()));
    }

    #[test]
    fn new_password_rules() {
        assert!(check_new("short").is_err());
        assert!(check_new("long enough!").is_ok());
        assert!(check_new(&"x".repeat(MAX_LEN + 1)).is_err());
    }
}
