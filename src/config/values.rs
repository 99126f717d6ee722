//! The value types of settings that are more than a number, a flag or a string: secrets
//! that never print, the log format, lists of seconds, and the checks that a setting's
//! declaration names.

use std::fmt;

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A configuration value that must never be printed.
#[derive(Clone, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    /// Environment values that look like numbers arrive as numbers; a secret takes any scalar.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            S(String),
            I(i64),
            U(u64),
            F(f64),
            B(bool),
        }
        Ok(Secret(match Scalar::deserialize(d)? {
            Scalar::S(s) => s,
            Scalar::I(v) => v.to_string(),
            Scalar::U(v) => v.to_string(),
            Scalar::F(v) => v.to_string(),
            Scalar::B(v) => v.to_string(),
        }))
    }
}

/// A list of whole seconds: a TOML array, one number, or `5,300,1800` (the environment's form).
pub(super) fn seconds_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<u64>),
        One(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::List(v) => Ok(v),
        Raw::One(v) => Ok(vec![v]),
        Raw::Text(s) => s
            .split(',')
            .map(|part| part.trim().parse::<u64>())
            .collect::<Result<_, _>>()
            .map_err(|_| serde::de::Error::custom("expected comma-separated whole seconds")),
    }
}

/// A list of strings: a TOML array, or `a,b` (the environment's form); blanks are skipped.
pub(super) fn origin_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Text(String),
    }
    let items = match Raw::deserialize(d)? {
        Raw::List(v) => v,
        Raw::Text(s) => s.split(',').map(str::to_owned).collect(),
    };
    Ok(items
        .into_iter()
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect())
}

/// Each an origin exactly as a browser sends it in `Origin`: `http` or `https`, a host, an
/// optional port, nothing else (no path, not even `/`).
pub(super) fn are_origins(origins: &[String]) -> bool {
    origins.iter().all(|origin| {
        reqwest::Url::parse(origin).is_ok_and(|url| {
            matches!(url.scheme(), "http" | "https")
                && url.host().is_some()
                && url.origin().ascii_serialization() == *origin
        })
    })
}

/// Hides a password in a database URL.
pub(super) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{user}:***{}", &url[..scheme_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}

pub(super) fn is_database_url(url: &str) -> bool {
    url.starts_with("sqlite:") || url.starts_with("postgres")
}

pub(super) fn is_operator_token(token: &Option<Secret>) -> bool {
    token.as_ref().is_none_or(|t| t.expose().len() >= 16)
}

pub(super) fn is_encryption_key(key: &Option<Secret>) -> bool {
    key.as_ref().is_none_or(|key| {
        let decoded = base64::engine::general_purpose::STANDARD.decode(key.expose().trim());
        decoded.is_ok_and(|k| k.len() == 32)
    })
}

/// Comma-separated keys, each as [`is_encryption_key`] accepts it (blanks are skipped).
pub(super) fn are_encryption_keys(keys: &Option<Secret>) -> bool {
    keys.as_ref().is_none_or(|keys| {
        crate::crypto::split_keys(keys.expose())
            .all(|key| is_encryption_key(&Some(Secret::new(key))))
    })
}

/// 1 to 50 delays of at most a week each (the declaration says so in words).
pub(super) fn is_retry_schedule(delays: &[u64]) -> bool {
    (1..=50).contains(&delays.len()) && delays.iter().all(|&d| d <= 7 * 24 * 3600)
}
