//! The GraphQL API: schema assembly and context helpers. Resolvers are thin: they parse ids
//! and arguments, call a domain function, and wrap what it returns.

mod account;
mod catalog;
mod connection;
mod customer;
pub mod enums;
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

use crate::{
    auth::Principal, config::Config, connectors::http::Outbound, crypto::Cipher, db::Db,
    error::AppError,
};

pub type AppSchema = Schema<query::Query, mutation::Mutation, event::Subscription>;

fn builder() -> SchemaBuilder<query::Query, mutation::Mutation, event::Subscription> {
    Schema::build(
        query::Query::default(),
        mutation::Mutation::default(),
        event::Subscription,
    )
}

/// The schema with the services resolvers reach through their context.
pub fn build_schema(
    db: Db,
    cipher: Cipher,
    outbound: Outbound,
    feed: EventFeed,
    config: &Config,
) -> AppSchema {
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
    principal(ctx).scope()?;
    ctx.data::<Loaders>()
        .map_err(|_| AppError::internal(anyhow::anyhow!("request without loaders")))
}

pub(crate) fn account_id(ctx: &Context<'_>) -> Result<uuid::Uuid, AppError> {
    principal(ctx).account_id()
}
