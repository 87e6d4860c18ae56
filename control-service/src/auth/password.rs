//! The master password: argon2id, stored as a PHC string. Hashing takes
//! tens of milliseconds of CPU and 19 MiB of memory on purpose, so it runs
//! on the blocking pool, in memory reused from a bounded pool
//! ([`super::hasher::Hasher`]).

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::{Output, ParamsString, SaltString},
};
use rand::RngCore as _;
use subtle::ConstantTimeEq as _;

use crate::error::InvalidArgument;

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

/// argon2's working memory, reused between hashes (see [`super::hasher`]):
/// 1 KiB blocks, 19 MiB with the default parameters.
pub type Memory = Vec<Block>;

/// `memory` with at least `blocks` blocks (it only ever grows).
fn blocks(memory: &mut Memory, blocks: usize) -> &mut [Block] {
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    &mut memory[..blocks]
}

/// The argon2id PHC string of `password`, with a fresh random salt.
pub fn hash(password: &str) -> Result<String, String> {
    hash_in(password, &mut Memory::new())
}

/// [`hash`] in `memory`.
pub fn hash_in(password: &str, memory: &mut Memory) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let params = Params::default();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon
        .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, blocks(memory, params.block_count()))
        .map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| e.to_string())?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches `phc` (constant-time comparison).
pub fn verify(phc: &str, password: &str) -> bool {
    verify_in(phc, password, &mut Memory::new())
}

/// [`verify`] in `memory`: what argon2's `PasswordVerifier` does, with
/// memory the caller keeps instead of a fresh allocation per call.
pub fn verify_in(phc: &str, password: &str, memory: &mut Memory) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else { return false };
    let (Ok(algorithm), Ok(params)) = (Algorithm::try_from(parsed.algorithm), Params::try_from(&parsed)) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else { return false };
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(algorithm, version, params.clone());
    if argon
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, blocks(memory, params.block_count()))
        .is_err()
    {
        return false;
    }
    bool::from(out.as_slice().ct_eq(expected.as_bytes()))
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
        // Reused memory gives the same answers as argon2's own verifier.
        let mut memory = Memory::new();
        assert!(verify_in(&phc, "correct horse battery staple", &mut memory));
        assert_eq!(memory.len(), Params::DEFAULT_M_COST as usize);
        assert!(!verify_in(&phc, "correct horse battery stapl", &mut memory));
        let again = hash_in("another password", &mut memory).unwrap();
        let parsed = PasswordHash::new(&again).unwrap();
        assert!(argon2::PasswordVerifier::verify_password(&Argon2::default(), b"another password", &parsed).is_ok());
        assert_eq!(memory.len(), Params::DEFAULT_M_COST as usize, "reused, not grown");
    }
}
