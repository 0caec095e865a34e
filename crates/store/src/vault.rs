//! Secrets at rest: AES-256-GCM with a 32-byte key given as base64 (as
//! Lightning's `PRIMARY_ENCRYPTION_KEY`). A stored secret is
//! `base64(nonce ‖ ciphertext ‖ tag)` with a fresh random 96-bit nonce.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, Generate, Key, KeyInit, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::{Result, StoreError};

const NONCE_LEN: usize = 12;

/// Encrypts and decrypts credential bodies and webhook auth secrets.
#[derive(Clone)]
pub struct Vault {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(..)")
    }
}

impl Vault {
    /// From a base64 key that decodes to exactly 32 bytes.
    pub fn new(key_b64: &str) -> Result<Vault> {
        let bytes = B64
            .decode(key_b64.trim())
            .map_err(|e| StoreError::Crypto(format!("encryption key is not base64: {e}")))?;
        if bytes.len() != 32 {
            return Err(StoreError::Crypto(format!(
                "encryption key must be 32 bytes (256 bits), got {}",
                bytes.len()
            )));
        }
        let cipher = Aes256Gcm::new_from_slice(&bytes)
            .map_err(|e| StoreError::Crypto(format!("bad key: {e}")))?;
        Ok(Vault { cipher })
    }

    /// A new random key, base64 (for `<data-dir>` when none is given).
    pub fn generate_key() -> String {
        B64.encode(Key::<Aes256Gcm>::generate())
    }

    /// Encrypts bytes to the stored text form.
    pub fn encrypt(&self, plain: &[u8]) -> Result<String> {
        let nonce = Nonce::<Aes256Gcm>::generate();
        let ct = self
            .cipher
            .encrypt(&nonce, plain)
            .map_err(|e| StoreError::Crypto(format!("encrypt: {e}")))?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(nonce.as_slice());
        out.extend_from_slice(&ct);
        Ok(B64.encode(out))
    }

    /// Decrypts the stored text form. Fails on a wrong key or tampering.
    pub fn decrypt(&self, stored: &str) -> Result<Vec<u8>> {
        let raw = B64
            .decode(stored.trim())
            .map_err(|e| StoreError::Crypto(format!("stored secret is not base64: {e}")))?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(StoreError::Crypto("stored secret is too short".into()));
        }
        let (n, ct) = raw.split_at(NONCE_LEN);
        let nonce =
            Nonce::<Aes256Gcm>::try_from(n).map_err(|_| StoreError::Crypto("bad nonce".into()))?;
        self.cipher.decrypt(&nonce, ct).map_err(|_| {
            StoreError::Crypto("decryption failed (wrong key or corrupt secret)".into())
        })
    }

    /// Encrypts a JSON value (its compact text).
    pub fn encrypt_json(&self, value: &serde_json::Value) -> Result<String> {
        self.encrypt(serde_json::to_string(value)?.as_bytes())
    }

    /// Decrypts to a JSON value.
    pub fn decrypt_json(&self, stored: &str) -> Result<serde_json::Value> {
        Ok(serde_json::from_slice(&self.decrypt(stored)?)?)
    }
}

/// `n` random bytes from the operating system (through the AEAD's RNG).
pub(crate) fn random_bytes_32() -> [u8; 32] {
    let k = Key::<Aes256Gcm>::generate();
    let mut out = [0u8; 32];
    out.copy_from_slice(k.as_slice());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_and_nonces_differ() {
        let v = Vault::new(&Vault::generate_key()).unwrap();
        let body = serde_json::json!({"username": "u", "password": "p"});
        let a = v.encrypt_json(&body).unwrap();
        let b = v.encrypt_json(&body).unwrap();
        assert_ne!(a, b, "fresh nonce every time");
        assert_eq!(v.decrypt_json(&a).unwrap(), body);
    }

    #[test]
    fn wrong_key_and_tampering_fail() {
        let v = Vault::new(&Vault::generate_key()).unwrap();
        let other = Vault::new(&Vault::generate_key()).unwrap();
        let s = v.encrypt(b"secret").unwrap();
        assert!(other.decrypt(&s).is_err());
        let mut raw = B64.decode(&s).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert!(v.decrypt(&B64.encode(raw)).is_err());
    }

    #[test]
    fn bad_keys_are_refused_clearly() {
        assert!(Vault::new("not base64!").is_err());
        let short = B64.encode([0u8; 16]);
        let e = Vault::new(&short).unwrap_err().to_string();
        assert!(e.contains("32 bytes"), "{e}");
    }
}
