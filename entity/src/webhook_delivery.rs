//! `webhook_deliveries`: one event to one endpoint; a durable job with a lease.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_deliveries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub account_id: Uuid,
    pub event_position: i64,
    /// `PENDING`, `SUCCEEDED`, `FAILED` or `EXHAUSTED`.
    pub status: String,
    pub attempt_count: i32,
    pub next_attempt_at: Option<DateTimeUtc>,
    pub locked_by: Option<String>,
    pub locked_until: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
