//! `demo_remotes`: the demo system's simulated remote of one connection, its counters shared
//! by every process on the database (the records written to it are `demo_remote_records`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "demo_remotes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub connection_id: Uuid,
    /// Sync sessions begun: the remote's generation is one less (none before the second).
    pub sessions: i64,
    /// Requests answered (a rate-limited or flaky remote fails some of them by count).
    pub requests: i64,
    /// The last write sequence number handed out: keys of created records come from it.
    pub writes: i64,
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
