//! The master password: argon2id, stored as a PHC string. Hashing takes
//! tens of milliseconds of CPU on purpose, so it runs on the blocking pool.

use argon2::{Algorithm, Argon2, PasswordHash, PasswordHasher, PasswordVerifier, password_hash::SaltString};
use rand::RngCore as _;

use crate::fail2ban::InvalidArgument;

/// Shortest password accepted.
pub const MIN_LEN: usize = 12;
/// Longest password accepted (argon2 takes more, this bounds the work).
pub const MAX_LEN: usize = 1024;

/// A new password is long enough and not absurdly long.
pub fn check_new(field: &'static str, password: &str) -> Result<(), InvalidArgument> {
    let chars = password.chars().count();
    if chars < MIN_LEN {
        return Err(InvalidArgument::new(field, format!("at least {MIN_LEN} characters")));
    }
    if password.len() > MAX_LEN {
        return Err(InvalidArgument::new(field, format!("at most {MAX_LEN} bytes")));
    }
    Ok(())
}

/// The argon2id PHC string of `password`, with a fresh random salt.
pub fn hash(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Whether `password` matches `phc` (constant-time inside argon2).
pub fn verify(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// `text` is an argon2id PHC string (e.g. from `control-service hash-password`).
pub fn check_phc(text: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(text).map_err(|e| format!("not a PHC string: {e}"))?;
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return Err(format!("the algorithm is {}, not argon2id", parsed.algorithm));
    }
    if parsed.hash.is_none() {
        return Err("the PHC string has no hash".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verify_and_check() {
        let phc = hash("correct horse battery staple").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert!(verify(&phc, "correct horse battery staple"));
        assert!(!verify(&phc, "correct horse battery stapl"));
        assert!(!verify("garbage", "x"));
        assert_ne!(hash("correct horse battery staple").unwrap(), phc, "salted");
        assert!(check_phc(&phc).is_ok());
        assert!(check_phc("$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$Z1u8a8C3tBNrVq+qg6EvzA").is_err());
        assert!(check_phc("plain").is_err());
        assert_eq!(check_new("password", "short").unwrap_err().field, "password");
        assert!(check_new("password", "twelve chars").is_ok());
    }
}
