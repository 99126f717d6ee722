//! `sync_runs`: one sync of one connection, a durable job with a lease.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sync_runs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub account_id: Uuid,
    pub connection_id: Uuid,
    /// `FULL` or `INCREMENTAL`.
    pub kind: String,
    /// `MANUAL`, `SCHEDULE` or `CONNECT`.
    pub trigger: String,
    /// `QUEUED`, `RUNNING`, `SUCCEEDED`, `FAILED` or `CANCELLED`.
    pub status: String,
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
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
