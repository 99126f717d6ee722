//! Remote systems behind one `Connector` trait: probe, read a page, write a batch.
//! Errors are typed so that callers can tell authentication, reachability, rate limits,
//! remote validation and remote faults apart.

pub mod demo;
pub mod http;
pub mod maintainx;
pub mod mapping;
pub mod maximo;
pub mod sap;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{
    catalog::{EntityType, System},
    db::Db,
    error::AppError,
};
use http::Outbound;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    #[error("the remote system rejected the credentials: {0}")]
    AuthRejected(String),
    #[error("the remote system is unreachable: {0}")]
    Unreachable(String),
    #[error("the remote system is rate limiting; retry after {} s", .retry_after.as_secs())]
    RateLimited { retry_after: Duration },
    #[error("the remote system refused the input: {0}")]
    Validation(String),
    #[error("the remote system failed: {0}")]
    RemoteFault(String),
}

impl ConnectorError {
    /// The kind, as `system.error` events name it.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectorError::AuthRejected(_) => "AUTH_REJECTED",
            ConnectorError::Unreachable(_) => "UNREACHABLE",
            ConnectorError::RateLimited { .. } => "RATE_LIMITED",
            ConnectorError::Validation(_) => "VALIDATION",
            ConnectorError::RemoteFault(_) => "REMOTE_FAULT",
        }
    }

    /// The remote's message (or ours about the remote), without the kind's preamble.
    pub fn message(&self) -> String {
        match self {
            ConnectorError::AuthRejected(m)
            | ConnectorError::Unreachable(m)
            | ConnectorError::Validation(m)
            | ConnectorError::RemoteFault(m) => m.clone(),
            ConnectorError::RateLimited { .. } => self.to_string(),
        }
    }

    /// Worth retrying after a pause (as opposed to needing someone to act).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ConnectorError::RateLimited { .. } | ConnectorError::RemoteFault(_)
        )
    }
}

pub use crate::catalog::WriteOperation;

/// Where to read from: a continuation token from the previous page, and for incremental
/// reads the modification mark of the previous run.
#[derive(Clone, Debug, Default)]
pub struct ReadRequest {
    pub cursor: Option<String>,
    pub modified_since: Option<String>,
    pub page_size: usize,
}

#[derive(Clone, Debug)]
pub struct RemoteRecord {
    pub key: String,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub data: Value,
}

#[derive(Clone, Debug)]
pub struct RemotePage {
    pub records: Vec<RemoteRecord>,
    /// Continuation token for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
    /// Modification mark to resume an incremental read from, known on the last page.
    pub high_water_mark: Option<String>,
}

/// The result of writing one record: the remote key, or why the remote refused it.
pub type WriteOutcome = Result<String, String>;

/// The error of a record whose create an earlier attempt may have sent, to a remote that can
/// neither take an idempotency key nor be asked whether it has the record: it is not sent
/// again (that could create it twice), and someone has to look.
pub const OUTCOME_UNKNOWN: &str = "outcome unknown: the record was being sent when an earlier \
     attempt stopped, and this system cannot tell whether it was created; check the remote \
     before writing it again";

/// One record of a write, with the idempotency key it keeps across every attempt to send it
/// (`mw-<operation>-<index>` for a bulk operation), which a connector sends to a remote that
/// honours one, or stamps on a created record to look it up after a crash.
#[derive(Clone, Debug)]
pub struct WriteRecord {
    pub idempotency_key: String,
    pub fields: Value,
}

/// A batch of writes for [`Connector::write`].
pub struct WriteRequest<'a> {
    pub entity: EntityType,
    pub operation: WriteOperation,
    pub records: &'a [WriteRecord],
    /// Set when an earlier attempt may have sent some of these records before it stopped (a
    /// crash, a timeout): the instant it began sending. A connector must then not create a
    /// record twice: it sends the idempotency key, looks the records up, or reports the
    /// record's outcome as unknown rather than resend it (docs/bulk-writes.md says which).
    pub sent_since: Option<DateTime<Utc>>,
    /// Awaited before each request to the remote: the connection's outbound rate limit.
    pub pace: &'a Pace,
}

/// What a write did: an outcome per record, in order, for the first `outcomes.len()`
/// records. When that is fewer than all, `stopped` says why the rest were not written (a
/// rate limit, rejected credentials, an unreachable remote); after `Unreachable` the first of
/// them may have reached the remote.
#[derive(Debug, Default)]
pub struct WriteReply {
    pub outcomes: Vec<WriteOutcome>,
    pub stopped: Option<ConnectorError>,
}

impl WriteReply {
    /// A reply for a batch none of whose records was written.
    pub fn stopped(err: ConnectorError) -> Self {
        WriteReply {
            outcomes: Vec::new(),
            stopped: Some(err),
        }
    }
}

/// The per-connection outbound rate limit a write waits on (one bucket per connection,
/// shared by every operation of this process that writes to it).
#[derive(Clone)]
pub struct Pace {
    limiter: Option<std::sync::Arc<governor::DefaultKeyedRateLimiter<Uuid>>>,
    connection_id: Uuid,
}

impl Pace {
    /// Requests to `connection_id` go at most as fast as `limiter` lets them.
    pub fn new(
        limiter: std::sync::Arc<governor::DefaultKeyedRateLimiter<Uuid>>,
        connection_id: Uuid,
    ) -> Self {
        Pace {
            limiter: Some(limiter),
            connection_id,
        }
    }

    /// No limit (tools and tests that write directly).
    pub fn unlimited() -> Self {
        Pace {
            limiter: None,
            connection_id: Uuid::nil(),
        }
    }

    /// Waits until the connection may send its next request.
    pub async fn ready(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.until_key_ready(&self.connection_id).await;
        }
    }
}

#[async_trait]
pub trait Connector: Send + Sync {
    /// Probes the remote: `Ok` when it answers and accepts the credentials.
    async fn check(&self) -> Result<(), ConnectorError>;
    async fn read_page(
        &self,
        entity: EntityType,
        request: &ReadRequest,
    ) -> Result<RemotePage, ConnectorError>;
    /// Called once at the start of a sync run (not when a run is resumed).
    async fn begin_sync(&self) -> Result<(), ConnectorError> {
        Ok(())
    }
    /// Maps a remote record to the unified fields of its entity; `Err` for a malformed record.
    fn unify(&self, entity: EntityType, remote: &Value) -> Result<Value, String>;
    /// Writes a batch of records to the remote (see [`WriteRequest`] and [`WriteReply`]).
    async fn write(&self, request: &WriteRequest<'_>) -> WriteReply;
    /// Writes a batch without pacing, each record with a fresh idempotency key: one outcome
    /// per record, in order, unless the batch stopped before its end.
    async fn write_batch(
        &self,
        entity: EntityType,
        operation: WriteOperation,
        records: &[Value],
    ) -> Result<Vec<WriteOutcome>, ConnectorError> {
        let batch = Uuid::now_v7().simple().to_string();
        let records: Vec<WriteRecord> = records
            .iter()
            .enumerate()
            .map(|(index, fields)| WriteRecord {
                idempotency_key: format!("mw-{batch}-{index}"),
                fields: fields.clone(),
            })
            .collect();
        let pace = Pace::unlimited();
        let reply = self
            .write(&WriteRequest {
                entity,
                operation,
                records: &records,
                sent_since: None,
                pace: &pace,
            })
            .await;
        match reply.stopped {
            Some(err) if reply.outcomes.len() < records.len() => Err(err),
            _ => Ok(reply.outcomes),
        }
    }
}

/// A connector for a connection of `system` with validated `credentials`; remote systems are
/// reached through `outbound`, the simulated one (demo) keeps its state in `db`.
pub fn connect(
    system: &System,
    connection_id: Uuid,
    credentials: &Map<String, Value>,
    outbound: &Outbound,
    db: &Db,
) -> Box<dyn Connector> {
    let outbound = outbound.clone();
    match system.key {
        "maintainx" => Box::new(maintainx::MaintainX::new(credentials, outbound)),
        "ibm_maximo" => Box::new(maximo::Maximo::new(credentials, outbound)),
        "sap_s4hana" => Box::new(sap::Sap::new(
            sap::Flavor::S4Hana,
            connection_id,
            credentials,
            outbound,
        )),
        "sap_ecc" => Box::new(sap::Sap::new(
            sap::Flavor::Ecc,
            connection_id,
            credentials,
            outbound,
        )),
        _ => Box::new(demo::DemoConnector::new(db, connection_id, credentials)),
    }
}

/// Checks what the catalog's field rules cannot: the URLs a connection would call (https,
/// and the outbound guard) and each system's own rules (SAP's authentication fields, ECC's
/// service overrides). Errors are `BAD_USER_INPUT` naming the field.
pub async fn validate(
    system: &System,
    credentials: &Map<String, Value>,
    outbound: &Outbound,
) -> Result<(), AppError> {
    match system.key {
        "sap_s4hana" => sap::validate(sap::Flavor::S4Hana, credentials)?,
        "sap_ecc" => sap::validate(sap::Flavor::Ecc, credentials)?,
        _ => {}
    }
    http::check_targets(system, credentials, outbound.allow_private()).await
}

/// The answer of a connector whose system takes no writes of `entity` through Millwright.
pub fn not_writable(system: &str, entity: EntityType) -> WriteReply {
    WriteReply::stopped(ConnectorError::Validation(format!(
        "{entity} is not writable in {system}"
    )))
}

/// Probes with a few retries of transient answers, as a person clicking "test" would expect.
pub async fn probe(connector: &dyn Connector) -> Result<(), ConnectorError> {
    let mut attempt = 0;
    loop {
        match connector.check().await {
            Err(err) if err.is_transient() && attempt < 3 => {
                attempt += 1;
                let pause = match &err {
                    ConnectorError::RateLimited { retry_after } => {
                        (*retry_after).min(Duration::from_secs(5))
                    }
                    _ => Duration::from_millis(200 * attempt),
                };
                tokio::time::sleep(pause).await;
            }
            outcome => return outcome,
        }
    }
}
