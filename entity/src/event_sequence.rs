//! `event_sequence`: one row. On SQLite it holds the last event position (taken under the
//! single write lock); on PostgreSQL positions come from the sequence `event_positions`.
//! On both it holds the last event retention deleted (`pruned_txid`, `pruned_position`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "event_sequence")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i32,
    pub last_position: i64,
    pub pruned_txid: i64,
    pub pruned_position: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
