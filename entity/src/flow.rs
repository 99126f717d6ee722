//! `flows`: an account's conditional automations over record changes: a trigger (entity,
//! change kinds, optionally systems and connections), a CEL condition, actions, and the
//! counters of what they did.

use sea_orm::entity::prelude::*;

pub use crate::enums::EntityType;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "flows")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub account_id: Uuid,
    /// Unique per account.
    pub name: String,
    pub enabled: bool,
    /// The entity type whose changes trigger it.
    pub entity: EntityType,
    /// The change kinds that trigger it: a JSON array of `CREATED`, `UPDATED`, `DELETED`.
    pub changes: Json,
    /// Only connections to these systems (a JSON array of keys); null: every system.
    pub system_keys: Option<Json>,
    /// Only these connections (a JSON array of UUIDs); null: every connection.
    pub connection_ids: Option<Json>,
    /// The CEL condition's source.
    pub condition: String,
    /// The actions, as `flows::Action` serializes them.
    pub actions: Json,
    pub evaluations: i64,
    pub matches: i64,
    pub errors: i64,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::account::Entity",
        from = "Column::AccountId",
        to = "super::account::Column::Id"
    )]
    Account,
}

impl ActiveModelBehavior for ActiveModel {}
