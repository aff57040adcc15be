//! Hashing secrets people choose (console PINs, user passwords): argon2id PHC strings
//! with a random salt and the crate's default cost (~19 MiB, tens of milliseconds), so a
//! stolen database or config does not give them away to an offline search.

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
