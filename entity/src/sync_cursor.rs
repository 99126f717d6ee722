//! `sync_cursors`: per connection and entity, the incremental modification mark and the
//! position of the pass in progress, saved together with the page they follow.

use sea_orm::entity::prelude::*;

pub use crate::enums::{EntityType, SyncKind};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sync_cursors")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub connection_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub entity: EntityType,
    /// Where the next incremental read starts (the remote's modification mark).
    pub mark: Option<String>,
    /// The pass in progress (records it has seen carry this id).
    pub pass_id: Option<Uuid>,
    pub pass_kind: Option<SyncKind>,
    /// Continuation token of the next page of the pass.
    pub pass_cursor: Option<String>,
    pub pass_done: bool,
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
