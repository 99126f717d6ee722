//! `portal_sessions`: short-lived, customer-scoped browser tokens (`mwp_…`), stored only as a
//! SHA-256 hash.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "portal_sessions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub account_id: Uuid,
    pub customer_id: Uuid,
    #[sea_orm(unique)]
    pub token_hash: String,
    /// The first characters of the token, for people to recognise it.
    pub token_prefix: String,
    /// The systems the session may see and connect (a JSON array of keys); null: all.
    pub allowed_systems: Option<Json>,
    /// How many connections that are not disconnected its customer may have for a connect
    /// through the session to go ahead.
    pub max_connections: i32,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    pub revoked_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::account::Entity",
        from = "Column::AccountId",
        to = "super::account::Column::Id"
    )]
    Account,
    #[sea_orm(
        belongs_to = "super::customer::Entity",
        from = "Column::CustomerId",
        to = "super::customer::Column::Id"
    )]
    Customer,
}

impl Related<super::customer::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Customer.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
