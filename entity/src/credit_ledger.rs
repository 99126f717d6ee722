//! `credit_ledger`: every movement of an account's credit pool.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credit_ledger")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub account_id: Uuid,
    /// `GRANT`, `CONNECT`, `DISCONNECT` or `ADJUSTMENT`.
    pub kind: String,
    /// Change of the available credits: negative when credits are consumed.
    pub amount: i64,
    /// Available credits after this movement.
    pub balance_after: i64,
    pub connection_id: Option<Uuid>,
    pub note: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
