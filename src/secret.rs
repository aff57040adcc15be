//! Hashing secrets people choose (console PINs, user passwords): argon2id PHC strings
//! with a random salt and the crate's default cost (~19 MiB, tens of milliseconds), so a
//! stolen database or config does not give them away to an offline search. Also the
//! random tokens of sessions and API clients, which are stored by SHA-256 only.

/// The argon2id PHC string of `secret`.
pub fn hash(secret: &str) -> String {
    use password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .expect("argon2 with default parameters")
        .to_string()
}

/// Whether `secret` matches the PHC string `phc` (false for a malformed one).
pub fn verify(phc: &str, secret: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    match argon2::PasswordHash::new(phc) {
        Ok(h) => argon2::Argon2::default()
            .verify_password(secret.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// Whether `phc` parses as a PHC string (config validation).
pub fn is_phc(phc: &str) -> bool {
    argon2::PasswordHash::new(phc).is_ok()
}

/// A fresh 256-bit random token, base64url without padding (43 characters).
pub fn random_token() -> String {
    use base64::Engine;
    use password_hash::rand_core::{OsRng, RngCore};
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// What is stored of a random token: its SHA-256 (see migration 0010 for why not argon2).
pub fn token_digest(token: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes()).into()
}

/// Equality of two secrets in time independent of where they differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_digests_fixed() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert_eq!(token_digest(&a), token_digest(&a));
        assert_ne!(token_digest(&a), token_digest(&b));
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"ab", b"abc"));
    }
}
