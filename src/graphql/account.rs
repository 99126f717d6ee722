//! Accounts, API keys and the credit balance as GraphQL types.

use async_graphql::{Context, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

use crate::{
    accounts,
    config::Config,
    error::AppResult,
    ids,
    limits::RateLimit,
    pagination::{MAX_PAGE_SIZE, PageRequest},
};
use entity::{account, api_key, connection};

pub struct Account(pub account::Model);

/// A vendor's account: it owns the API keys, customers, connections, webhook endpoints and
/// the credit pool.
#[Object]
impl Account {
    /// The account's id (`acc_…`).
    pub async fn id(&self) -> ID {
        ID(ids::encode(ids::Kind::Account, self.0.id))
    }
    /// The account's name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// When the account was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// The credit pool: total, held by connections, available (not for a connection token).
    async fn credits(&self, ctx: &Context<'_>) -> AppResult<CreditBalance> {
        super::account_id(ctx)?;
        Ok(CreditBalance::of(&self.0))
    }
    /// The account's API keys, revoked ones included, oldest first: at most `first`, after
    /// the key `after`.
    async fn api_keys(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "How many keys, 0 to 100.", default = 100)] first: Option<i32>,
        #[graphql(desc = "The `id` of the last key of the previous page: the keys after it.")]
        after: Option<ID>,
    ) -> AppResult<Vec<ApiKey>> {
        super::account_id(ctx)?;
        let limit =
            PageRequest::from_args(Some(first.unwrap_or(MAX_PAGE_SIZE)), None, None, None)?.limit;
        let after = after
            .map(|id| ids::decode(ids::Kind::ApiKey, &id))
            .transpose()?;
        let keys = accounts::list_api_keys(super::db(ctx).conn(), self.0.id, after, limit).await?;
        Ok(keys.into_iter().map(ApiKey).collect())
    }
}

/// The API rate limit of each of an account's tokens: a token bucket of `burst` requests
/// that refills at `requestsPerSecond`.
#[derive(SimpleObject)]
pub struct AccountRateLimit {
    /// The account's id (`acc_…`).
    pub account_id: ID,
    /// Requests per second each token may make on average.
    pub requests_per_second: i32,
    /// Requests a token may make at once beyond that rate.
    pub burst: i32,
    /// Whether this is the account's own limit (true) or the configured default (false).
    pub custom: bool,
}

impl AccountRateLimit {
    pub fn of(account: &account::Model, config: &Config) -> Self {
        let own = accounts::rate_limit_of(account);
        let limit = own.unwrap_or(RateLimit {
            per_second: config.rate_limits.api_requests_per_second,
            burst: config.rate_limits.api_burst,
        });
        // Both are at most `RateLimit::MAX`.
        let as_int = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        Self {
            account_id: ID(ids::encode(ids::Kind::Account, account.id)),
            requests_per_second: as_int(limit.per_second),
            burst: as_int(limit.burst),
            custom: own.is_some(),
        }
    }
}

/// The account's credit pool.
#[derive(SimpleObject)]
pub struct CreditBalance {
    /// Credits granted to the account.
    pub total: i32,
    /// Credits held by connections that are not disconnected.
    pub used: i32,
    /// Credits a new connection can take: `total` minus `used`.
    pub available: i32,
}

impl CreditBalance {
    pub fn of(account: &account::Model) -> Self {
        // Both columns are kept within 0..=i32::MAX by the credit functions.
        let clamp = |v: i64| v.clamp(0, i32::MAX as i64) as i32;
        Self {
            total: clamp(account.credits_total),
            used: clamp(account.credits_used),
            available: clamp(account.credits_total - account.credits_used),
        }
    }
}

pub struct ApiKey(pub api_key::Model);

/// An API key (`mwk_…`) of the account; the key itself is shown only when it is created.
#[Object]
impl ApiKey {
    /// The key's id (`key_…`).
    pub async fn id(&self) -> ID {
        ID(ids::encode(ids::Kind::ApiKey, self.0.id))
    }
    /// The name given when the key was created.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The first characters of the key, to recognise it; never the key itself.
    async fn prefix(&self) -> &str {
        &self.0.prefix
    }
    /// When the key was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When a request last authenticated with the key (to the minute); null if never.
    async fn last_used_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_used_at
    }
    /// When the key was revoked; null while it works.
    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.0.revoked_at
    }
}

pub struct Viewer {
    pub account: account::Model,
    pub connection: Option<connection::Model>,
}

/// The caller of the request.
#[Object]
impl Viewer {
    /// The account the caller's key or token belongs to.
    async fn account(&self) -> Account {
        Account(self.account.clone())
    }
    /// Set when the caller uses a connection token.
    async fn connection(&self) -> Option<super::connection::Connection> {
        self.connection.clone().map(super::connection::Connection)
    }
}

/// The result of `createAccount`.
#[derive(SimpleObject)]
pub struct CreateAccountPayload {
    /// The new account.
    pub account: Account,
    /// The account's first API key, shown once.
    pub api_key: String,
}

/// The result of `createApiKey`.
#[derive(SimpleObject)]
pub struct CreateApiKeyPayload {
    /// The new key's record.
    pub api_key: ApiKey,
    /// The key itself, shown once.
    pub key: String,
}
