//! Bearer tokens: 32 random bytes behind a kind prefix, stored only as a SHA-256 hash.
//! The tokens carry 256 bits of entropy, so a fast hash is enough to make a leaked table useless.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    ApiKey,
    Connection,
    /// A portal session's token, for a browser: one customer, for a short while.
    Portal,
}

impl TokenKind {
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::ApiKey => "mwk_",
            TokenKind::Connection => "mwc_",
            TokenKind::Portal => "mwp_",
        }
    }

    pub fn of(token: &str) -> Option<Self> {
        [TokenKind::ApiKey, TokenKind::Connection, TokenKind::Portal]
            .into_iter()
            .find(|kind| token.starts_with(kind.prefix()))
    }
}

pub struct GeneratedToken {
    /// The token itself, shown once.
    pub token: String,
    pub hash: String,
    /// Enough of the token for a person to recognise it.
    pub display_prefix: String,
}

pub fn generate(kind: TokenKind) -> GeneratedToken {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("{}{}", kind.prefix(), URL_SAFE_NO_PAD.encode(bytes));
    GeneratedToken {
        hash: hash_token(&token),
        display_prefix: token[..kind.prefix().len() + 6].to_owned(),
        token,
    }
}

pub fn hash_token(token: &str) -> String {
    use std::fmt::Write;
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().fold(String::with_capacity(64), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_hash_stably() {
        let a = generate(TokenKind::ApiKey);
        let b = generate(TokenKind::ApiKey);
        assert_ne!(a.token, b.token);
        assert!(a.token.starts_with("mwk_") && a.token.len() >= 4 + 43);
        assert_eq!(hash_token(&a.token), a.hash);
        assert_eq!(TokenKind::of(&a.token), Some(TokenKind::ApiKey));
    }
}
