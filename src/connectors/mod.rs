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

/// What a write does to each record of its batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOperation {
    /// Creates a record.
    Create,
    /// Changes a record.
    Update,
    /// Deletes a record.
    Delete,
}

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
    /// Writes a batch; one outcome per record, in order, unless the whole batch failed.
    async fn write_batch(
        &self,
        entity: EntityType,
        operation: WriteOperation,
        records: &[Value],
    ) -> Result<Vec<WriteOutcome>, ConnectorError>;
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

/// The answer of a connector whose system takes no writes through Millwright.
pub fn no_writes(system: &str) -> Result<Vec<WriteOutcome>, ConnectorError> {
    Err(ConnectorError::Validation(format!(
        "{system} takes no writes through Millwright yet (no writable entities)"
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
