//! Secrets at rest: base64(nonce || AES-256-GCM ciphertext), the format of
//! `credentials.body_encrypted` and `triggers.auth_secret_encrypted`.

use aes_gcm::aead::{Aead, Generate, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

pub fn encrypt(key: &[u8; 32], plaintext: &[u8]) -> Result<String, String> {
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key));
    let nonce = Nonce::generate();
    let ct = cipher
        .encrypt(&nonce, plaintext)
        .map_err(|_| "encryption failed".to_string())?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    Ok(STANDARD.encode(out))
}

pub fn decrypt(key: &[u8; 32], encoded: &str) -> Result<Vec<u8>, String> {
    let raw = STANDARD
        .decode(encoded.trim())
        .map_err(|_| "the stored secret is not base64".to_string())?;
    if raw.len() < 12 {
        return Err("the stored secret is too short".into());
    }
    let (nonce, ct) = raw.split_at(12);
    let nonce = Nonce::try_from(nonce).map_err(|_| "bad nonce".to_string())?;
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key));
    cipher
        .decrypt(&nonce, ct)
        .map_err(|_| "the secret cannot be decrypted with this key".to_string())
}
