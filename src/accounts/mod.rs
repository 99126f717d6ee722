//! Accounts (the vendors using Millwright), their API keys and their credit pool totals.

use std::collections::HashMap;

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use uuid::Uuid;

use crate::{
    auth::{self, TokenKind},
    db::Db,
    error::{AppError, AppResult},
    ids::new_id,
    limits::RateLimit,
    notify::Notice,
};
use entity::{account, api_key};

/// Largest pool an account may hold; GraphQL `Int` is 32 bits.
pub const MAX_CREDITS: i64 = i32::MAX as i64;
const MAX_NAME_LEN: usize = 200;

pub struct NewAccount {
    pub account: account::Model,
    pub api_key: api_key::Model,
    /// The first API key, shown once.
    pub key: String,
}

pub fn validate_name(field: &str, name: &str) -> AppResult<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(AppError::bad_input(format!("`{field}` must not be empty")));
    }
    if name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(AppError::bad_input(format!(
            "`{field}` must be at most {MAX_NAME_LEN} printable characters"
        )));
    }
    Ok(name.to_owned())
}

fn validate_credits(credits: i64) -> AppResult<i64> {
    if !(0..=MAX_CREDITS).contains(&credits) {
        return Err(AppError::bad_input(format!(
            "`credits` must be between 0 and {MAX_CREDITS}"
        )));
    }
    Ok(credits)
}

#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn create_account(db: &Db, name: &str, credits: i64) -> AppResult<NewAccount> {
    let name = validate_name("name", name)?;
    let credits = validate_credits(credits)?;
    let txn = db.begin_write().await?;
    let account = account::ActiveModel {
        id: Set(new_id()),
        name: Set(name),
        credits_total: Set(credits),
        credits_used: Set(0),
        created_at: Set(Utc::now()),
        rate_limit_per_second: Set(None),
        rate_limit_burst: Set(None),
    }
    .insert(&*txn)
    .await?;
    if credits > 0 {
        crate::credits::book_initial_grant(&*txn, &account, credits).await?;
    }
    let (api_key, key) = insert_api_key(&*txn, account.id, "default").await?;
    txn.commit().await?;
    tracing::info!(account.id = %account.id, "account created");
    Ok(NewAccount {
        account,
        api_key,
        key,
    })
}

pub async fn find_account(db: &impl ConnectionTrait, id: Uuid) -> AppResult<account::Model> {
    account::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(AppError::NotFound("account"))
}

async fn insert_api_key(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    name: &str,
) -> AppResult<(api_key::Model, String)> {
    let token = auth::generate(TokenKind::ApiKey);
    let model = api_key::ActiveModel {
        id: Set(new_id()),
        account_id: Set(account_id),
        name: Set(name.to_owned()),
        prefix: Set(token.display_prefix),
        token_hash: Set(token.hash),
        created_at: Set(Utc::now()),
        last_used_at: Set(None),
        revoked_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok((model, token.token))
}

#[tracing::instrument(skip_all, fields(account.id = %account_id), err(level = "debug"))]
pub async fn create_api_key(
    db: &Db,
    account_id: Uuid,
    name: &str,
) -> AppResult<(api_key::Model, String)> {
    let name = validate_name("name", name)?;
    let txn = db.begin_write().await?;
    let created = insert_api_key(&*txn, account_id, &name).await?;
    txn.commit().await?;
    Ok(created)
}

/// Revokes a key of the account; revoking twice keeps the first revocation time.
#[tracing::instrument(skip_all, fields(account.id = %account_id), err(level = "debug"))]
pub async fn revoke_api_key(db: &Db, account_id: Uuid, id: Uuid) -> AppResult<api_key::Model> {
    let txn = db.begin_write().await?;
    let key = api_key::Entity::find_by_id(id)
        .filter(api_key::Column::AccountId.eq(account_id))
        .one(&*txn)
        .await?
        .ok_or(AppError::NotFound("API key"))?;
    if key.revoked_at.is_some() {
        return Ok(key);
    }
    let mut active: api_key::ActiveModel = key.into();
    active.revoked_at = Set(Some(Utc::now()));
    let key = active.update(&*txn).await?;
    auth::sockets::announce(&txn, Notice::ApiKeyRevoked(key.id));
    txn.commit().await?;
    Ok(key)
}

/// At most `limit` of the account's keys after the key `after`, oldest first.
pub async fn list_api_keys(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    after: Option<Uuid>,
    limit: u64,
) -> AppResult<Vec<api_key::Model>> {
    let mut select = api_key::Entity::find().filter(api_key::Column::AccountId.eq(account_id));
    if let Some(after) = after {
        select = select.filter(api_key::Column::Id.gt(after));
    }
    Ok(select
        .order_by_asc(api_key::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

pub async fn find_api_key(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    id: Uuid,
) -> AppResult<api_key::Model> {
    api_key::Entity::find_by_id(id)
        .filter(api_key::Column::AccountId.eq(account_id))
        .one(db)
        .await?
        .ok_or(AppError::NotFound("API key"))
}

/// Sets the account's own rate limit for each of its tokens, or with `None` returns it to
/// the configured default; this process applies it at its next request.
#[tracing::instrument(skip_all, fields(account.id = %account_id), err(level = "debug"))]
pub async fn set_rate_limit(
    db: &Db,
    account_id: Uuid,
    limit: Option<RateLimit>,
) -> AppResult<account::Model> {
    let txn = db.begin_write().await?;
    let account = find_account(&*txn, account_id).await?;
    let mut active: account::ActiveModel = account.into();
    let as_column = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    active.rate_limit_per_second = Set(limit.map(|l| as_column(l.per_second)));
    active.rate_limit_burst = Set(limit.map(|l| as_column(l.burst)));
    let account = active.update(&*txn).await?;
    txn.after_commit(Notice::RateLimitChanged { account_id, limit });
    txn.commit().await?;
    tracing::info!(?limit, "account rate limit set");
    Ok(account)
}

/// The account's own rate limit, if the operator set one.
pub fn rate_limit_of(account: &account::Model) -> Option<RateLimit> {
    match (account.rate_limit_per_second, account.rate_limit_burst) {
        (Some(per_second), Some(burst)) => RateLimit::new(per_second.into(), burst.into()).ok(),
        _ => None,
    }
}

/// Every account's own rate limit.
pub async fn rate_limits(db: &impl ConnectionTrait) -> AppResult<HashMap<Uuid, RateLimit>> {
    let accounts = account::Entity::find()
        .filter(account::Column::RateLimitPerSecond.is_not_null())
        .all(db)
        .await?;
    Ok(accounts
        .iter()
        .filter_map(|a| Some((a.id, rate_limit_of(a)?)))
        .collect())
}
