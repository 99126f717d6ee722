//! Accounts, API keys and the credit balance as GraphQL types.

use async_graphql::{Context, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

use crate::{accounts, error::AppResult, ids};
use entity::{account, api_key, connection};

pub struct Account(pub account::Model);

#[Object]
impl Account {
    pub async fn id(&self) -> ID {
        ID(ids::encode(ids::Kind::Account, self.0.id))
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn credits(&self) -> CreditBalance {
        CreditBalance::of(&self.0)
    }
    async fn api_keys(&self, ctx: &Context<'_>) -> AppResult<Vec<ApiKey>> {
        super::account_id(ctx)?;
        let keys = accounts::list_api_keys(super::db(ctx).conn(), self.0.id).await?;
        Ok(keys.into_iter().map(ApiKey).collect())
    }
}

#[derive(SimpleObject)]
pub struct CreditBalance {
    pub total: i32,
    pub used: i32,
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

#[Object]
impl ApiKey {
    pub async fn id(&self) -> ID {
        ID(ids::encode(ids::Kind::ApiKey, self.0.id))
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The first characters of the key, to recognise it; never the key itself.
    async fn prefix(&self) -> &str {
        &self.0.prefix
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn last_used_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_used_at
    }
    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.0.revoked_at
    }
}

pub struct Viewer {
    pub account: account::Model,
    pub connection: Option<connection::Model>,
}

#[Object]
impl Viewer {
    async fn account(&self) -> Account {
        Account(self.account.clone())
    }
    /// Set when the caller uses a connection token.
    async fn connection(&self) -> Option<super::connection::Connection> {
        self.connection.clone().map(super::connection::Connection)
    }
}

#[derive(SimpleObject)]
pub struct CreateAccountPayload {
    pub account: Account,
    /// The account's first API key, shown once.
    pub api_key: String,
}

#[derive(SimpleObject)]
pub struct CreateApiKeyPayload {
    pub api_key: ApiKey,
    /// The key itself, shown once.
    pub key: String,
}
