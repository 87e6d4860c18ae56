//! Secrets of the fleet: enrollment tokens and host credentials. Both are
//! 32 random bytes, base64url without padding; only their SHA-256 is
//! stored, and a presented credential is compared with the stored hash in
//! constant time.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// The longest secret accepted from a caller (43 characters are made):
/// anything longer is refused before it is hashed.
pub const MAX_SECRET_LEN: usize = 128;

/// A fresh secret: 32 random bytes from the OS-seeded CSPRNG, base64url.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What is stored of a secret.
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether `secret` hashes to `stored`, in time independent of where they
/// differ.
pub fn matches(secret: &str, stored: &[u8]) -> bool {
    hash(secret).as_slice().ct_eq(stored).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_fresh_and_checked_by_hash() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(matches(&a, &hash(&a)));
        assert!(!matches(&b, &hash(&a)));
        assert!(!matches(&a, &hash(&a)[..31]), "a short hash never matches");
    }
}
