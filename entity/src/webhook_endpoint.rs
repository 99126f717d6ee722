//! `webhook_endpoints`: where an account's events are delivered, with its signing secret(s).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_endpoints")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub account_id: Uuid,
    pub url: String,
    pub description: Option<String>,
    /// Event types (wire names) it wants; empty = all.
    pub event_types: Json,
    /// Of `flow.triggered` events, only those of these flows (a JSON array of their
    /// `flw_…` ids, as the events' `data.flow_id` holds them); null: every flow's.
    pub flow_ids: Option<Json>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    /// The signing secret, encrypted.
    pub secret: Vec<u8>,
    /// The secret before the last rotation, encrypted; still signs until `previous_secret_until`.
    pub previous_secret: Option<Vec<u8>>,
    pub previous_secret_until: Option<DateTimeUtc>,
    /// Start of the current streak of failed attempts; null after a success.
    pub failing_since: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::account::Entity",
        from = "Column::AccountId",
        to = "super::account::Column::Id"
    )]
    Account,
    #[sea_orm(has_many = "super::webhook_delivery::Entity")]
    WebhookDelivery,
}

impl Related<super::account::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Account.def()
    }
}

impl Related<super::webhook_delivery::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::WebhookDelivery.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
