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

/// One customer's connected system: its own token and encrypted credentials, and the
/// credits it holds while it exists.
#[Object]
impl Connection {
    /// The connection's id (`con_…`).
    pub async fn id(&self) -> ID {
        ID(ids::encode(ids::Kind::Connection, self.0.id))
    }
    /// The customer whose system this is.
    async fn customer(&self, ctx: &Context<'_>) -> AppResult<Customer> {
        let loaders = super::loaders(ctx)?;
        let customer = loaders.customers.load_one(self.0.customer_id).await?;
        customer.map(Customer).ok_or(AppError::NotFound("customer"))
    }
    /// The kind of system connected.
    async fn system(&self) -> AppResult<System> {
        connections::system(&self.0).map(System)
    }
    /// How the connected system is deployed.
    async fn deployment(&self) -> Deployment {
        self.0.deployment.into()
    }
    /// Your label for the connection.
    async fn label(&self) -> Option<&str> {
        self.0.label.as_deref()
    }
    /// Where the connection stands.
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
    /// When the system was connected.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When it was disconnected; null while it is live.
    async fn disconnected_at(&self) -> Option<DateTime<Utc>> {
        self.0.disconnected_at
    }
    /// When the remote was last probed (by `connect`, `updateConnectionCredentials`,
    /// `checkConnection` or the health check); null if never.
    async fn last_checked_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_checked_at
    }
    /// The first characters of the connection token; never the token itself (not for a
    /// portal session).
    async fn token_prefix(&self, ctx: &Context<'_>) -> AppResult<&str> {
        super::principal(ctx).deny_portal()?;
        Ok(&self.0.token_prefix)
    }
    /// Minutes between scheduled syncs; null for manual syncs only.
    async fn sync_interval_minutes(&self) -> Option<i32> {
        self.0.sync_interval_minutes
    }
    /// The event types this connection sends to webhooks (not for a portal session).
    async fn webhook_event_types(&self, ctx: &Context<'_>) -> AppResult<Vec<EventType>> {
        super::principal(ctx).deny_portal()?;
        Ok(enums::all(&connections::webhook_event_types(&self.0)?))
    }
    /// Your own JSON value for this connection, stored as given (not for a portal session).
    async fn metadata(&self, ctx: &Context<'_>) -> AppResult<Option<Json<Value>>> {
        super::principal(ctx).deny_portal()?;
        Ok(self.0.metadata.clone().map(Json))
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
        #[graphql(desc = "Page size, 0 to 100; 50 when omitted.")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> AppResult<async_graphql::connection::Connection<String, super::sync::SyncRun>> {
        let page = PageRequest::from_args(first, after.as_deref(), None, None)?;
        let page = sync::list(super::db(ctx).conn(), self.0.id, page).await?;
        Ok(super::pagination::relay(
            page,
            |r| r.id,
            super::sync::SyncRun,
        ))
    }
}

/// What `connect` needs to connect a customer's system.
#[derive(InputObject)]
pub struct ConnectInput {
    /// The customer whose system this is.
    pub customer_id: ID,
    /// The system's key from `systems` (`maintainx`, `ibm_maximo`, `sap_s4hana`, `sap_ecc`,
    /// `demo`).
    pub system_key: String,
    /// How the system is deployed; it must be one of the system's `deployments`.
    #[graphql(default_with = "Some(Deployment::Cloud)")]
    pub deployment: Option<Deployment>,
    /// Your label for the connection (at most 200 characters).
    pub label: Option<String>,
    /// The system's credentials as a JSON object, keyed as its `credentialFields` say.
    pub credentials: Json<Value>,
    /// Minutes between scheduled incremental syncs (1 to 43200); omitted or null for
    /// manual syncs only.
    pub sync_interval_minutes: Option<i32>,
    /// Defaults to every event type; at most 100 entries, each counted once.
    #[graphql(validator(max_items = 100))]
    pub webhook_event_types: Option<Vec<EventType>>,
    /// Your own JSON value for this connection (at most 16 KiB of JSON).
    pub metadata: Option<Json<Value>>,
    /// Probe the remote first; on failure CONNECTION_FAILED and nothing is consumed.
    #[graphql(default_with = "Some(true)")]
    pub validate: Option<bool>,
}

/// Changes to a connection; a field left out keeps its value, `null` clears it.
#[derive(InputObject)]
pub struct UpdateConnectionInput {
    /// The connection to change.
    pub id: ID,
    /// A new label; `null` clears it.
    pub label: MaybeUndefined<String>,
    /// New minutes between scheduled syncs; `null` stops scheduled syncs.
    pub sync_interval_minutes: MaybeUndefined<i32>,
    /// The event types this connection sends to webhooks; an empty list sends none; at most
    /// 100 entries, each counted once.
    #[graphql(validator(max_items = 100))]
    pub webhook_event_types: Option<Vec<EventType>>,
    /// A new metadata value; `null` clears it.
    pub metadata: MaybeUndefined<Json<Value>>,
}

/// The result of `connect`.
#[derive(SimpleObject)]
pub struct ConnectPayload {
    /// The new connection.
    pub connection: Connection,
    /// The connection token (`mwc_…`), shown once; null when connected with a portal
    /// session (a browser never sees it).
    pub token: Option<String>,
}

/// The result of `rotateConnectionToken`.
#[derive(SimpleObject)]
pub struct RotateConnectionTokenPayload {
    /// The connection, with its new `tokenPrefix`.
    pub connection: Connection,
    /// The new connection token, shown once; the old one no longer works.
    pub token: String,
}

pub struct CreditLedgerEntry(pub credit_ledger::Model);

/// One movement of the account's credit pool.
#[Object]
impl CreditLedgerEntry {
    /// The entry's id (`crd_…`).
    pub async fn id(&self) -> ID {
        ID(ids::encode(ids::Kind::CreditEntry, self.0.id))
    }
    /// Why the pool moved.
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
    /// The connection that took or returned the credits; null for grants.
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
    /// The note given with a grant.
    async fn note(&self) -> Option<&str> {
        self.0.note.as_deref()
    }
    /// When the movement happened.
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
