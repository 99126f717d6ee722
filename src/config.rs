//! Typed configuration: built-in defaults, then an optional TOML file, then `MILLWRIGHT_*`
//! environment variables (these win). Every value is validated at start; errors name the key.
//!
//! Settings are grouped in sections (`config.sync.page_size`), all declared once below with
//! their key, default, bounds and documentation. Keys stay flat in the file and the
//! environment (`sync_page_size`, `MILLWRIGHT_SYNC_PAGE_SIZE`), as they always were: an
//! installation upgrades without touching its configuration, and every setting has one name
//! that is the same in the file, the environment, the README and error messages.

mod declare;
mod values;

use std::{fmt, net::SocketAddr, path::Path, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};

use declare::settings;
pub use declare::{Bounds, RetiredKey, Section, Setting};
pub use values::{LogFormat, Secret};

/// Environment variables are read with this prefix; `MILLWRIGHT_DATABASE_URL` sets `database_url`.
pub const ENV_PREFIX: &str = "MILLWRIGHT_";

const DAY: u64 = 24 * 3600;

settings! {
    sections {
        /// Where the data lives.
        database: DatabaseSettings {
            /// embedded SQLite; `postgres://…` for production and several instances
            database_url => url: String = "sqlite://millwright.db?mode=rwc".to_owned(),
                check(values::is_database_url, "a `sqlite:` or `postgres://` URL");
            /// pool size
            database_max_connections => max_connections: u32 = 10, range(1, 1000);
            /// SQLite's page cache per pooled connection, in MiB (SQLite's own default is 2 MiB,
            /// too small for the indexes of a large record store); used as needed, so at most this
            /// × `MILLWRIGHT_DATABASE_MAX_CONNECTIONS`
            sqlite_cache_mib => sqlite_cache_mib: u64 = 32, range(1, 65536);
            /// SQLite: a background task copies committed pages from the write-ahead log into the
            /// database file at most this often while writes happen, so that writers do not stop
            /// to do it; `0` turns it off (a writer then does it once the log holds 8,192 pages)
            sqlite_checkpoint_interval_ms => sqlite_checkpoint_interval_ms: u64 = 100,
                range(0, 60_000);
        }
        /// The HTTP and WebSocket edge, and what one GraphQL request may ask.
        http: HttpSettings {
            /// HTTP address; port 0 picks a free one (logged as `listening on <addr>`)
            listen => listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080));
            /// GraphQL requests taking longer get 408; over WebSocket, a query or mutation (or a
            /// subscription's setup) taking longer ends with `TIMEOUT`
            request_timeout_secs => request_timeout_secs: u64 = 30, range(1, DAY);
            /// larger request bodies get 413
            body_limit_bytes => body_limit_bytes: usize = 1024 * 1024, range(1, 256 << 20);
            /// operations per batched request
            max_batch_size => max_batch_size: usize = 10, range(1, 1000);
            /// deeper queries get `QUERY_TOO_COMPLEX`
            max_query_depth => max_query_depth: usize = 15, range(1, 1000);
            /// fields per query (aliases count) before `QUERY_TOO_COMPLEX`
            max_query_complexity => max_query_complexity: usize = 500, range(1, 1_000_000);
            /// the most objects one operation may return, each list counted at its page size
            /// (docs/queries.md); costlier operations get `QUERY_TOO_COMPLEX`
            max_query_cost => max_query_cost: u64 = 10_000, range(1, 1_000_000_000);
            /// how long a request's data loaders gather keys before one query, in milliseconds;
            /// a longer window batches more on a busy machine, a shorter one answers sooner
            graphql_batch_window_ms => graphql_batch_window_ms: u64 = 4, range(1, 1000);
            /// a WebSocket without `connection_init` by then is closed with 4408
            ws_init_timeout_secs => ws_init_timeout_secs: u64 = 10, range(1, DAY);
            /// the server pings WebSockets this often, to keep proxies from dropping them
            ws_ping_interval_secs => ws_ping_interval_secs: u64 = 30, range(1, DAY);
            /// WebSockets open at once with one token, counted per server process; the next
            /// is closed with 4429 at `connection_init`
            ws_max_sockets_per_token => ws_max_sockets_per_token: usize = 50, range(1, 1_000_000);
            /// a WebSocket client that reads none of its messages this long is dropped (close
            /// code 4413), so that it does not hold the server's buffers
            ws_send_timeout_secs => ws_send_timeout_secs: u64 = 10, range(1, 3600);
            /// browser origins allowed to call `/graphql` from their pages (CORS), exact and
            /// comma-separated, e.g. `https://app.example.com`; empty: no CORS. When set, a
            /// WebSocket upgrade whose `Origin` is not listed is refused with 403
            #[serde(deserialize_with = "values::origin_list")]
            cors_allowed_origins => cors_allowed_origins: Vec<String> = Vec::new(),
                check(values::are_origins, "origins such as https://app.example.com (scheme, host, optional port; no path), comma-separated");
        }
        /// API rate limits: a token bucket for each API key and connection token, and one for
        /// each client address whose requests bring no valid token.
        rate_limits: RateLimitSettings {
            /// requests per second each API key or connection token may make, on average (an
            /// account's own limit, set with `setAccountRateLimit`, replaces it and the burst)
            api_requests_per_second => api_requests_per_second: u32 = 50, range(1, 1_000_000);
            /// requests a token may make at once beyond its rate (the bucket's size)
            api_burst => api_burst: u32 = 100, range(1, 1_000_000);
            /// requests per second from one client address (an IPv6 /64) with a missing,
            /// invalid or revoked token; more get 429
            failed_auth_per_second => failed_auth_per_second: u32 = 1, range(1, 1_000_000);
            /// such requests one client address may make at once
            failed_auth_burst => failed_auth_burst: u32 = 20, range(1, 1_000_000);
        }
        /// Secrets: the operator's token and the keys that encrypt stored credentials.
        security: SecuritySettings {
            /// operator token for `createAccount`, `grantCredits` and `setAccountRateLimit`; unset
            /// turns the admin API off
            admin_token => admin_token: Option<Secret> = None,
                check(values::is_operator_token, "at least 16 characters");
            /// encrypts connection credentials and webhook secrets at rest; unset with SQLite: a
            /// key file beside the database is generated (PostgreSQL needs this set)
            encryption_key => encryption_key: Option<Secret> = None,
                check(values::is_encryption_key, "the base64 encoding of 32 bytes");
            /// previous encryption keys, comma-separated: values they sealed still decrypt
            /// until `millwright keys rotate` has re-encrypted them with `encryption_key`
            /// (docs/operations.md, Key rotation)
            encryption_old_keys => encryption_old_keys: Option<Secret> = None,
                check(values::are_encryption_keys, "base64 encodings of 32 bytes, comma-separated");
        }
        /// What this process runs and how it logs.
        process: ProcessSettings {
            /// `pretty` or `json` (filter with `RUST_LOG`)
            log_format => log_format: LogFormat = LogFormat::Pretty;
            /// run the background workers (health checks, syncs, webhook deliveries, pruning) in
            /// this process
            workers => workers: bool = true;
            /// distinct operation names `/metrics` labels, first come first labelled; further
            /// names count as `other` (only authenticated requests' names are labelled)
            metrics_max_operation_names => metrics_max_operation_names: usize = 200,
                range(0, 100_000);
        }
        /// Connections to customers' systems.
        connectors: ConnectorSettings {
            /// allow connections whose `base_url` or `token_url` is on a loopback, private,
            /// link-local or reserved address, and plain `http`: turn it on for a self-hosted
            /// install on a plant network whose SAP or Maximo has a private address
            connector_allow_private_targets => allow_private_targets: bool = false;
            /// each live connection is probed this often (first probes spread over the interval)
            health_check_interval_secs => health_check_interval_secs: u64 = 300, range(1, 30 * DAY);
            /// the records and sync cursors of a disconnected connection are deleted this long
            /// (7 days) after the disconnect; the connection, its runs and its events stay
            disconnected_records_grace_secs => disconnected_records_grace_secs: u64 = 7 * DAY,
                range(0, 365 * DAY);
        }
        /// Sync runs: how many, how fast, how they survive a crash.
        sync: SyncSettings {
            /// sync runs executed at once by this process
            sync_workers => workers: usize = 4, range(1, 1024);
            /// records asked of a remote per page
            sync_page_size => page_size: usize = 500, range(1, 10_000);
            /// requests per second to each connection's remote system, shared by its sync runs
            /// and bulk writes
            sync_requests_per_second => requests_per_second: u32 = 10, range(1, 1_000_000);
            /// a run whose process died (its lease expired) is taken over after this
            sync_lease_secs => lease_secs: u64 = 30, range(1, DAY);
            /// retries of an unreachable or failing remote within a run before the run fails
            sync_retries => retries: u32 = 4, range(0, 100);
            /// attempts a run that fails unexpectedly (an internal error, a process that died)
            /// is given, with backoff, before it ends `FAILED` with `MAX_ATTEMPTS`
            sync_max_attempts => max_attempts: u32 = 5, range(1, 100);
        }
        /// Bulk writes to customers' systems: how many at once, how they survive a crash.
        /// Their requests share `sync_requests_per_second` with the connection's syncs.
        bulk: BulkSettings {
            /// bulk operations written at once by this process
            bulk_workers => workers: usize = 2, range(1, 1024);
            /// an operation whose process died (its lease expired) is taken over after this,
            /// from its first unfinished batch
            bulk_lease_secs => lease_secs: u64 = 30, range(1, DAY);
            /// attempts an operation whose remote stays unreachable (or that fails
            /// unexpectedly) is given, with backoff, before it ends `FAILED`
            bulk_max_attempts => max_attempts: u32 = 5, range(1, 100);
            /// operations that ended (and the records and outcomes they hold) are deleted this
            /// long (30 days) after they ended
            bulk_retention_secs => retention_secs: u64 = 30 * DAY, range(1, 100 * 365 * DAY);
        }
        /// Webhook deliveries: targets, retries, concurrency.
        webhooks: WebhookSettings {
            /// allow webhook URLs on loopback/private addresses
            webhook_allow_private_targets => allow_private_targets: bool = false;
            /// seconds before each webhook retry, e.g. `5,300,1800`
            #[serde(deserialize_with = "values::seconds_list")]
            webhook_retry_schedule => retry_schedule: Vec<u64> =
                vec![5, 300, 1800, 7200, 18000, 36000, 36000],
                check(values::is_retry_schedule, "1 to 50 delays of at most 604800 (7 days) each");
            /// an endpoint failing continuously this long (5 days) is disabled
            webhook_disable_after_secs => disable_after_secs: u64 = 5 * DAY, range(0, 365 * DAY);
            /// webhook requests in flight at once
            webhook_workers => workers: usize = 32, range(1, 10_000);
            /// webhook requests in flight to one endpoint
            webhook_max_in_flight_per_endpoint => max_in_flight_per_endpoint: usize = 8,
                range(1, 10_000);
            /// a delivery whose process died is sent again after this; each process claims up to
            /// lease ÷ 15 s rounds of requests ahead (more throughput, slower takeover)
            webhook_lease_secs => lease_secs: u64 = 120, range(1, DAY);
            /// finished deliveries (succeeded, failed, exhausted) and their attempts are deleted
            /// this long (30 days) after they were created; at least the sum of
            /// `webhook_retry_schedule`, so that no delivery is pruned while it may be retried
            webhook_retention_secs => retention_secs: u64 = 30 * DAY, range(1, 100 * 365 * DAY);
        }
        /// The event log and its live feed.
        events: EventSettings {
            /// events older than this (30 days) are pruned; older cursors get `BAD_USER_INPUT`
            event_retention_secs => retention_secs: u64 = 30 * DAY, range(1, 100 * 365 * DAY);
            /// events buffered in memory for live subscribers; slower ones catch up from the
            /// database
            event_feed_capacity => feed_capacity: usize = 4096, range(1, 1_000_000);
        }
    }
    retired {
        /// a test knob (the length of one minute of `syncIntervalMinutes`); tests now set it
        /// in code, and a minute is always 60 seconds
        sync_schedule_minute_secs;
    }
}

/// Knobs that only tests turn. They are not settings: no key reads them.
#[derive(Clone)]
pub struct TestingSettings {
    /// Length of one minute of `syncIntervalMinutes`; tests shorten it.
    pub schedule_minute: Duration,
    /// The worker (by its name in `workers`) that panics each time it starts, to test its
    /// supervision (restarts, `/readyz`, the restart counter).
    pub panic_in_worker: Option<&'static str>,
}

impl Default for TestingSettings {
    fn default() -> Self {
        Self {
            schedule_minute: Duration::from_secs(60),
            panic_in_worker: None,
        }
    }
}

/// A loaded configuration and what start-up should warn about.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// Retired keys that the file or the environment still set; they are ignored.
    pub retired: Vec<&'static RetiredKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration: `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &values::redact_url(&self.database.url))
            .field("listen", &self.http.listen)
            .field("admin_token", &self.security.admin_token)
            .field("encryption_key", &self.security.encryption_key)
            .field("encryption_old_keys", &self.security.encryption_old_keys)
            .field("log_format", &self.process.log_format)
            .field("workers", &self.process.workers)
            .finish_non_exhaustive()
    }
}

/// Whether `MILLWRIGHT_<name>` is configuration; other `MILLWRIGHT_*` variables (for tests
/// and tools) are not, and are ignored.
fn is_key(name: &str) -> bool {
    SETTINGS
        .iter()
        .map(|s| s.key)
        .chain(RETIRED.iter().map(|r| r.key))
        .any(|key| name.eq_ignore_ascii_case(key))
}

/// A `[sync]` table in the file is a reader of the README's grouping who expects sections;
/// say that keys are flat rather than only that `sync` is unknown.
fn explain_sections(error: Box<figment::Error>) -> ConfigError {
    if let figment::error::Kind::UnknownField(field, _) = &error.kind
        && let Some(section) = SECTIONS.iter().find(|s| s.name == field)
    {
        let example = SETTINGS.iter().find(|s| s.section == section.name);
        return ConfigError::Invalid {
            key: section.name,
            message: format!(
                "settings are flat keys (e.g. `{}`), not [sections]",
                example.map_or(section.name, |s| s.key)
            ),
        };
    }
    ConfigError::Load(error)
}

impl Config {
    /// Defaults, then the file (if given; a missing file is an error), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Loaded, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(FileAndEnv::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Invalid {
                    key: "--config",
                    message: format!("file {} not found", path.display()),
                });
            }
            figment = figment.merge(Toml::file(path));
        }
        let env = Env::prefixed(ENV_PREFIX).filter(|name| is_key(name.as_str()));
        let flat: FileAndEnv = figment
            .merge(env)
            .extract()
            .map_err(|error| explain_sections(Box::new(error)))?;
        let (config, retired) = flat.into_config();
        config.validate()?;
        Ok(Loaded { config, retired })
    }

    /// Every setting within its declared bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_bounds()?;
        self.check_webhook_retention()?;
        if self.testing.schedule_minute.is_zero() {
            return Err(ConfigError::Invalid {
                key: "testing.schedule_minute",
                message: "must be greater than 0".to_owned(),
            });
        }
        Ok(())
    }

    /// A finished delivery may be redelivered and retried again, but a pending one is never
    /// pruned; what the retention must cover is the longest a delivery can stay pending.
    fn check_webhook_retention(&self) -> Result<(), ConfigError> {
        let horizon = self.webhook_retry_horizon().as_secs();
        if self.webhooks.retention_secs < horizon {
            return Err(ConfigError::Invalid {
                key: "webhook_retention_secs",
                message: format!(
                    "must be at least the retry horizon, the sum of `webhook_retry_schedule` \
                     ({horizon} s); it is {} s",
                    self.webhooks.retention_secs
                ),
            });
        }
        Ok(())
    }

    /// How long after its first attempt a delivery may still be retried.
    pub fn webhook_retry_horizon(&self) -> Duration {
        Duration::from_secs(self.webhooks.retry_schedule.iter().sum())
    }

    pub fn webhook_retention(&self) -> Duration {
        Duration::from_secs(self.webhooks.retention_secs)
    }

    pub fn disconnected_records_grace(&self) -> Duration {
        Duration::from_secs(self.connectors.disconnected_records_grace_secs)
    }

    pub fn is_sqlite(&self) -> bool {
        self.database.url.starts_with("sqlite:")
    }

    pub fn engine_settings(&self) -> crate::sync::engine::EngineSettings {
        crate::sync::engine::EngineSettings {
            page_size: self.sync.page_size,
            requests_per_second: self.sync.requests_per_second,
            lease: Duration::from_secs(self.sync.lease_secs),
            retries: self.sync.retries,
            max_attempts: self.sync.max_attempts,
        }
    }

    pub fn bulk_retention(&self) -> Duration {
        Duration::from_secs(self.bulk.retention_secs)
    }

    pub fn bulk_settings(&self) -> crate::bulk::run::BulkSettings {
        crate::bulk::run::BulkSettings {
            lease: Duration::from_secs(self.bulk.lease_secs),
            max_attempts: self.bulk.max_attempts,
        }
    }

    pub fn delivery_settings(&self) -> crate::webhooks::deliver::DeliverySettings {
        let webhooks = &self.webhooks;
        crate::webhooks::deliver::DeliverySettings {
            schedule: webhooks.retry_schedule.clone(),
            allow_private: webhooks.allow_private_targets,
            disable_after: Duration::from_secs(webhooks.disable_after_secs),
            per_endpoint: webhooks.max_in_flight_per_endpoint,
            concurrency: webhooks.workers,
            lease: Duration::from_secs(webhooks.lease_secs),
        }
    }

    pub fn event_retention(&self) -> Duration {
        Duration::from_secs(self.events.retention_secs)
    }

    pub fn health_check_interval(&self) -> Duration {
        Duration::from_secs(self.connectors.health_check_interval_secs)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.http.request_timeout_secs)
    }

    pub fn graphql_batch_window(&self) -> Duration {
        Duration::from_millis(self.http.graphql_batch_window_ms)
    }

    /// How often a background task checkpoints SQLite's write-ahead log; `None`: never.
    pub fn sqlite_checkpoint_interval(&self) -> Option<Duration> {
        let ms = self.database.sqlite_checkpoint_interval_ms;
        (self.is_sqlite() && ms > 0).then(|| Duration::from_millis(ms))
    }
}

#[cfg(test)]
mod tests;
