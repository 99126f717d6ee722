//! `sync_runs`: one sync of one connection, a durable job with a lease.

use sea_orm::entity::prelude::*;

pub use crate::enums::{SyncErrorCode, SyncKind, SyncStatus, SyncTrigger};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sync_runs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub account_id: Uuid,
    pub connection_id: Uuid,
    pub kind: SyncKind,
    pub trigger: SyncTrigger,
    pub status: SyncStatus,
    pub queued_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    /// Not to be started before this time.
    pub run_after: DateTimeUtc,
    /// The worker holding the lease, until `locked_until`.
    pub locked_by: Option<String>,
    pub locked_until: Option<DateTimeUtc>,
    pub attempts: i32,
    pub cancel_requested: bool,
    pub records_added: i64,
    pub records_updated: i64,
    pub records_deleted: i64,
    /// Per-entity counts: `{"ASSET": {"added": 1, …}, …}`.
    pub stats: Json,
    pub error_code: Option<SyncErrorCode>,
    pub error_message: Option<String>,
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
        belongs_to = "super::connection::Entity",
        from = "Column::ConnectionId",
        to = "super::connection::Column::Id"
    )]
    Connection,
}

impl Related<super::account::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Account.def()
    }
}

impl Related<super::connection::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Connection.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
