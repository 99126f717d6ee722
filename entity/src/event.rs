//! `events`: the event log, ordered by a gapless position assigned at commit order.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub position: i64,
    #[sea_orm(unique)]
    pub id: Uuid,
    pub account_id: Uuid,
    pub customer_id: Option<Uuid>,
    pub connection_id: Option<Uuid>,
    /// The wire name, e.g. `connection.created`.
    pub event_type: String,
    pub data: Json,
    pub occurred_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
