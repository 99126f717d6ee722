//! `demo_remote_records`: a record written to the demo system's simulated remote, by
//! connection, entity and key; later reads of that remote show it instead of the generated one.

use sea_orm::entity::prelude::*;

pub use crate::enums::EntityType;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "demo_remote_records")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub connection_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub entity: EntityType,
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// Created through a write (`AST-W000001`), rather than one of the generated records.
    pub created: bool,
    /// The number in the key: a generated record's index, or a created record's number;
    /// `None` for a key of neither form (stored, never read).
    pub position: Option<i64>,
    /// The record as written; `None` once deleted.
    pub data: Option<Json>,
    /// The write that left the record so (`demo_remotes.writes` then).
    pub write_sequence: i64,
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
