//! `connections`: one remote system of one customer, with its token hash and its
//! encrypted credentials.

use sea_orm::entity::prelude::*;

pub use crate::enums::{ConnectionStatus, Deployment};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "connections")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub account_id: Uuid,
    pub customer_id: Uuid,
    pub system_key: String,
    pub deployment: Deployment,
    pub label: Option<String>,
    pub status: ConnectionStatus,
    pub status_reason: Option<String>,
    pub credit_cost: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub disconnected_at: Option<DateTimeUtc>,
    pub last_checked_at: Option<DateTimeUtc>,
    /// When the health check should probe next; null once disconnected.
    pub next_check_at: Option<DateTimeUtc>,
    /// SHA-256 of the connection token; null once disconnected.
    #[sea_orm(unique)]
    pub token_hash: Option<String>,
    pub token_prefix: String,
    pub sync_interval_minutes: Option<i32>,
    /// Event types (wire names) this connection sends to webhooks.
    pub webhook_event_types: Json,
    pub metadata: Option<Json>,
    /// Sealed by `millwright::crypto` (AES-256-GCM: a header naming the key, the nonce, the
    /// ciphertext; without the header if written before key ids); null once disconnected.
    pub credentials: Option<Vec<u8>>,
    /// When the records of this disconnected connection were deleted (after the grace
    /// period); null before.
    pub purged_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::account::Entity",
        from = "Column::AccountId",
        to = "super::account::Column::Id"
    )]
    Account,
    #[sea_orm(
        belongs_to = "super::customer::Entity",
        from = "Column::CustomerId",
        to = "super::customer::Column::Id"
    )]
    Customer,
    #[sea_orm(has_many = "super::credit_ledger::Entity")]
    CreditLedger,
    #[sea_orm(has_many = "super::event::Entity")]
    Event,
    #[sea_orm(has_many = "super::record::Entity")]
    Record,
    #[sea_orm(has_many = "super::sync_cursor::Entity")]
    SyncCursor,
    #[sea_orm(has_many = "super::sync_run::Entity")]
    SyncRun,
}

impl Related<super::account::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Account.def()
    }
}

impl Related<super::customer::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Customer.def()
    }
}

impl Related<super::credit_ledger::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::CreditLedger.def()
    }
}

impl Related<super::event::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Event.def()
    }
}

impl Related<super::record::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Record.def()
    }
}

impl Related<super::sync_cursor::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::SyncCursor.def()
    }
}

impl Related<super::sync_run::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::SyncRun.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
