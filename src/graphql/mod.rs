//! The GraphQL API: schema assembly and context helpers. Resolvers are thin: they parse ids
//! and arguments, call a domain function, and wrap what it returns.

mod account;
pub mod admission;
mod bulk;
mod catalog;
mod connection;
mod cost;
mod customer;
pub mod enums;
mod errors;
mod event;
mod flows;
mod loaders;
mod mutation;
mod node;
mod pagination;
mod portal;
mod query;
mod records;
mod sync;
mod webhooks;

use crate::events::feed::EventFeed;
use async_graphql::{Context, Schema, SchemaBuilder};

pub use cost::{Price, price};
pub use errors::{classify, normalize, request_error};
pub use loaders::Loaders;

use crate::{
    auth::Principal, config::Config, connectors::http::Outbound, crypto::Cipher, db::Db,
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
        .override_output_type_description::<Page<bulk::BulkOperation>>(
            "A page of bulk operations.",
        )
        .override_output_type_description::<Page<bulk::BulkRecordResult>>(
            "A page of a bulk operation's record outcomes.",
        )
        .override_output_type_description::<Page<flows::Flow>>("A page of flows.")
        .override_output_type_description::<Page<portal::PortalSession>>(
            "A page of portal sessions.",
        )
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

/// The schema with the services resolvers reach through their context.
pub fn build_schema(
    db: Db,
    cipher: Cipher,
    outbound: Outbound,
    feed: EventFeed,
    config: &Config,
) -> AppSchema {
    cost::prepare();
    builder()
        .data(db)
        .data(cipher)
        .data(outbound)
        .data(feed)
        .data(config.clone())
        .limit_depth(config.http.max_query_depth)
        .limit_complexity(config.http.max_query_complexity)
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
    principal(ctx).connections_scope()?;
    ctx.data::<Loaders>()
        .map_err(|_| AppError::internal(anyhow::anyhow!("request without loaders")))
}

/// Runs `work` (a subscription's setup, or what one of its events needs before it is sent)
/// within the request timeout.
pub(crate) async fn within<T>(
    limit: std::time::Duration,
    work: impl Future<Output = Result<T, AppError>>,
) -> Result<T, AppError> {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err(AppError::timeout(limit)))
}

pub(crate) fn account_id(ctx: &Context<'_>) -> Result<uuid::Uuid, AppError> {
    principal(ctx).account_id()
}
