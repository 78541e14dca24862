//! Password hashes as etcd stores them: bcrypt, `$2a$` form, at
//! `--bcrypt-cost` (Go's default 10), so users migrated from etcd log in
//! with their old passwords and etcd could read ours.
//!
//! Hashing takes tens of milliseconds by design: callers run it off the
//! async runtime, and before proposing, so raft never carries a plaintext
//! password and applying an entry never waits for it.

use crate::error::AuthError;

/// etcd's default `--bcrypt-cost` (Go's `bcrypt.DefaultCost`).
pub const DEFAULT_BCRYPT_COST: u32 = 10;
/// The costs Go's bcrypt accepts.
pub const MIN_BCRYPT_COST: u32 = 4;
pub const MAX_BCRYPT_COST: u32 = 31;

/// bcrypt reads at most this many bytes of a password (Go refuses longer
/// ones since 2024; etcd 3.4's Go truncated them). Longer passwords are
/// refused with etcd's "authentication failed" rather than truncated.
pub const MAX_PASSWORD_BYTES: usize = 72;

pub fn hash_password(password: &str, cost: u32) -> Result<Vec<u8>, AuthError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::AuthFailed);
    }
    let parts = bcrypt::hash_with_result(password, cost).map_err(|_| AuthError::AuthFailed)?;
    Ok(parts.format_for_version(bcrypt::Version::TwoA).into_bytes())
}

/// Whether `password` matches a stored hash; a malformed hash matches nothing.
pub fn password_matches(password: &str, hash: &[u8]) -> bool {
    let Ok(hash) = std::str::from_utf8(hash) else { return false };
    password.len() <= MAX_PASSWORD_BYTES && bcrypt::verify(password, hash).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_matches_its_password_only() {
        let hash = hash_password("secret", MIN_BCRYPT_COST).unwrap();
        assert!(hash.starts_with(b"$2a$04$"));
        assert!(password_matches("secret", &hash));
        assert!(!password_matches("Secret", &hash));
        assert!(!password_matches("secret", b"not a hash"));
    }

    #[test]
    fn hashes_made_elsewhere_verify() {
        // crypt_blowfish's published test vector, the form Go's bcrypt writes.
        let vector = b"$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";
        assert!(password_matches("U*U", vector));
        assert!(!password_matches("U*V", vector));
    }

    #[test]
    fn overlong_passwords_are_refused() {
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        assert_eq!(hash_password(&long, MIN_BCRYPT_COST), Err(AuthError::AuthFailed));
    }
}
