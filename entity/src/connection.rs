//! `connections`: one remote system of one customer, with its token hash and its
//! encrypted credentials.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "connections")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub account_id: Uuid,
    pub customer_id: Uuid,
    pub system_key: String,
    /// `CLOUD` or `ON_PREMISES`.
    pub deployment: String,
    pub label: Option<String>,
    /// `PENDING`, `ONLINE`, `OFFLINE`, `AUTH_REQUIRED` or `DISCONNECTED`.
    pub status: String,
    pub status_reason: Option<String>,
    pub credit_cost: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub disconnected_at: Option<DateTimeUtc>,
    pub last_checked_at: Option<DateTimeUtc>,
    /// When the health check should probe next; null once disconnected.
    pub next_check_at: Option<DateTimeUtc>,
    /// SHA-256 of the connection token; null once disconnected.
    #[sea_orm(unique)]
    pub token_hash: Option<String>,
    pub token_prefix: String,
    pub sync_interval_minutes: Option<i32>,
    /// Event types (wire names) this connection sends to webhooks.
    pub webhook_event_types: Json,
    pub metadata: Option<Json>,
    /// AES-256-GCM: nonce followed by ciphertext; null once disconnected.
    pub credentials: Option<Vec<u8>>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
