//! Encryption of connection credentials at rest: AES-256-GCM (the `aes-gcm` crate) with a
//! random 96-bit nonce per value and the owning row's id as associated data, so a ciphertext
//! copied to another row does not decrypt.

use std::{fs, io::Write, path::PathBuf, sync::Arc};

use aes_gcm::{
    Aes256Gcm, Key, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use rand::RngCore;

use crate::config::Config;

const NONCE_LEN: usize = 12;

#[derive(Clone)]
pub struct Cipher(Arc<Aes256Gcm>);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("invalid configuration: `encryption_key` is required with PostgreSQL")]
    Required,
    #[error("invalid configuration: `encryption_key` must be the base64 encoding of 32 bytes")]
    Malformed,
    #[error("key file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
}

impl Cipher {
    pub fn new(key: &[u8; 32]) -> Self {
        Self(Arc::new(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))))
    }

    /// The configured key; with SQLite and no key, a key file beside the database
    /// (created on first start).
    pub fn from_config(config: &Config) -> Result<Self, KeyError> {
        if let Some(key) = &config.security.encryption_key {
            return decode_key(key.expose()).map(|k| Self::new(&k));
        }
        let Some(path) = key_file_path(config) else {
            return Err(KeyError::Required);
        };
        load_or_create_key_file(&path).map(|k| Self::new(&k))
    }

    pub fn encrypt(&self, plaintext: &[u8], associated: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: associated,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        [nonce.as_slice(), &sealed].concat()
    }

    /// `None` when the value was tampered with, moved, or sealed with another key.
    pub fn decrypt(&self, sealed: &[u8], associated: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.0
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: associated,
                },
            )
            .ok()
    }
}

fn decode_key(text: &str) -> Result<[u8; 32], KeyError> {
    STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or(KeyError::Malformed)
}

/// `sqlite://path/to/millwright.db?mode=rwc` keeps its key in `path/to/millwright.db.key`;
/// an in-memory database gets none (and so needs a configured key).
fn key_file_path(config: &Config) -> Option<PathBuf> {
    let rest = config.database.url.strip_prefix("sqlite:")?;
    let path = rest.trim_start_matches("//").split('?').next()?;
    if path.is_empty() || path.contains(":memory:") {
        return None;
    }
    Some(PathBuf::from(format!("{path}.key")))
}

fn load_or_create_key_file(path: &PathBuf) -> Result<[u8; 32], KeyError> {
    let file_error = |source| KeyError::File {
        path: path.display().to_string(),
        source,
    };
    match fs::read_to_string(path) {
        Ok(text) => return decode_key(&text),
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(file_error(err)),
        Err(_) => {}
    }
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(STANDARD.encode(key).as_bytes())
                .map_err(file_error)?;
            tracing::warn!(path = %path.display(), "no MILLWRIGHT_ENCRYPTION_KEY: generated a key file beside the database; back it up with the database");
            Ok(key)
        }
        // Another process created it first: use theirs.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            decode_key(&fs::read_to_string(path).map_err(file_error)?)
        }
        Err(err) => Err(file_error(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_binds_to_the_row() {
        let cipher = Cipher::new(&[7u8; 32]);
        let sealed = cipher.encrypt(b"secret", b"row-1");
        assert_eq!(
            cipher.decrypt(&sealed, b"row-1").as_deref(),
            Some(&b"secret"[..])
        );
        assert!(
            cipher.decrypt(&sealed, b"row-2").is_none(),
            "moved to another row"
        );
        assert!(
            Cipher::new(&[8u8; 32]).decrypt(&sealed, b"row-1").is_none(),
            "another key"
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(cipher.decrypt(&tampered, b"row-1").is_none());
    }

    #[test]
    fn key_file_sits_beside_the_database() {
        let mut config = Config::default();
        config.database.url = "sqlite://data/m.db?mode=rwc".into();
        assert_eq!(key_file_path(&config), Some(PathBuf::from("data/m.db.key")));
        let mut memory = Config::default();
        memory.database.url = "sqlite::memory:".into();
        assert_eq!(key_file_path(&memory), None);
    }
}
