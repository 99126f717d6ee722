//! The fixed vocabularies stored in text columns. Each is a sea-orm active enum whose
//! stored text is the value's name in `SCREAMING_SNAKE_CASE` (event types: their wire
//! names), exactly what earlier releases wrote, so no migration rewrites them.
//!
//! A stored text that is none of an enum's values is a read error, never a default:
//! [`stored_in`] names the columns each enum lives in, so that the error can say where.

use sea_orm::entity::prelude::*;

/// How a connected system is deployed (`connections.deployment`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(
    rs_type = "String",
    db_type = "Text",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
pub enum Deployment {
    Cloud,
    OnPremises,
}

/// The kinds of records of the unified model (`records.entity`, `sync_cursors.entity`,
/// `demo_remote_records.entity`, and the keys of `sync_runs.stats`), in catalog order.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    EnumIter,
    DeriveActiveEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[sea_orm(
    rs_type = "String",
    db_type = "Text",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
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

/// Where a connection stands (`connections.status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(
    rs_type = "String",
    db_type = "Text",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
pub enum ConnectionStatus {
    Pending,
    Online,
    Offline,
    AuthRequired,
    Disconnected,
}

/// Why the credit pool moved (`credit_ledger.kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(
    rs_type = "String",
    db_type = "Text",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
pub enum CreditEntryKind {
    Grant,
    Connect,
    Disconnect,
    Adjustment,
}

/// What a sync run reads (`sync_runs.kind`, `sync_cursors.pass_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(
    rs_type = "String",
    db_type = "Text",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
pub enum SyncKind {
    Full,
    Incremental,
}

/// What queued a sync run (`sync_runs.trigger`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(
    rs_type = "String",
    db_type = "Text",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
pub enum SyncTrigger {
    Manual,
    Schedule,
    Connect,
}

/// Where a sync run stands (`sync_runs.status`):
/// `QUEUED → RUNNING → SUCCEEDED | FAILED | CANCELLED`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(
    rs_type = "String",
    db_type = "Text",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
pub enum SyncStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl SyncStatus {
    /// Succeeded, failed or cancelled: the run will not change again.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            SyncStatus::Succeeded | SyncStatus::Failed | SyncStatus::Cancelled
        )
    }
}

/// Why a sync run did not succeed (`sync_runs.error_code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(
    rs_type = "String",
    db_type = "Text",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
pub enum SyncErrorCode {
    /// Cancelled through the API.
    Cancelled,
    /// The connection was disconnected while the run was queued or running.
    Disconnected,
    /// The remote refused the credentials.
    AuthRequired,
    /// The remote could not be reached, or kept failing.
    Offline,
    /// The remote answered with something the connector cannot use.
    RemoteError,
    /// The stored credentials cannot be decrypted (say, the encryption key changed); the
    /// connection goes `AUTH_REQUIRED` until new ones are set.
    CredentialsUnreadable,
    /// Every attempt the run was given (`MILLWRIGHT_SYNC_MAX_ATTEMPTS`) ended unexpectedly.
    MaxAttempts,
}

/// Where one webhook delivery stands (`webhook_deliveries.status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(
    rs_type = "String",
    db_type = "Text",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Failed,
    Exhausted,
}

/// What an event reports (`events.event_type`), stored under its wire name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum EventType {
    #[sea_orm(string_value = "connection.created")]
    ConnectionCreated,
    #[sea_orm(string_value = "connection.status_changed")]
    ConnectionStatusChanged,
    #[sea_orm(string_value = "connection.auth_required")]
    ConnectionAuthRequired,
    #[sea_orm(string_value = "connection.disconnected")]
    ConnectionDisconnected,
    #[sea_orm(string_value = "sync.started")]
    SyncStarted,
    #[sea_orm(string_value = "sync.progress")]
    SyncProgress,
    #[sea_orm(string_value = "sync.completed")]
    SyncCompleted,
    #[sea_orm(string_value = "sync.failed")]
    SyncFailed,
    #[sea_orm(string_value = "records.changed")]
    RecordsChanged,
    #[sea_orm(string_value = "bulk_operation.completed")]
    BulkOperationCompleted,
    /// A flow's condition held for a record change.
    #[sea_orm(string_value = "flow.triggered")]
    FlowTriggered,
    #[sea_orm(string_value = "credits.changed")]
    CreditsChanged,
    #[sea_orm(string_value = "webhook_endpoint.disabled")]
    WebhookEndpointDisabled,
    #[sea_orm(string_value = "system.error")]
    SystemError,
    /// A test delivery asked for with `sendTestWebhook`; only ever sent to that endpoint.
    #[sea_orm(string_value = "webhook.test")]
    WebhookTest,
}

/// What a write does to each record of its batch (`bulk_operations.operation`).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    EnumIter,
    DeriveActiveEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[sea_orm(
    rs_type = "String",
    db_type = "Text",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WriteOperation {
    /// Creates a record.
    Create,
    /// Changes a record.
    Update,
    /// Deletes a record.
    Delete,
}

/// Where a bulk operation stands (`bulk_operations.status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(
    rs_type = "String",
    db_type = "Text",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
pub enum BulkStatus {
    Queued,
    Running,
    Succeeded,
    PartiallyFailed,
    Failed,
    Cancelled,
}

impl BulkStatus {
    /// Whether the operation has ended (nothing more is written).
    pub fn is_finished(self) -> bool {
        !matches!(self, BulkStatus::Queued | BulkStatus::Running)
    }
}

/// For each enum, the columns it is stored in. Gives each its `Display` (the stored text,
/// as in `ON_PREMISES` or `sync.completed`: the form logs, messages and JSON documents use)
/// and [`stored_in`], which names the columns for read errors (sea-orm reports an unknown
/// stored text as "unexpected value for NAME enum").
macro_rules! stored_enums {
    ($($name:ident => $columns:literal),+ $(,)?) => {
        $(
            impl std::fmt::Display for $name {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str(&self.to_value())
                }
            }
        )+

        /// The columns an enum's values are stored in, by the enum's name.
        pub fn stored_in(enum_name: &str) -> Option<&'static str> {
            match enum_name {
                $(stringify!($name) => Some($columns),)+
                _ => None,
            }
        }
    };
}

stored_enums!(
    Deployment => "connections.deployment",
    EntityType => "records.entity, sync_cursors.entity or demo_remote_records.entity",
    ConnectionStatus => "connections.status",
    CreditEntryKind => "credit_ledger.kind",
    SyncKind => "sync_runs.kind or sync_cursors.pass_kind",
    SyncTrigger => "sync_runs.trigger",
    SyncStatus => "sync_runs.status",
    SyncErrorCode => "sync_runs.error_code",
    DeliveryStatus => "webhook_deliveries.status",
    EventType => "events.event_type",
    WriteOperation => "bulk_operations.operation",
    BulkStatus => "bulk_operations.status",
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_texts_are_the_ones_earlier_releases_wrote() {
        assert_eq!(Deployment::OnPremises.to_value(), "ON_PREMISES");
        assert_eq!(EntityType::PurchaseOrder.to_value(), "PURCHASE_ORDER");
        assert_eq!(ConnectionStatus::AuthRequired.to_value(), "AUTH_REQUIRED");
        assert_eq!(CreditEntryKind::Disconnect.to_value(), "DISCONNECT");
        assert_eq!(SyncKind::Incremental.to_value(), "INCREMENTAL");
        assert_eq!(SyncTrigger::Schedule.to_value(), "SCHEDULE");
        assert_eq!(SyncStatus::Cancelled.to_value(), "CANCELLED");
        assert_eq!(SyncErrorCode::RemoteError.to_value(), "REMOTE_ERROR");
        assert_eq!(
            SyncErrorCode::CredentialsUnreadable.to_value(),
            "CREDENTIALS_UNREADABLE"
        );
        assert_eq!(SyncErrorCode::MaxAttempts.to_value(), "MAX_ATTEMPTS");
        assert_eq!(DeliveryStatus::Exhausted.to_value(), "EXHAUSTED");
        assert_eq!(WriteOperation::Create.to_value(), "CREATE");
        assert_eq!(BulkStatus::PartiallyFailed.to_value(), "PARTIALLY_FAILED");
        assert_eq!(
            EventType::WebhookEndpointDisabled.to_value(),
            "webhook_endpoint.disabled"
        );
    }

    #[test]
    fn unknown_texts_are_errors_that_name_their_column() {
        let err = ConnectionStatus::try_from_value(&"ASLEEP".to_owned()).unwrap_err();
        let DbErr::Type(message) = err else {
            panic!("a type error")
        };
        assert!(message.contains("ConnectionStatus"), "{message}");
        assert_eq!(stored_in("ConnectionStatus"), Some("connections.status"));
    }
}
