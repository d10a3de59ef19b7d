//! Webhook secrets at rest: AES-256-GCM under a key from the deployment
//! (`ALERTS_SECRET_KEY`, 32 bytes in base64), the rule's id as associated
//! data (a sealed secret copied onto another rule does not open). A dump of
//! the table alone cannot sign a webhook.

use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::domain::alert::webhook::SECRET_BYTES;

/// The variable holding the key.
pub const SECRET_KEY_VARIABLE: &str = "ALERTS_SECRET_KEY";

/// The local stack's key (documented in the README; never a deployment's).
pub const LOCAL_SECRET_KEY: &str = "bG9jYWwtc3RhY2stYWxlcnRzLWtleS0zMi1ieXRlcyE=";

/// The key that seals and opens webhook secrets.
#[derive(Clone)]
pub struct SecretKey(Arc<LessSafeKey>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// 32 bytes, base64.
    pub fn from_base64(value: &str) -> Result<Self, String> {
        let bytes = STANDARD
            .decode(value.trim())
            .map_err(|_| format!("{SECRET_KEY_VARIABLE} is not base64"))?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| format!("{SECRET_KEY_VARIABLE} must be 32 bytes (base64)"))?;
        Ok(Self(Arc::new(LessSafeKey::new(key))))
    }

    /// `nonce ‖ ciphertext ‖ tag` of `secret`, bound to `alert_id`.
    pub fn seal(&self, secret: &[u8], alert_id: &str) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| "no randomness from the OS".to_string())?;
        let mut sealed = secret.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(alert_id.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| "sealing a webhook secret failed".to_string())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The secret sealed by [`SecretKey::seal`] for `alert_id`.
    pub fn open(&self, sealed: &[u8], alert_id: &str) -> Result<Vec<u8>, String> {
        if sealed.len() < NONCE_LEN {
            return Err("sealed secret too short".into());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce".to_string())?;
        let mut body = body.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(alert_id.as_bytes()), &mut body)
            .map_err(|_| "a webhook secret does not open with this key".to_string())?;
        Ok(plain.to_vec())
    }
}

/// The HMAC key of a new webhook secret: random bytes from the OS.
pub fn new_secret_bytes() -> Result<Vec<u8>, String> {
    let mut key = vec![0u8; SECRET_BYTES];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| "no randomness from the OS".to_string())?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_the_key_and_rule() {
        let key = SecretKey::from_base64(LOCAL_SECRET_KEY).unwrap();
        let secret = new_secret_bytes().unwrap();
        assert_eq!(secret.len(), 32);
        let sealed = key.seal(&secret, "a1").unwrap();
        assert!(!sealed.windows(secret.len()).any(|w| w == secret.as_slice()));
        assert_eq!(key.open(&sealed, "a1").unwrap(), secret);
        assert!(key.open(&sealed, "a2").is_err());
        let other = SecretKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap();
        assert!(other.open(&sealed, "a1").is_err());
        assert!(SecretKey::from_base64("c2hvcnQ=").is_err());
        assert_ne!(new_secret_bytes().unwrap(), secret);
    }
}
