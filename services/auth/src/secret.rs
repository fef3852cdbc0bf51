//! The secrets of signing in, made and kept: one-time codes (Argon2id hashes, as a 6-digit code
//! is quickly guessed from a fast hash) and refresh tokens (256 random bits, kept as SHA-256).

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use sha2::Digest as _;

use crate::domain::CODE_DIGITS;

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system's random source");
    bytes
}

/// A uniformly random code of [`CODE_DIGITS`] digits.
pub fn new_code() -> String {
    const SPACE: u32 = 10u32.pow(CODE_DIGITS as u32);
    // The largest multiple of SPACE a u32 holds: values above it would favour low codes.
    const FAIR: u32 = u32::MAX - u32::MAX % SPACE;
    loop {
        let n = u32::from_le_bytes(random::<4>());
        if n < FAIR {
            return format!("{:0width$}", n % SPACE, width = CODE_DIGITS);
        }
    }
}

/// An Argon2id hash of `secret` with a random salt, as a PHC string.
pub fn hash(secret: &str) -> String {
    let salt = SaltString::encode_b64(&random::<16>()).expect("16 bytes is a valid salt");
    Argon2::default().hash_password(secret.as_bytes(), &salt).expect("Argon2 hashes any input").to_string()
}

/// Whether `secret` is what `hash` was made from. An empty or unreadable hash matches nothing.
pub fn matches(hash: &str, secret: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(secret.as_bytes(), &parsed).is_ok())
}

/// A new refresh token: 256 random bits, in hex.
pub fn new_refresh_token() -> String {
    hex(&random::<32>())
}

/// What is stored of a refresh token.
pub fn digest(token: &str) -> String {
    hex(&sha2::Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits_and_vary() {
        let codes: Vec<String> = (0..200).map(|_| new_code()).collect();
        assert!(codes.iter().all(|c| c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit())));
        let mut distinct = codes.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 190, "200 random codes are nearly all different: {}", distinct.len());
    }

    #[test]
    fn a_hash_matches_its_secret_only() {
        let hashed = hash("123456");
        assert!(hashed.starts_with("$argon2id$"), "{hashed}");
        assert!(!hashed.contains("123456"));
        assert!(matches(&hashed, "123456"));
        assert!(!matches(&hashed, "123457"));
        assert!(!matches("", "123456"), "an unknown staff member's challenge has no hash");
        assert_ne!(hash("123456"), hashed, "salted");
    }

    #[test]
    fn refresh_tokens_are_long_and_kept_as_digests() {
        let token = new_refresh_token();
        assert_eq!(token.len(), 64);
        assert_ne!(new_refresh_token(), token);
        assert_eq!(digest(&token), digest(&token));
        assert_ne!(digest(&token), token);
    }
}
