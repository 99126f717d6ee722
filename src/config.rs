//! Typed configuration: built-in defaults, then an optional TOML file, then `MILLWRIGHT_*`
//! environment variables (these win). Every field is validated at start; errors name the key.

use std::{fmt, net::SocketAddr, path::Path, time::Duration};

use base64::Engine;
use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Deserializer, Serialize};

/// Environment variables are read with this prefix; `MILLWRIGHT_DATABASE_URL` sets `database_url`.
pub const ENV_PREFIX: &str = "MILLWRIGHT_";

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `sqlite://…` (embedded, the default) or `postgres://…` (production, multi-instance).
    pub database_url: String,
    /// Largest number of pooled database connections.
    pub database_max_connections: u32,
    /// HTTP listen address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Operator token for `createAccount` and `grantCredits`; unset turns the admin API off.
    pub admin_token: Option<Secret>,
    /// Base64 of 32 bytes; encrypts connection credentials at rest.
    pub encryption_key: Option<Secret>,
    /// Allow webhook URLs that resolve to loopback or private addresses.
    pub webhook_allow_private_targets: bool,
    /// Allow connections whose `base_url` (or `token_url`) resolves to a loopback, private,
    /// link-local or reserved address, and plain http: for a self-hosted install on a plant
    /// network that reaches its SAP or Maximo on a private address.
    pub connector_allow_private_targets: bool,
    /// `pretty` or `json`.
    pub log_format: LogFormat,
    /// Seconds to wait before each webhook retry, e.g. `5,300,1800`.
    #[serde(deserialize_with = "seconds_list", serialize_with = "seconds_list_out")]
    pub webhook_retry_schedule: Vec<u64>,
    /// Run the background workers in this process.
    pub workers: bool,
    /// A request that takes longer is answered 408.
    pub request_timeout_secs: u64,
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    /// Most GraphQL operations in one batched request.
    pub max_batch_size: usize,
    /// Deepest selection nesting a query may have.
    pub max_query_depth: usize,
    /// Highest complexity (number of selected fields, aliases included) a query may have.
    pub max_query_complexity: usize,
    /// A WebSocket that sends no `connection_init` within this many seconds is closed (4408).
    pub ws_init_timeout_secs: u64,
    /// The server pings idle WebSockets this often, to keep proxies from dropping them.
    pub ws_ping_interval_secs: u64,
    /// How often the health check probes each live connection.
    pub health_check_interval_secs: u64,
    /// Events older than this are pruned (default 30 days).
    pub event_retention_secs: u64,
    /// Events held in memory for live subscribers; one that falls further behind catches up
    /// from the database.
    pub event_feed_capacity: usize,
    /// SQLite's page cache per pooled connection, in MiB (SQLite's own default is 2 MiB, too
    /// small for the indexes of a large record store: a sync then re-reads index pages).
    pub sqlite_cache_mib: u64,
    /// SQLite: a background task copies committed pages from the write-ahead log into the
    /// database file at most this often while writes happen, in milliseconds, so that the
    /// writing connection does not do it (and wait for its fsyncs) itself. 0 turns it off:
    /// a writer then checkpoints once the log holds 8,192 pages.
    pub sqlite_checkpoint_interval_ms: u64,
    /// How long a GraphQL request's data loaders gather keys before they query, in
    /// milliseconds: every row of a page should register its key within it, so that a page's
    /// relations cost one query.
    pub graphql_batch_window_ms: u64,
    /// Sync runs executed at once by this process.
    pub sync_workers: usize,
    /// Records asked of the remote per page.
    pub sync_page_size: usize,
    /// Most requests per second to one connection's remote system.
    pub sync_requests_per_second: u32,
    /// A running sync's lease; a run whose lease expires (its process died) is taken over.
    pub sync_lease_secs: u64,
    /// Length in seconds of one minute of `syncIntervalMinutes` (60; shortened in tests).
    pub sync_schedule_minute_secs: u64,
    /// Retries of an unreachable or failing remote within a run before the run fails.
    pub sync_retries: u32,
    /// Continuous delivery failure for this long disables a webhook endpoint (5 days).
    pub webhook_disable_after_secs: u64,
    /// Webhook deliveries in flight at once, overall.
    pub webhook_workers: usize,
    /// Webhook deliveries in flight at once to one endpoint.
    pub webhook_max_in_flight_per_endpoint: usize,
    /// A delivery's lease; one whose process died is sent again after this.
    pub webhook_lease_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "sqlite://millwright.db?mode=rwc".into(),
            database_max_connections: 10,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_token: None,
            encryption_key: None,
            webhook_allow_private_targets: false,
            connector_allow_private_targets: false,
            log_format: LogFormat::Pretty,
            webhook_retry_schedule: vec![5, 300, 1800, 7200, 18000, 36000, 36000],
            workers: true,
            request_timeout_secs: 30,
            body_limit_bytes: 1024 * 1024,
            max_batch_size: 10,
            max_query_depth: 15,
            max_query_complexity: 500,
            ws_init_timeout_secs: 10,
            ws_ping_interval_secs: 30,
            health_check_interval_secs: 300,
            event_retention_secs: 30 * 24 * 3600,
            event_feed_capacity: 4096,
            graphql_batch_window_ms: 4,
            sqlite_cache_mib: 32,
            sqlite_checkpoint_interval_ms: 100,
            sync_workers: 4,
            sync_page_size: 500,
            sync_requests_per_second: 10,
            sync_lease_secs: 30,
            sync_schedule_minute_secs: 60,
            sync_retries: 4,
            webhook_disable_after_secs: 5 * 24 * 3600,
            webhook_workers: 32,
            webhook_max_in_flight_per_endpoint: 8,
            webhook_lease_secs: 120,
        }
    }
}

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

fn seconds_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
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

fn seconds_list_out<S: serde::Serializer>(v: &[u64], s: S) -> Result<S::Ok, S::Error> {
    v.serialize(s)
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("listen", &self.listen)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "encryption_key",
                &self.encryption_key.as_ref().map(|_| "[redacted]"),
            )
            .field("log_format", &self.log_format)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

/// Hides a password in a database URL.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{user}:***{}", &url[..scheme_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Keys that may come from the environment; other `MILLWRIGHT_*` variables (for tests and
/// tools) are not configuration and are ignored.
const KEYS: &[&str] = &[
    "database_url",
    "database_max_connections",
    "listen",
    "admin_token",
    "encryption_key",
    "webhook_allow_private_targets",
    "connector_allow_private_targets",
    "log_format",
    "webhook_retry_schedule",
    "workers",
    "request_timeout_secs",
    "body_limit_bytes",
    "max_batch_size",
    "max_query_depth",
    "max_query_complexity",
    "ws_init_timeout_secs",
    "ws_ping_interval_secs",
    "health_check_interval_secs",
    "event_retention_secs",
    "event_feed_capacity",
    "graphql_batch_window_ms",
    "sqlite_cache_mib",
    "sqlite_checkpoint_interval_ms",
    "sync_workers",
    "sync_page_size",
    "sync_requests_per_second",
    "sync_lease_secs",
    "sync_schedule_minute_secs",
    "sync_retries",
    "webhook_disable_after_secs",
    "webhook_workers",
    "webhook_max_in_flight_per_endpoint",
    "webhook_lease_secs",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration: `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

impl Config {
    /// Defaults, then the file (if given; a missing file is an error), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Invalid {
                    key: "--config",
                    message: format!("file {} not found", path.display()),
                });
            }
            figment = figment.merge(Toml::file(path));
        }
        let env = Env::prefixed(ENV_PREFIX).filter(|key| {
            KEYS.iter()
                .any(|known| key.as_str().eq_ignore_ascii_case(known))
        });
        let config: Config = figment.merge(env).extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        if !(self.database_url.starts_with("sqlite:") || self.database_url.starts_with("postgres"))
        {
            return invalid("database_url", "must start with sqlite: or postgres://");
        }
        if self.database_max_connections == 0 {
            return invalid("database_max_connections", "must be at least 1");
        }
        if let Some(key) = &self.encryption_key {
            let decoded = base64::engine::general_purpose::STANDARD.decode(key.expose().trim());
            if decoded.map(|k| k.len()) != Ok(32) {
                return invalid("encryption_key", "must be the base64 encoding of 32 bytes");
            }
        }
        if self
            .admin_token
            .as_ref()
            .is_some_and(|t| t.expose().len() < 16)
        {
            return invalid("admin_token", "must be at least 16 characters");
        }
        if !(1..=65536).contains(&self.sqlite_cache_mib) {
            return invalid("sqlite_cache_mib", "must be between 1 and 65536");
        }
        if self.sqlite_checkpoint_interval_ms > 60_000 {
            return invalid(
                "sqlite_checkpoint_interval_ms",
                "must be between 0 and 60000",
            );
        }
        if self.sync_page_size > 10_000 {
            return invalid("sync_page_size", "must be between 1 and 10000");
        }
        if !(1..=1000).contains(&self.graphql_batch_window_ms) {
            return invalid("graphql_batch_window_ms", "must be between 1 and 1000");
        }
        if self.webhook_retry_schedule.is_empty() {
            return invalid("webhook_retry_schedule", "needs at least one delay");
        }
        for (key, value) in [
            ("request_timeout_secs", self.request_timeout_secs),
            ("body_limit_bytes", self.body_limit_bytes as u64),
            ("max_batch_size", self.max_batch_size as u64),
            ("max_query_depth", self.max_query_depth as u64),
            ("max_query_complexity", self.max_query_complexity as u64),
            ("ws_init_timeout_secs", self.ws_init_timeout_secs),
            ("ws_ping_interval_secs", self.ws_ping_interval_secs),
            ("event_retention_secs", self.event_retention_secs),
            ("event_feed_capacity", self.event_feed_capacity as u64),
            ("sync_workers", self.sync_workers as u64),
            ("sync_page_size", self.sync_page_size as u64),
            (
                "sync_requests_per_second",
                u64::from(self.sync_requests_per_second),
            ),
            ("sync_lease_secs", self.sync_lease_secs),
            ("sync_schedule_minute_secs", self.sync_schedule_minute_secs),
            ("webhook_workers", self.webhook_workers as u64),
            (
                "webhook_max_in_flight_per_endpoint",
                self.webhook_max_in_flight_per_endpoint as u64,
            ),
            ("webhook_lease_secs", self.webhook_lease_secs),
            (
                "health_check_interval_secs",
                self.health_check_interval_secs,
            ),
        ] {
            if value == 0 {
                return invalid(key, "must be greater than 0");
            }
        }
        // Upper bounds: beyond them a value breaks the server (a lease that overflows to 0, a
        // feed buffer allocated in full per account, an instant past the end of time).
        const DAY: u64 = 24 * 3600;
        for (key, value, max) in [
            (
                "database_max_connections",
                u64::from(self.database_max_connections),
                1000,
            ),
            ("request_timeout_secs", self.request_timeout_secs, DAY),
            ("body_limit_bytes", self.body_limit_bytes as u64, 256 << 20),
            ("max_batch_size", self.max_batch_size as u64, 1000),
            ("max_query_depth", self.max_query_depth as u64, 1000),
            (
                "max_query_complexity",
                self.max_query_complexity as u64,
                1_000_000,
            ),
            ("ws_init_timeout_secs", self.ws_init_timeout_secs, DAY),
            ("ws_ping_interval_secs", self.ws_ping_interval_secs, DAY),
            (
                "health_check_interval_secs",
                self.health_check_interval_secs,
                30 * DAY,
            ),
            (
                "event_retention_secs",
                self.event_retention_secs,
                100 * 365 * DAY,
            ),
            (
                "event_feed_capacity",
                self.event_feed_capacity as u64,
                1_000_000,
            ),
            ("sync_workers", self.sync_workers as u64, 1024),
            (
                "sync_requests_per_second",
                u64::from(self.sync_requests_per_second),
                1_000_000,
            ),
            ("sync_lease_secs", self.sync_lease_secs, DAY),
            (
                "sync_schedule_minute_secs",
                self.sync_schedule_minute_secs,
                3600,
            ),
            ("sync_retries", u64::from(self.sync_retries), 100),
            (
                "webhook_disable_after_secs",
                self.webhook_disable_after_secs,
                365 * DAY,
            ),
            ("webhook_workers", self.webhook_workers as u64, 10_000),
            (
                "webhook_max_in_flight_per_endpoint",
                self.webhook_max_in_flight_per_endpoint as u64,
                10_000,
            ),
            ("webhook_lease_secs", self.webhook_lease_secs, DAY),
            (
                "webhook_retry_schedule",
                self.webhook_retry_schedule
                    .iter()
                    .copied()
                    .max()
                    .unwrap_or(0),
                7 * DAY,
            ),
            (
                "webhook_retry_schedule",
                self.webhook_retry_schedule.len() as u64,
                50,
            ),
        ] {
            if value > max {
                return invalid(key, &format!("must be at most {max}"));
            }
        }
        Ok(())
    }

    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }

    pub fn engine_settings(&self) -> crate::sync::engine::EngineSettings {
        crate::sync::engine::EngineSettings {
            page_size: self.sync_page_size,
            requests_per_second: self.sync_requests_per_second,
            lease: Duration::from_secs(self.sync_lease_secs),
            retries: self.sync_retries,
        }
    }

    pub fn delivery_settings(&self) -> crate::webhooks::deliver::DeliverySettings {
        crate::webhooks::deliver::DeliverySettings {
            schedule: self.webhook_retry_schedule.clone(),
            allow_private: self.webhook_allow_private_targets,
            disable_after: Duration::from_secs(self.webhook_disable_after_secs),
            per_endpoint: self.webhook_max_in_flight_per_endpoint,
            concurrency: self.webhook_workers,
            lease: Duration::from_secs(self.webhook_lease_secs),
        }
    }

    pub fn event_retention(&self) -> Duration {
        Duration::from_secs(self.event_retention_secs)
    }

    pub fn health_check_interval(&self) -> Duration {
        Duration::from_secs(self.health_check_interval_secs)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub fn graphql_batch_window(&self) -> Duration {
        Duration::from_millis(self.graphql_batch_window_ms)
    }

    /// How often a background task checkpoints SQLite's write-ahead log; `None`: never.
    pub fn sqlite_checkpoint_interval(&self) -> Option<Duration> {
        (self.is_sqlite() && self.sqlite_checkpoint_interval_ms > 0)
            .then(|| Duration::from_millis(self.sqlite_checkpoint_interval_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_database_password() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }

    #[test]
    fn debug_never_prints_secrets() {
        let config = Config {
            admin_token: Some(Secret::new("super-secret-admin-token")),
            ..Config::default()
        };
        assert!(!format!("{config:?}").contains("super-secret"));
    }

    #[test]
    fn invalid_values_name_their_key() {
        let invalid = [
            Config {
                encryption_key: Some(Secret::new("short")),
                ..Config::default()
            },
            Config {
                sqlite_checkpoint_interval_ms: 60_001,
                ..Config::default()
            },
            Config {
                sync_page_size: 10_001,
                ..Config::default()
            },
            Config {
                sync_lease_secs: u64::MAX,
                ..Config::default()
            },
            Config {
                event_feed_capacity: 50_000_000,
                ..Config::default()
            },
            Config {
                ws_ping_interval_secs: 1 << 63,
                ..Config::default()
            },
            Config {
                webhook_retry_schedule: vec![5, 30 * 24 * 3600],
                ..Config::default()
            },
        ];
        for (config, key) in invalid.iter().zip([
            "encryption_key",
            "sqlite_checkpoint_interval_ms",
            "sync_page_size",
            "sync_lease_secs",
            "event_feed_capacity",
            "ws_ping_interval_secs",
            "webhook_retry_schedule",
        ]) {
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{error}");
        }
    }
}
