//! The domain's enums as GraphQL enums: each mirrors one domain enum (`remote`), so the
//! domain stays free of GraphQL while the schema keeps its names. A domain value crosses
//! with `.into()` in either direction.

use async_graphql::Enum;

/// What kind of system a connectable system is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::catalog::SystemCategory")]
pub enum SystemCategory {
    /// Computerised maintenance management system.
    Cmms,
    /// Enterprise asset management system.
    Eam,
    /// Enterprise resource planning system.
    Erp,
    /// Warehouse management system.
    Wms,
}

/// Where the customer's system runs; an on-premises connection costs twice the credits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::catalog::Deployment")]
pub enum Deployment {
    /// The vendor's hosted service, reached over the internet.
    Cloud,
    /// Installed on the customer's own servers or plant network.
    OnPremises,
}

/// A kind of record in the unified model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::catalog::EntityType")]
pub enum EntityType {
    /// A plant, facility or other top-level place.
    Site,
    /// A place within a site (an area, a building, a functional location).
    Location,
    /// A piece of equipment that is maintained.
    Asset,
    /// A job to be done on an asset or at a location.
    WorkOrder,
    /// A spare part or material kept in stock.
    Part,
    /// An order placed with a vendor.
    PurchaseOrder,
    /// A supplier.
    Vendor,
    /// A person who uses the remote system.
    User,
}

/// What a write does to each record of a bulk operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::catalog::WriteOperation")]
pub enum WriteOperation {
    /// Creates each record; the remote assigns its key.
    Create,
    /// Changes the fields given of the record named by `key`.
    Update,
    /// Deletes the record named by `key`.
    Delete,
}

/// Where a bulk operation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "entity::enums::BulkStatus")]
pub enum BulkOperationStatus {
    /// Waiting for a worker.
    Queued,
    /// Being written, batch by batch.
    Running,
    /// Every record was written.
    Succeeded,
    /// It ran to its end and some records failed (see `results(onlyFailed: true)`).
    PartiallyFailed,
    /// It stopped before its end (rejected credentials, a disconnected connection, the remote
    /// refusing every attempt) or every record failed.
    Failed,
    /// Cancelled: the records written before stay written and are reported.
    Cancelled,
}

/// Where a connection stands, as the last probe of its remote system found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::connections::ConnectionStatus")]
pub enum ConnectionStatus {
    /// Connected with `validate: false`: not probed yet.
    Pending,
    /// The remote answered the last probe or sync.
    Online,
    /// The remote could not be reached or failed.
    Offline,
    /// The remote refused the credentials; update them with `updateConnectionCredentials`.
    AuthRequired,
    /// Disconnected: its token no longer works and its credits went back to the pool.
    Disconnected,
}

/// Why the account's credit pool moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::credits::CreditEntryKind")]
pub enum CreditEntryKind {
    /// Credits added to the pool: `grantCredits`, the `credits grant` command, or the
    /// credits an account was created with.
    Grant,
    /// Credits taken by a new connection.
    Connect,
    /// Credits returned by a disconnected connection.
    Disconnect,
    /// A correction of the pool; reserved, not written by this version.
    Adjustment,
}

/// How much a sync run reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::sync::SyncKind")]
pub enum SyncKind {
    /// Every record; records the remote no longer has are marked deleted.
    Full,
    /// What changed since the mark the previous run saved; an entity type never read before
    /// is read in full.
    Incremental,
}

/// What queued a sync run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::sync::SyncTrigger")]
pub enum SyncTrigger {
    /// The `triggerSync` mutation.
    Manual,
    /// The connection's `syncIntervalMinutes` schedule.
    Schedule,
    /// The first, full sync queued by `connect`.
    Connect,
}

/// Where a sync run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::sync::SyncStatus")]
pub enum SyncStatus {
    /// Waiting for a sync worker.
    Queued,
    /// A sync worker is reading the remote.
    Running,
    /// Finished; every entity type was read.
    Succeeded,
    /// Ended by an error; `SyncRun.error` says which.
    Failed,
    /// Stopped by `cancelSyncRun` or by a disconnect before it finished.
    Cancelled,
}

/// Where a webhook delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::webhooks::DeliveryStatus")]
pub enum DeliveryStatus {
    /// Not sent yet, or waiting for its next retry at `nextAttemptAt`.
    Pending,
    /// The endpoint answered with a 2xx status.
    Succeeded,
    /// The endpoint answered 410 Gone: not retried, and the endpoint is disabled.
    Failed,
    /// Every attempt of the retry schedule failed.
    Exhausted,
}

/// What happened; in webhook payloads and stored data the same types are written in lower
/// case with dots (`connection.created`, `sync.completed`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::events::EventType")]
pub enum EventType {
    /// A customer's system was connected (`connection.created`).
    ConnectionCreated,
    /// A connection's status changed (`connection.status_changed`).
    ConnectionStatusChanged,
    /// The remote refused a connection's credentials (`connection.auth_required`).
    ConnectionAuthRequired,
    /// A connection was disconnected and its credits returned (`connection.disconnected`).
    ConnectionDisconnected,
    /// A sync run began reading (`sync.started`).
    SyncStarted,
    /// A running sync's counts, at most once a second (`sync.progress`).
    SyncProgress,
    /// A sync run succeeded (`sync.completed`).
    SyncCompleted,
    /// A sync run failed or was cancelled (`sync.failed`).
    SyncFailed,
    /// A sync pass over one entity type, or a batch of a bulk write, added, updated or deleted
    /// records (`records.changed`).
    RecordsChanged,
    /// A bulk operation ended, whatever its status (`bulk_operation.completed`): its id,
    /// status and counts.
    BulkOperationCompleted,
    /// A flow's condition held for a record change a sync made (`flow.triggered`).
    FlowTriggered,
    /// The account's credit pool moved (`credits.changed`).
    CreditsChanged,
    /// A webhook endpoint was disabled: it answered 410 Gone or kept failing too long
    /// (`webhook_endpoint.disabled`).
    WebhookEndpointDisabled,
    /// A remote system failed during a sync or a health check (`system.error`).
    SystemError,
    /// A test delivery asked for with `sendTestWebhook`; only ever sent to that endpoint.
    WebhookTest,
}

/// How urgent a work order is, whatever scale the remote uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::records::unified::WorkOrderPriority")]
pub enum WorkOrderPriority {
    /// No priority set.
    None,
    /// Low priority.
    Low,
    /// Medium priority.
    Medium,
    /// High priority.
    High,
    /// The most urgent level.
    Urgent,
}

/// Where a work order stands, whatever the remote calls it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::records::unified::WorkOrderStatus")]
pub enum WorkOrderStatus {
    /// Created or approved, not started.
    Open,
    /// Work has started.
    InProgress,
    /// Paused, waiting for something (parts, approval, access).
    OnHold,
    /// Done.
    Completed,
    /// Will not be done.
    Cancelled,
}

/// Converts a list of domain values into their GraphQL mirrors, or back.
pub fn all<T: Copy, U: From<T>>(values: &[T]) -> Vec<U> {
    values.iter().map(|v| U::from(*v)).collect()
}

/// What happened to a record.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "crate::flows::Change")]
pub enum RecordChangeKind {
    /// A sync stored a record it had not seen (or one it had seen deleted).
    Created,
    /// A sync stored a new version of a record whose unified fields changed.
    Updated,
    /// A sync found a record gone from the remote.
    Deleted,
}
