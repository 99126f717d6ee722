//! Encryption of stored secrets (connection credentials, webhook signing secrets):
//! AES-256-GCM (the `aes-gcm` crate) with a random 96-bit nonce per value and the owning
//! row's id as associated data, so a ciphertext copied to another row does not decrypt.
//!
//! # Keys and their ids
//!
//! A [`Cipher`] holds the current key (`encryption_key`, or the key file beside a SQLite
//! database) and any previous ones (`encryption_old_keys`). It seals with the current key
//! only, and opens what any of them sealed. Each value names the key that sealed it:
//!
//! ```text
//! 0x4D 0x01 | key id (4 bytes) | nonce (12 bytes) | AES-256-GCM ciphertext and tag
//! ```
//!
//! `0x4D` marks the format and `0x01` is its version; the key id is the first 4 bytes of
//! SHA-256 of `millwright-key-id:` followed by the key, so it identifies a key without
//! revealing it. The whole header is authenticated with the row id (associated data
//! `header || row id`): changing a byte of it makes the value fail to open.
//!
//! Releases before key ids wrote `nonce (12 bytes) | ciphertext and tag` with the row id
//! alone as associated data (the *legacy* form). Its random nonce can begin with the same
//! six bytes as a header, so the header is a hint, never a verdict: a value that does not
//! open as the key its header names is tried in the legacy form with every key. GCM's tag
//! makes every wrong guess fail (a forgery passes with probability 2^-128), so a value opens
//! to its plaintext or not at all, never to something else. [`rotate`] rewrites every
//! stored value with the current key.

pub mod rotate;

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
};

use aes_gcm::{
    Aes256Gcm, Key, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::Config;

const NONCE_LEN: usize = 12;
/// GCM's authentication tag, at the end of every sealed value.
const TAG_LEN: usize = 16;
/// The first byte of a value with a key id (`M`).
const MAGIC: u8 = 0x4D;
/// The format after [`MAGIC`]: key id, nonce, ciphertext.
const VERSION: u8 = 0x01;
const KEY_ID_LEN: usize = 4;
const HEADER_LEN: usize = 2 + KEY_ID_LEN;

/// Identifies a key in a sealed value: the first 4 bytes of SHA-256 of the key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    fn of(key: &[u8; 32]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"millwright-key-id:")
            .chain_update(key)
            .finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Self(id)
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({self})")
    }
}

struct SealingKey {
    id: KeyId,
    aead: Aes256Gcm,
}

impl SealingKey {
    fn new(key: &[u8; 32]) -> Self {
        Self {
            id: KeyId::of(key),
            aead: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)),
        }
    }

    fn header(&self) -> [u8; HEADER_LEN] {
        let mut header = [0u8; HEADER_LEN];
        header[0] = MAGIC;
        header[1] = VERSION;
        header[2..].copy_from_slice(&self.id.0);
        header
    }

    fn seal(&self, nonce: &[u8; NONCE_LEN], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        self.aead
            .encrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail")
    }

    /// Opens `nonce || ciphertext`.
    fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.aead
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .ok()
    }
}

/// The keys: the current one seals, every one opens. Cheap to clone.
#[derive(Clone)]
pub struct Cipher(Arc<Keyring>);

struct Keyring {
    current: SealingKey,
    old: Vec<SealingKey>,
}

/// What [`Cipher::open`] found a value to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sealed {
    /// Sealed with the current key, with its key id.
    Current,
    /// Sealed with an old key, with its key id.
    OldKey,
    /// Written before key ids existed (with any of the keys).
    Legacy,
}

/// A value [`Cipher::reseal`] looked at.
#[derive(Debug, PartialEq, Eq)]
pub enum Resealed {
    /// Already sealed with the current key: nothing to write.
    Current,
    /// The same plaintext sealed with the current key.
    Rewritten(Vec<u8>),
    /// No key opens it (tampered with, moved to another row, or sealed with a key this
    /// process does not have).
    Unreadable,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("invalid configuration: `encryption_key` is required with PostgreSQL")]
    Required,
    #[error("invalid configuration: `{0}` must be the base64 encoding of 32 bytes")]
    Malformed(&'static str),
    #[error("key file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "key file {path} is readable by other users (mode {mode:o}); restrict it with `chmod 600 {path}`"
    )]
    Exposed { path: String, mode: u32 },
}

impl Cipher {
    pub fn new(key: &[u8; 32]) -> Self {
        Self::with_old_keys(key, &[])
    }

    /// Seals with `current`; opens what `current` or any of `old` sealed.
    pub fn with_old_keys(current: &[u8; 32], old: &[[u8; 32]]) -> Self {
        let old = old
            .iter()
            .filter(|key| *key != current)
            .map(SealingKey::new)
            .collect();
        Self(Arc::new(Keyring {
            current: SealingKey::new(current),
            old,
        }))
    }

    /// The configured key (with SQLite and no key, a key file beside the database, created on
    /// first start) and the configured old keys.
    pub fn from_config(config: &Config) -> Result<Self, KeyError> {
        let current = match &config.security.encryption_key {
            Some(key) => decode_key(key.expose(), "encryption_key")?,
            None => {
                let path = key_file_path(config).ok_or(KeyError::Required)?;
                load_or_create_key_file(&path)?
            }
        };
        let old = match &config.security.encryption_old_keys {
            Some(keys) => split_keys(keys.expose())
                .map(|key| decode_key(key, "encryption_old_keys"))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        Ok(Self::with_old_keys(&current, &old))
    }

    /// The id of the key that seals.
    pub fn current_key_id(&self) -> KeyId {
        self.0.current.id
    }

    /// The ids of the old keys, in the order configured.
    pub fn old_key_ids(&self) -> Vec<KeyId> {
        self.0.old.iter().map(|k| k.id).collect()
    }

    /// Seals with the current key, naming it in the header.
    pub fn encrypt(&self, plaintext: &[u8], associated: &[u8]) -> Vec<u8> {
        let key = &self.0.current;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let header = key.header();
        let sealed = key.seal(&nonce, plaintext, &[&header[..], associated].concat());
        [&header[..], &nonce, &sealed].concat()
    }

    /// `None` when the value was tampered with, moved, or sealed with a key this cipher does
    /// not hold.
    pub fn decrypt(&self, sealed: &[u8], associated: &[u8]) -> Option<Vec<u8>> {
        self.open(sealed, associated)
            .map(|(plaintext, _)| plaintext)
    }

    /// The plaintext, and how it was sealed.
    pub fn open(&self, sealed: &[u8], associated: &[u8]) -> Option<(Vec<u8>, Sealed)> {
        let keyring = &*self.0;
        let keys = || std::iter::once(&keyring.current).chain(&keyring.old);
        if sealed.len() >= HEADER_LEN && sealed[0] == MAGIC && sealed[1] == VERSION {
            let (header, rest) = sealed.split_at(HEADER_LEN);
            let aad = [header, associated].concat();
            // Two keys may share an id (one chance in 2^32): each is tried.
            for key in keys().filter(|k| k.id.0 == header[2..]) {
                if let Some(plaintext) = key.open(rest, &aad) {
                    let how = if std::ptr::eq(key, &keyring.current) {
                        Sealed::Current
                    } else {
                        Sealed::OldKey
                    };
                    return Some((plaintext, how));
                }
            }
        }
        // No header, or a legacy value whose random nonce happens to begin like one.
        keys()
            .find_map(|key| key.open(sealed, associated))
            .map(|plaintext| (plaintext, Sealed::Legacy))
    }

    /// The value sealed with the current key, unless it already is (or cannot be opened).
    pub fn reseal(&self, sealed: &[u8], associated: &[u8]) -> Resealed {
        match self.open(sealed, associated) {
            Some((_, Sealed::Current)) => Resealed::Current,
            Some((plaintext, _)) => Resealed::Rewritten(self.encrypt(&plaintext, associated)),
            None => Resealed::Unreadable,
        }
    }
}

/// A new key: 32 random bytes, base64-encoded as `encryption_key` takes it.
pub fn generate_key() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    STANDARD.encode(key)
}

/// The keys of a comma-separated list, blanks left out.
pub fn split_keys(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|k| !k.is_empty())
}

fn decode_key(text: &str, setting: &'static str) -> Result<[u8; 32], KeyError> {
    STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or(KeyError::Malformed(setting))
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

/// Reads the key file, or creates it: the key is written to a temporary file (mode 0600),
/// flushed to disk, then linked to its name (so no process ever reads a half-written key,
/// and a concurrent start that links first wins), and the directory is flushed too.
fn load_or_create_key_file(path: &Path) -> Result<[u8; 32], KeyError> {
    let file_error = |source| KeyError::File {
        path: path.display().to_string(),
        source,
    };
    match read_key_file(path) {
        Err(KeyError::File { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        other => return other,
    }
    let key = generate_key();
    let mut suffix = [0u8; 8];
    rand::rng().fill_bytes(&mut suffix);
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let temporary = PathBuf::from(format!("{}.{suffix}.tmp", path.display()));
    let written =
        write_private(&temporary, key.as_bytes()).and_then(|()| fs::hard_link(&temporary, path));
    let _ = fs::remove_file(&temporary);
    match written {
        Ok(()) => {
            sync_directory(path).map_err(file_error)?;
            tracing::warn!(path = %path.display(), "no MILLWRIGHT_ENCRYPTION_KEY: generated a key file beside the database; back it up with the database");
            decode_key(&key, "encryption_key")
        }
        // Another process created it first: use theirs.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => read_key_file(path),
        Err(err) => Err(file_error(err)),
    }
}

/// The key in `path`, refused if other users may read the file.
fn read_key_file(path: &Path) -> Result<[u8; 32], KeyError> {
    let file_error = |source| KeyError::File {
        path: path.display().to_string(),
        source,
    };
    let metadata = fs::metadata(path).map_err(file_error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed {
                path: path.display().to_string(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = metadata;
    let text = fs::read_to_string(path).map_err(file_error)?;
    decode_key(&text, "key file").map_err(|_| KeyError::File {
        path: path.display().to_string(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "does not hold the base64 encoding of 32 bytes",
        ),
    })
}

/// Creates `path` readable by its owner only, writes `contents` and flushes it to disk.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Flushes the directory holding `path`, so that the new name survives a crash.
fn sync_directory(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        fs::File::open(parent)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests;
