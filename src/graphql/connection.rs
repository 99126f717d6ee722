//! Connections and the credit ledger as GraphQL types.

use async_graphql::{Context, ID, InputObject, Json, MaybeUndefined, Object, SimpleObject};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{
    catalog::System,
    customer::Customer,
    enums::{self, ConnectionStatus, CreditEntryKind, Deployment, EventType},
};
use crate::{
    connections,
    error::{AppError, AppResult},
    ids,
    pagination::PageRequest,
    sync,
};
use entity::{connection, credit_ledger};

pub struct Connection(pub connection::Model);

#[Object]
impl Connection {
    pub async fn id(&self) -> ID {
        ID(ids::encode(ids::Kind::Connection, self.0.id))
    }
    async fn customer(&self, ctx: &Context<'_>) -> AppResult<Customer> {
        let loaders = super::loaders(ctx)?;
        let customer = loaders.customers.load_one(self.0.customer_id).await?;
        customer.map(Customer).ok_or(AppError::NotFound("customer"))
    }
    async fn system(&self) -> AppResult<System> {
        connections::system(&self.0).map(System)
    }
    async fn deployment(&self) -> Deployment {
        self.0.deployment.into()
    }
    async fn label(&self) -> Option<&str> {
        self.0.label.as_deref()
    }
    async fn status(&self) -> ConnectionStatus {
        self.0.status.into()
    }
    /// Why the connection is not ONLINE, as the remote or the health check reported it.
    async fn status_reason(&self) -> Option<&str> {
        self.0.status_reason.as_deref()
    }
    /// Credits this connection holds while it exists.
    async fn credit_cost(&self) -> i32 {
        self.0.credit_cost
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn disconnected_at(&self) -> Option<DateTime<Utc>> {
        self.0.disconnected_at
    }
    async fn last_checked_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_checked_at
    }
    /// The first characters of the connection token; never the token itself.
    async fn token_prefix(&self) -> &str {
        &self.0.token_prefix
    }
    /// Minutes between scheduled syncs; null for manual syncs only.
    async fn sync_interval_minutes(&self) -> Option<i32> {
        self.0.sync_interval_minutes
    }
    /// The event types this connection sends to webhooks.
    async fn webhook_event_types(&self) -> AppResult<Vec<EventType>> {
        Ok(enums::all(&connections::webhook_event_types(&self.0)?))
    }
    async fn metadata(&self) -> Option<Json<Value>> {
        self.0.metadata.clone().map(Json)
    }
    /// The most recent sync run.
    async fn last_sync_run(&self, ctx: &Context<'_>) -> AppResult<Option<super::sync::SyncRun>> {
        Ok(sync::last_run(super::db(ctx).conn(), self.0.id)
            .await?
            .map(super::sync::SyncRun))
    }
    /// Sync runs, oldest first.
    async fn sync_runs(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> AppResult<async_graphql::connection::Connection<String, super::sync::SyncRun>> {
        let page = PageRequest::from_args(first, after.as_deref(), None, None)?;
        let page = sync::list(super::db(ctx).conn(), self.0.id, page).await?;
        Ok(super::customer::relay(page, |r| r.id, super::sync::SyncRun))
    }
}

#[derive(InputObject)]
pub struct ConnectInput {
    pub customer_id: ID,
    pub system_key: String,
    #[graphql(default_with = "Some(Deployment::Cloud)")]
    pub deployment: Option<Deployment>,
    pub label: Option<String>,
    pub credentials: Json<Value>,
    pub sync_interval_minutes: Option<i32>,
    /// Defaults to every event type.
    pub webhook_event_types: Option<Vec<EventType>>,
    pub metadata: Option<Json<Value>>,
    /// Probe the remote first; on failure CONNECTION_FAILED and nothing is consumed.
    #[graphql(default_with = "Some(true)")]
    pub validate: Option<bool>,
}

#[derive(InputObject)]
pub struct UpdateConnectionInput {
    pub id: ID,
    pub label: MaybeUndefined<String>,
    pub sync_interval_minutes: MaybeUndefined<i32>,
    pub webhook_event_types: Option<Vec<EventType>>,
    pub metadata: MaybeUndefined<Json<Value>>,
}

#[derive(SimpleObject)]
pub struct ConnectPayload {
    pub connection: Connection,
    /// The connection token (`mwc_…`), shown once.
    pub token: String,
}

#[derive(SimpleObject)]
pub struct RotateConnectionTokenPayload {
    pub connection: Connection,
    /// The new connection token, shown once; the old one no longer works.
    pub token: String,
}

pub struct CreditLedgerEntry(pub credit_ledger::Model);

#[Object]
impl CreditLedgerEntry {
    pub async fn id(&self) -> ID {
        ID(ids::encode(ids::Kind::CreditEntry, self.0.id))
    }
    async fn kind(&self) -> CreditEntryKind {
        self.0.kind.into()
    }
    /// Change of the available credits: negative when credits are consumed.
    async fn amount(&self) -> i32 {
        clamp(self.0.amount)
    }
    /// Available credits after this movement.
    async fn balance_after(&self) -> i32 {
        clamp(self.0.balance_after)
    }
    async fn connection(&self, ctx: &Context<'_>) -> AppResult<Option<Connection>> {
        let Some(id) = self.0.connection_id else {
            return Ok(None);
        };
        let scope = super::principal(ctx).scope()?;
        match connections::find(super::db(ctx).conn(), scope, id).await {
            Ok(model) => Ok(Some(Connection(model))),
            Err(AppError::NotFound(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }
    async fn note(&self) -> Option<&str> {
        self.0.note.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

fn clamp(value: i64) -> i32 {
    value.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// `MaybeUndefined` as "leave" (None), "clear" (Some(None)) or "set" (Some(Some)).
pub fn change<T>(value: MaybeUndefined<T>) -> Option<Option<T>> {
    match value {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(v) => Some(Some(v)),
    }
}
