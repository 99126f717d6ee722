//! The domain's enums as GraphQL enums: each mirrors one domain enum (`remote`), so the
//! domain stays free of GraphQL while the schema keeps its names. A domain value crosses
//! with `.into()` in either direction.

use async_graphql::Enum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::catalog::SystemCategory")]
pub enum SystemCategory {
    Cmms,
    Eam,
    Erp,
    Wms,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::catalog::Deployment")]
pub enum Deployment {
    Cloud,
    OnPremises,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::catalog::EntityType")]
pub enum EntityType {
    Site,
    Location,
    Asset,
    WorkOrder,
    Part,
    PurchaseOrder,
    Vendor,
    User,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::connections::ConnectionStatus")]
pub enum ConnectionStatus {
    Pending,
    Online,
    Offline,
    AuthRequired,
    Disconnected,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::credits::CreditEntryKind")]
pub enum CreditEntryKind {
    Grant,
    Connect,
    Disconnect,
    Adjustment,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::sync::SyncKind")]
pub enum SyncKind {
    Full,
    Incremental,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::sync::SyncTrigger")]
pub enum SyncTrigger {
    Manual,
    Schedule,
    Connect,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::sync::SyncStatus")]
pub enum SyncStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::webhooks::DeliveryStatus")]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Failed,
    Exhausted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::events::EventType")]
pub enum EventType {
    ConnectionCreated,
    ConnectionStatusChanged,
    ConnectionAuthRequired,
    ConnectionDisconnected,
    SyncStarted,
    SyncProgress,
    SyncCompleted,
    SyncFailed,
    RecordsChanged,
    BulkOperationCompleted,
    CreditsChanged,
    WebhookEndpointDisabled,
    SystemError,
    /// A test delivery asked for with `sendTestWebhook`; only ever sent to that endpoint.
    WebhookTest,
}

/// How urgent a work order is, whatever scale the remote uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::records::unified::WorkOrderPriority")]
pub enum WorkOrderPriority {
    None,
    Low,
    Medium,
    High,
    Urgent,
}

/// Where a work order stands, whatever the remote calls it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(remote = "crate::records::unified::WorkOrderStatus")]
pub enum WorkOrderStatus {
    Open,
    InProgress,
    OnHold,
    Completed,
    Cancelled,
}

/// Converts a list of domain values into their GraphQL mirrors, or back.
pub fn all<T: Copy, U: From<T>>(values: &[T]) -> Vec<U> {
    values.iter().map(|v| U::from(*v)).collect()
}
