//! The GraphQL API: schema assembly and context helpers. Resolvers are thin: they parse ids
//! and arguments, call a domain function, and wrap what it returns.

mod account;
mod catalog;
mod connection;
mod customer;
mod errors;
mod event;
mod loaders;
mod mutation;
mod node;
mod query;
mod records;
mod sync;
mod webhooks;

use crate::events::feed::EventFeed;
use async_graphql::{Context, Schema, SchemaBuilder};

pub use errors::{classify, normalize};
pub use loaders::Loaders;

use std::sync::Arc;

use crate::{
    auth::{AuthCache, Principal},
    config::Config,
    connectors::http::Outbound,
    crypto::Cipher,
    db::Db,
    error::AppError,
};

pub type AppSchema = Schema<query::Query, mutation::Mutation, event::Subscription>;

fn builder() -> SchemaBuilder<query::Query, mutation::Mutation, event::Subscription> {
    let builder = Schema::build(
        query::Query::default(),
        mutation::Mutation::default(),
        event::Subscription,
    );
    describe_library_types(builder)
}

/// Descriptions for the types async-graphql defines (scalars and Relay connections), which
/// cannot carry doc comments of ours.
fn describe_library_types(
    builder: SchemaBuilder<query::Query, mutation::Mutation, event::Subscription>,
) -> SchemaBuilder<query::Query, mutation::Mutation, event::Subscription> {
    use async_graphql::{Json, connection::Connection};
    type Page<T> = Connection<String, T>;
    builder
        .override_output_type_description::<chrono::DateTime<chrono::Utc>>(
            "An instant as an RFC 3339 string; the server answers in UTC\n(`2026-12-05T07:30:00+00:00`) and accepts any offset.",
        )
        .override_output_type_description::<Json<serde_json::Value>>(
            "Any JSON value: an object, array, string, number, boolean or null.",
        )
        .override_output_type_description::<Page<connection::Connection>>(
            "A page of connections.",
        )
        .override_output_type_description::<Page<connection::CreditLedgerEntry>>(
            "A page of credit ledger entries.",
        )
        .override_output_type_description::<Page<customer::Customer>>("A page of customers.")
        .override_output_type_description::<Page<event::Event>>("A page of events.")
        .override_output_type_description::<Page<sync::SyncRun>>("A page of sync runs.")
        .override_output_type_description::<Page<webhooks::WebhookEndpoint>>(
            "A page of webhook endpoints.",
        )
        .override_output_type_description::<Page<webhooks::WebhookDelivery>>(
            "A page of webhook deliveries.",
        )
        .override_output_type_description::<Page<records::UnifiedRecord>>(
            "A page of unified records of any entity type.",
        )
        .override_output_type_description::<Page<records::Asset>>("A page of assets.")
        .override_output_type_description::<Page<records::WorkOrder>>("A page of work orders.")
        .override_output_type_description::<Page<records::Site>>("A page of sites.")
        .override_output_type_description::<Page<records::Location>>("A page of locations.")
        .override_output_type_description::<Page<records::Part>>("A page of parts.")
        .override_output_type_description::<Page<records::PurchaseOrder>>(
            "A page of purchase orders.",
        )
        .override_output_type_description::<Page<records::Vendor>>("A page of vendors.")
        .override_output_type_description::<Page<records::User>>("A page of users.")
}

#[expect(
    clippy::too_many_arguments,
    reason = "one shared service each; the schema is built once, in `run`"
)]
pub fn build_schema(
    db: Db,
    auth_cache: Arc<AuthCache>,
    cipher: Cipher,
    outbound: Outbound,
    feed: EventFeed,
    sync_wake: Arc<tokio::sync::Notify>,
    webhook_wake: Arc<tokio::sync::Notify>,
    config: &Config,
) -> AppSchema {
    builder()
        .data(db)
        .data(auth_cache)
        .data(cipher)
        .data(outbound)
        .data(feed)
        .data(SyncWake(sync_wake))
        .data(WebhookWake(webhook_wake))
        .data(config.clone())
        .limit_depth(config.max_query_depth)
        .limit_complexity(config.max_query_complexity)
        .limit_recursive_depth(32)
        .limit_directives(16)
        .finish()
}

/// The SDL that `millwright schema` prints and `schema.graphql` holds.
pub fn sdl() -> String {
    builder().finish().sdl()
}

pub(crate) fn db<'a>(ctx: &Context<'a>) -> &'a Db {
    ctx.data_unchecked::<Db>()
}

pub(crate) fn principal<'a>(ctx: &Context<'a>) -> &'a Principal {
    ctx.data_opt::<Principal>().unwrap_or(&Principal::Anonymous)
}

pub(crate) fn cipher<'a>(ctx: &Context<'a>) -> &'a Cipher {
    ctx.data_unchecked::<Cipher>()
}

pub(crate) fn outbound<'a>(ctx: &Context<'a>) -> &'a Outbound {
    ctx.data_unchecked::<Outbound>()
}

pub(crate) fn config<'a>(ctx: &Context<'a>) -> &'a Config {
    ctx.data_unchecked::<Config>()
}

/// The request's DataLoaders; present for every caller that has an account.
pub(crate) fn loaders<'a>(ctx: &Context<'a>) -> Result<&'a Loaders, AppError> {
    principal(ctx).scope()?;
    ctx.data::<Loaders>()
        .map_err(|_| AppError::internal(anyhow::anyhow!("request without loaders")))
}

pub(crate) fn account_id(ctx: &Context<'_>) -> Result<uuid::Uuid, AppError> {
    principal(ctx).account_id()
}

/// Called after an API key was revoked: no cached copy may outlive it.
pub(crate) fn forget_api_key(ctx: &Context<'_>, key: uuid::Uuid) {
    ctx.data_unchecked::<Arc<AuthCache>>()
        .forget(|p| matches!(p, Principal::Account { api_key_id, .. } if *api_key_id == key));
}

/// Called after a connection's token was replaced or the connection disconnected.
pub(crate) fn forget_connection_token(ctx: &Context<'_>, connection: uuid::Uuid) {
    ctx.data_unchecked::<Arc<AuthCache>>().forget(|p| {
        matches!(p, Principal::Connection { connection_id, .. } if *connection_id == connection)
    });
}

/// Wakes the sync workers when a run is queued.
pub(crate) struct SyncWake(pub Arc<tokio::sync::Notify>);

pub(crate) fn wake_sync_workers(ctx: &Context<'_>) {
    ctx.data_unchecked::<SyncWake>().0.notify_waiters();
}

/// Wakes the webhook delivery workers when a delivery is queued.
pub(crate) struct WebhookWake(pub Arc<tokio::sync::Notify>);

pub(crate) fn wake_webhook_workers(ctx: &Context<'_>) {
    ctx.data_unchecked::<WebhookWake>().0.notify_one();
}
