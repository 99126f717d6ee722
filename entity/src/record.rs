//! `records`: the unified record store, one row per (connection, entity, remote key).

use sea_orm::entity::prelude::*;

pub use crate::enums::EntityType;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "records")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub connection_id: Uuid,
    pub entity: EntityType,
    pub key: String,
    /// The unified fields.
    pub data: Json,
    /// The record as the remote sent it.
    pub remote_data: Option<Json>,
    /// Hash of the remote record: an unchanged record is not rewritten.
    pub content_hash: String,
    pub remote_created_at: Option<DateTimeUtc>,
    pub remote_updated_at: Option<DateTimeUtc>,
    pub first_seen_at: DateTimeUtc,
    pub modified_at: DateTimeUtc,
    pub deleted_at: Option<DateTimeUtc>,
    /// The full pass that last saw this record (deletion detection).
    pub seen_pass: Option<Uuid>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::connection::Entity",
        from = "Column::ConnectionId",
        to = "super::connection::Column::Id"
    )]
    Connection,
}

impl Related<super::connection::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Connection.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
