//! Portal sessions: short-lived, customer-scoped tokens (`mwp_…`) that a vendor's backend
//! mints with its account key and hands to a browser (its own web app, or the connect portal
//! at `/ui/connect`). What such a token may do is decided in the GraphQL layer, through
//! [`Principal::Portal`](crate::auth::Principal::Portal); see docs/portal.md.

use std::sync::Arc;

use chrono::{Duration, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QuerySelect,
};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    auth::{self, TokenKind},
    catalog, customers,
    db::{Db, WriteTxn},
    error::{AppError, AppResult},
    notify::Notice,
    pagination::{Page, PageRequest, fetch_page},
};
use entity::portal_session;

/// A session lives 15 minutes unless asked otherwise, at least a minute and at most a day.
pub const DEFAULT_TTL_SECONDS: i32 = 900;
pub const MIN_TTL_SECONDS: i32 = 60;
pub const MAX_TTL_SECONDS: i32 = 86_400;
/// Expired sessions stay listed this long (7 days), then are pruned.
pub const RETENTION: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
/// Sessions one pruning statement deletes at most.
const PRUNE_BATCH: u64 = 1000;
/// Connections its customer may have (not disconnected) for a session's connect to go ahead:
/// 10 unless asked otherwise, 1 to 1,000.
pub const DEFAULT_MAX_CONNECTIONS: i32 = 10;
const MAX_MAX_CONNECTIONS: i32 = 1_000;
/// More systems than the catalog holds is a mistake, not an allow-list.
const MAX_ALLOWED_SYSTEMS: usize = 100;

pub struct NewSession {
    pub customer_id: Uuid,
    pub allowed_systems: Option<Vec<String>>,
    pub ttl_seconds: i32,
    pub max_connections: i32,
}

/// Mints a session for one of the account's customers; returns it with its token, which is
/// shown this once (only its hash is stored).
pub async fn create(
    db: &Db,
    account_id: Uuid,
    new: NewSession,
) -> AppResult<(portal_session::Model, String)> {
    if !(MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&new.ttl_seconds) {
        return Err(AppError::bad_input(format!(
            "ttlSeconds must be between {MIN_TTL_SECONDS} and {MAX_TTL_SECONDS}"
        )));
    }
    if !(1..=MAX_MAX_CONNECTIONS).contains(&new.max_connections) {
        return Err(AppError::bad_input(format!(
            "maxConnections must be between 1 and {MAX_MAX_CONNECTIONS}"
        )));
    }
    let allowed = new.allowed_systems.map(allow_list).transpose()?;
    let txn = db.begin_write().await?;
    customers::find(&*txn, account_id, new.customer_id).await?;
    let token = auth::generate(TokenKind::Portal);
    let now = Utc::now();
    let session = portal_session::ActiveModel {
        id: Set(Uuid::now_v7()),
        account_id: Set(account_id),
        customer_id: Set(new.customer_id),
        token_hash: Set(token.hash),
        token_prefix: Set(token.display_prefix),
        allowed_systems: Set(allowed.map(Value::from)),
        max_connections: Set(new.max_connections),
        created_at: Set(now),
        expires_at: Set(now + Duration::seconds(i64::from(new.ttl_seconds))),
        revoked_at: Set(None),
    }
    .insert(&*txn)
    .await?;
    txn.commit().await?;
    Ok((session, token.token))
}

/// The allow-list as given, each key once, every one a system of the catalog.
fn allow_list(keys: Vec<String>) -> AppResult<Vec<String>> {
    if keys.is_empty() {
        return Err(AppError::bad_input(
            "allowedSystems must name at least one system; omit it to allow every system",
        ));
    }
    if keys.len() > MAX_ALLOWED_SYSTEMS {
        return Err(AppError::bad_input(format!(
            "allowedSystems may name at most {MAX_ALLOWED_SYSTEMS} systems"
        )));
    }
    let unknown: Vec<&str> = keys
        .iter()
        .filter(|key| catalog::find(key).is_none())
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(AppError::bad_input(format!(
            "allowedSystems names systems that do not exist: {}",
            unknown.join(", ")
        )));
    }
    let mut distinct: Vec<String> = Vec::with_capacity(keys.len());
    for key in keys {
        if !distinct.contains(&key) {
            distinct.push(key);
        }
    }
    Ok(distinct)
}

/// The systems a stored session allows; `None`: every system.
pub fn allowed_systems(session: &portal_session::Model) -> Option<Arc<[String]>> {
    let keys = session.allowed_systems.as_ref()?.as_array()?;
    Some(
        keys.iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
    )
}

/// Ends a session at once: its token stops authenticating here and in every other process,
/// and its open WebSockets close. Revoking it again changes nothing.
pub async fn revoke(db: &Db, account_id: Uuid, id: Uuid) -> AppResult<portal_session::Model> {
    let txn = db.begin_write().await?;
    let session = find(&*txn, account_id, id).await?;
    if session.revoked_at.is_some() {
        return Ok(session);
    }
    let mut active: portal_session::ActiveModel = session.into();
    active.revoked_at = Set(Some(Utc::now()));
    let session = active.update(&*txn).await?;
    auth::sockets::announce(&txn, Notice::PortalSessionRevoked(session.id));
    txn.commit().await?;
    Ok(session)
}

/// Revokes every live session of a customer, inside the caller's transaction (the customer's
/// delete): their tokens stop working and their sockets close when it commits.
pub async fn revoke_customer(txn: &WriteTxn, customer_id: Uuid) -> AppResult<()> {
    let revoked = portal_session::Entity::update_many()
        .col_expr(portal_session::Column::RevokedAt, Utc::now().into())
        .filter(portal_session::Column::CustomerId.eq(customer_id))
        .filter(portal_session::Column::RevokedAt.is_null())
        .exec_with_returning(&**txn)
        .await?;
    for session in revoked {
        auth::sockets::announce(txn, Notice::PortalSessionRevoked(session.id));
    }
    Ok(())
}

/// Deletes sessions that expired longer than `retention` ago, in batches; how many.
pub async fn prune(db: &Db, retention: std::time::Duration) -> AppResult<u64> {
    let horizon = crate::db::horizon(retention);
    let mut deleted = 0;
    loop {
        let expired: Vec<Uuid> = portal_session::Entity::find()
            .select_only()
            .column(portal_session::Column::Id)
            .filter(portal_session::Column::ExpiresAt.lt(horizon))
            .limit(PRUNE_BATCH)
            .into_tuple()
            .all(db.conn())
            .await?;
        if expired.is_empty() {
            return Ok(deleted);
        }
        let txn = db.begin_write().await?;
        deleted += portal_session::Entity::delete_many()
            .filter(portal_session::Column::Id.is_in(expired))
            .exec(&*txn)
            .await?
            .rows_affected;
        txn.commit().await?;
    }
}

pub async fn find(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    id: Uuid,
) -> AppResult<portal_session::Model> {
    portal_session::Entity::find_by_id(id)
        .filter(portal_session::Column::AccountId.eq(account_id))
        .one(db)
        .await?
        .ok_or(AppError::NotFound("portal session"))
}

/// The account's sessions (of one customer when given), oldest first.
pub async fn list(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    customer_id: Option<Uuid>,
    page: PageRequest,
) -> AppResult<Page<portal_session::Model>> {
    let mut select =
        portal_session::Entity::find().filter(portal_session::Column::AccountId.eq(account_id));
    if let Some(customer_id) = customer_id {
        select = select.filter(portal_session::Column::CustomerId.eq(customer_id));
    }
    Ok(fetch_page(db, select, portal_session::Column::Id, page).await?)
}
