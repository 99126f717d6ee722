//! `sync_cursors`: per connection and entity, the incremental modification mark and the
//! position of the pass in progress, saved together with the page they follow.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sync_cursors")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub connection_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub entity: String,
    /// Where the next incremental read starts (the remote's modification mark).
    pub mark: Option<String>,
    /// The pass in progress (records it has seen carry this id).
    pub pass_id: Option<Uuid>,
    pub pass_kind: Option<String>,
    /// Continuation token of the next page of the pass.
    pub pass_cursor: Option<String>,
    pub pass_done: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
