//! `bulk_operations`: one bulk write to one connection's remote system, a durable job with a
//! lease; its records and their outcomes are in `bulk_records`.

use sea_orm::entity::prelude::*;

pub use crate::enums::{BulkStatus, EntityType, WriteOperation};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "bulk_operations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub account_id: Uuid,
    pub connection_id: Uuid,
    pub entity: EntityType,
    pub operation: WriteOperation,
    pub status: BulkStatus,
    pub total: i32,
    /// Records with an outcome: always the first `processed` records, in index order.
    pub processed: i32,
    pub succeeded: i32,
    pub failed: i32,
    pub batch_size: i32,
    pub delay_between_batches_ms: i32,
    pub idempotency_key: Option<String>,
    /// SHA-256 of the request, to tell a retry from another request under the same key.
    pub request_hash: String,
    pub created_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    /// Not to be claimed before this time (a rate limit or a failed attempt's backoff).
    pub run_after: DateTimeUtc,
    pub locked_by: Option<String>,
    pub locked_until: Option<DateTimeUtc>,
    pub attempts: i32,
    pub cancel_requested: bool,
    /// Set while the batch from record `processed` on is being sent: when sending began. A
    /// worker that finds it set (after a crash) knows those records may have reached the remote.
    pub sending_since: Option<DateTimeUtc>,
    /// Remote 429 answers waited out.
    pub rate_limited: i64,
    /// Why it ended `FAILED` before its end.
    pub error_message: Option<String>,
    /// The flow whose `bulkWrite` action queued it; null for a `bulkWrite` request.
    pub flow_id: Option<Uuid>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::connection::Entity",
        from = "Column::ConnectionId",
        to = "super::connection::Column::Id"
    )]
    Connection,
    #[sea_orm(has_many = "super::bulk_record::Entity")]
    Records,
}

impl Related<super::connection::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Connection.def()
    }
}

impl Related<super::bulk_record::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Records.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
