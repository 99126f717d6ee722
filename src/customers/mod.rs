//! Customers of an account: the owners of connections. Every function is scoped to the
//! caller's account, so another account's customer is simply not found; nor is a customer
//! being deleted (`deleted_at` set), whose rows are going in batches.

use std::collections::HashMap;

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect,
    sea_query::{Expr, ExprTrait, Func, LikeExpr, LockType},
};
use uuid::Uuid;

use crate::{
    accounts::validate_name,
    connections,
    db::Db,
    error::{AppError, AppResult},
    ids::new_id,
    pagination::{Page, PageRequest, fetch_page},
};
use entity::{connection, customer};

const MAX_EXTERNAL_ID_LEN: usize = 200;
const MAX_SEARCH_LEN: usize = 200;

pub struct NewCustomer {
    pub name: String,
    pub external_id: Option<String>,
}

pub struct CustomerChanges {
    pub name: Option<String>,
    /// `Some(None)` clears the external id.
    pub external_id: Option<Option<String>>,
}

fn validate_external_id(external_id: Option<String>) -> AppResult<Option<String>> {
    let Some(external_id) = external_id.map(|e| e.trim().to_owned()) else {
        return Ok(None);
    };
    if external_id.is_empty()
        || external_id.len() > MAX_EXTERNAL_ID_LEN
        || external_id.chars().any(char::is_control)
    {
        return Err(AppError::bad_input(format!(
            "`externalId` must be 1 to {MAX_EXTERNAL_ID_LEN} printable characters"
        )));
    }
    Ok(Some(external_id))
}

fn conflict_on_external_id(err: sea_orm::DbErr) -> AppError {
    if AppError::is_unique_violation(&err) {
        AppError::Conflict("another customer of this account has this `externalId`".into())
    } else {
        err.into()
    }
}

#[tracing::instrument(skip_all, fields(account.id = %account_id), err(level = "debug"))]
/// The account's customers among `ids` (others' are simply absent), by id.
pub async fn find_many(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    ids: &[Uuid],
) -> AppResult<HashMap<Uuid, customer::Model>> {
    let rows = customer::Entity::find()
        .filter(customer::Column::AccountId.eq(account_id))
        .filter(customer::Column::Id.is_in(ids.iter().copied()))
        .filter(customer::Column::DeletedAt.is_null())
        .all(db)
        .await?;
    Ok(rows.into_iter().map(|c| (c.id, c)).collect())
}

pub async fn create(db: &Db, account_id: Uuid, input: NewCustomer) -> AppResult<customer::Model> {
    let name = validate_name("name", &input.name)?;
    let external_id = validate_external_id(input.external_id)?;
    let now = Utc::now();
    let txn = db.begin_write().await?;
    let model = customer::ActiveModel {
        id: Set(new_id()),
        account_id: Set(account_id),
        external_id: Set(external_id),
        name: Set(name),
        created_at: Set(now),
        updated_at: Set(now),
        deleted_at: Set(None),
    }
    .insert(&*txn)
    .await
    .map_err(conflict_on_external_id)?;
    txn.commit().await?;
    Ok(model)
}

pub async fn find(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    id: Uuid,
) -> AppResult<customer::Model> {
    find_locked(db, account_id, id, None).await
}

/// `find` in a write transaction, the row locked until it ends (PostgreSQL; SQLite's write
/// lock already serializes writers): shared by a connect, so that the customer cannot be
/// deleted under it, exclusive for the delete, which then sees every connection committed
/// before it.
pub async fn find_locked(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    id: Uuid,
    lock: Option<LockType>,
) -> AppResult<customer::Model> {
    let mut select = customer::Entity::find_by_id(id)
        .filter(customer::Column::AccountId.eq(account_id))
        .filter(customer::Column::DeletedAt.is_null());
    if let Some(lock) = lock {
        select = select.lock(lock);
    }
    select.one(db).await?.ok_or(AppError::NotFound("customer"))
}

#[tracing::instrument(skip_all, fields(account.id = %account_id, customer.id = %id), err(level = "debug"))]
pub async fn update(
    db: &Db,
    account_id: Uuid,
    id: Uuid,
    changes: CustomerChanges,
) -> AppResult<customer::Model> {
    let name = changes
        .name
        .map(|n| validate_name("name", &n))
        .transpose()?;
    let external_id = changes.external_id.map(validate_external_id).transpose()?;
    let txn = db.begin_write().await?;
    let mut active: customer::ActiveModel = find(&*txn, account_id, id).await?.into();
    if let Some(name) = name {
        active.name = Set(name);
    }
    if let Some(external_id) = external_id {
        active.external_id = Set(external_id);
    }
    active.updated_at = Set(Utc::now());
    let model = active
        .update(&*txn)
        .await
        .map_err(conflict_on_external_id)?;
    txn.commit().await?;
    Ok(model)
}

/// Deletes a customer whose connections are all disconnected (`CONFLICT` otherwise), together
/// with those disconnected connections and all they hold; the credit ledger and event log
/// keep their history (the credits came back when each connection was disconnected).
///
/// One short transaction marks the customer deleted: from then on it is not found, and its
/// external id is free again. Its rows then go in batches ([`finish_delete`]), a short
/// transaction each, so that a large customer never holds SQLite's write lock for long; what
/// a crash or a cancelled request leaves is finished by the `connection-cleanup` worker.
#[tracing::instrument(skip_all, fields(account.id = %account_id, customer.id = %id), err(level = "debug"))]
pub async fn delete(db: &Db, account_id: Uuid, id: Uuid) -> AppResult<()> {
    let txn = db.begin_write().await?;
    find_locked(&*txn, account_id, id, Some(LockType::Update)).await?;
    let live = connection::Entity::find()
        .filter(connection::Column::CustomerId.eq(id))
        .filter(connection::Column::Status.ne(connection::ConnectionStatus::Disconnected))
        .count(&*txn)
        .await?;
    if live > 0 {
        return Err(AppError::Conflict(format!(
            "the customer has {live} connection(s) that are not disconnected"
        )));
    }
    let now = Utc::now();
    customer::Entity::update_many()
        .col_expr(customer::Column::DeletedAt, now.into())
        .col_expr(customer::Column::UpdatedAt, now.into())
        .col_expr(customer::Column::ExternalId, Option::<String>::None.into())
        .filter(customer::Column::Id.eq(id))
        .exec(&*txn)
        .await?;
    crate::portal::revoke_customer(&txn, id).await?;
    txn.commit().await?;
    finish_delete(db, id).await?;
    Ok(())
}

/// Deletes a customer marked deleted, its connections first, in batches; `false` when a
/// connection's sync run has not ended yet (it stops at its next page): the rest is left for
/// the next call.
pub async fn finish_delete(db: &Db, id: Uuid) -> AppResult<bool> {
    let connections: Vec<Uuid> = connection::Entity::find()
        .select_only()
        .column(connection::Column::Id)
        .filter(connection::Column::CustomerId.eq(id))
        .into_tuple()
        .all(db.conn())
        .await?;
    let mut done = true;
    for connection_id in connections {
        done &= connections::cleanup::delete(db, connection_id).await?;
    }
    if !done {
        return Ok(false);
    }
    let txn = db.begin_write().await?;
    customer::Entity::delete_many()
        .filter(customer::Column::Id.eq(id))
        .filter(customer::Column::DeletedAt.is_not_null())
        .exec(&*txn)
        .await?;
    txn.commit().await?;
    Ok(true)
}

/// Finishes the deletes of customers marked deleted (after a crash, or while their runs were
/// ending); returns how many it finished.
pub async fn finish_deletes(db: &Db) -> AppResult<usize> {
    let deleting: Vec<Uuid> = customer::Entity::find()
        .select_only()
        .column(customer::Column::Id)
        .filter(customer::Column::DeletedAt.is_not_null())
        .into_tuple()
        .all(db.conn())
        .await?;
    let mut finished = 0;
    for id in deleting {
        if finish_delete(db, id).await? {
            finished += 1;
        }
    }
    Ok(finished)
}

/// Lists the account's customers, optionally those whose name or external id contains `search`.
pub async fn list(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    search: Option<&str>,
    page: PageRequest,
) -> AppResult<Page<customer::Model>> {
    let mut select = customer::Entity::find()
        .filter(customer::Column::AccountId.eq(account_id))
        .filter(customer::Column::DeletedAt.is_null());
    if let Some(search) = search.map(str::trim).filter(|s| !s.is_empty()) {
        if search.chars().count() > MAX_SEARCH_LEN {
            return Err(AppError::bad_input(format!(
                "`search` must be at most {MAX_SEARCH_LEN} characters"
            )));
        }
        let pattern = format!("%{}%", escape_like(&search.to_lowercase()));
        let lower = |col: customer::Column| Expr::expr(Func::lower(Expr::col(col)));
        let like = |col| lower(col).like(LikeExpr::new(pattern.clone()).escape('\\'));
        select = select.filter(
            sea_orm::Condition::any()
                .add(like(customer::Column::Name))
                .add(like(customer::Column::ExternalId)),
        );
    }
    Ok(fetch_page(db, select, customer::Column::Id, page).await?)
}

/// Escapes LIKE wildcards so that a search for `50%` finds exactly that.
fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}
