//! The credit pool of an account: grants, consumption on connect, refunds on disconnect.
//! Every movement is one conditional UPDATE (never read-modify-write) plus a ledger row and
//! a `credits.changed` event in the caller's transaction; on PostgreSQL the three are one
//! statement ([`move_credits`]).

use chrono::Utc;
use sea_orm::ActiveEnum as _;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QuerySelect, QueryTrait,
    sea_query::{Expr, ExprTrait},
};
use serde_json::json;
use uuid::Uuid;

use crate::{
    accounts::{MAX_CREDITS, find_account},
    db::{Db, WriteTxn},
    error::{AppError, AppResult},
    events::{self, EventType, NewEvent},
    ids::new_id,
    pagination::{Page, PageRequest, fetch_page},
};
pub use entity::enums::CreditEntryKind;
use entity::{account, connection, credit_ledger};

const MAX_NOTE_LEN: usize = 500;

/// One movement to book.
struct Movement {
    account_id: Uuid,
    kind: CreditEntryKind,
    /// Change of the available credits (negative = consumed).
    amount: i64,
    connection_id: Option<Uuid>,
    customer_id: Option<Uuid>,
    note: Option<String>,
}

/// Takes `cost` credits for a connection; `INSUFFICIENT_CREDITS` when the pool cannot pay.
/// The last statement of `txn`, which it commits (on PostgreSQL in the same round trip: see
/// [`move_credits_and_commit`]).
pub async fn consume_and_commit(
    db: &Db,
    txn: WriteTxn,
    account_id: Uuid,
    cost: i32,
    connection_id: Uuid,
    customer_id: Uuid,
) -> AppResult<()> {
    let cost = i64::from(cost);
    let movement = Movement {
        account_id,
        kind: CreditEntryKind::Connect,
        amount: -cost,
        connection_id: Some(connection_id),
        customer_id: Some(customer_id),
        note: None,
    };
    let insufficient = async || {
        let account = find_account(db.conn(), account_id).await?;
        Err(AppError::InsufficientCredits {
            needed: cost,
            available: Some(account.credits_total - account.credits_used),
        })
    };
    if txn.get_database_backend() == DbBackend::Postgres {
        let delta = PoolDelta {
            total: 0,
            used: cost,
        };
        return match move_credits_and_commit(txn, delta, movement).await? {
            Ok(_) => Ok(()),
            Err(PoolRefused) => insufficient().await,
        };
    }
    let used = account::Entity::update_many()
        .col_expr(
            account::Column::CreditsUsed,
            Expr::col(account::Column::CreditsUsed).add(cost),
        )
        .filter(account::Column::Id.eq(account_id));
    let affordable = used.filter(
        Expr::col(account::Column::CreditsTotal)
            .sub(Expr::col(account::Column::CreditsUsed))
            .gte(cost),
    );
    if move_credits(&*txn, affordable, movement).await?.is_none() {
        drop(txn);
        return insufficient().await;
    }
    txn.commit().await?;
    Ok(())
}

/// Returns a connection's credits to the pool. The last statement of `txn`, which it commits
/// (on PostgreSQL in the same round trip).
pub async fn refund_and_commit(
    txn: WriteTxn,
    account_id: Uuid,
    amount: i32,
    connection_id: Uuid,
    customer_id: Uuid,
) -> AppResult<()> {
    let amount = i64::from(amount);
    let movement = Movement {
        account_id,
        kind: CreditEntryKind::Disconnect,
        amount,
        connection_id: Some(connection_id),
        customer_id: Some(customer_id),
        note: None,
    };
    if txn.get_database_backend() == DbBackend::Postgres {
        let delta = PoolDelta {
            total: 0,
            used: -amount,
        };
        return match move_credits_and_commit(txn, delta, movement).await? {
            Ok(_) => Ok(()),
            // Returning credits never breaks the pool unless the books were already wrong.
            Err(PoolRefused) => Err(AppError::internal(anyhow::anyhow!(
                "returning credits would break the account's pool"
            ))),
        };
    }
    let update = account::Entity::update_many()
        .col_expr(
            account::Column::CreditsUsed,
            Expr::col(account::Column::CreditsUsed).sub(amount),
        )
        .filter(account::Column::Id.eq(account_id));
    move_credits(&*txn, update, movement)
        .await?
        .ok_or(AppError::NotFound("account"))?;
    txn.commit().await?;
    Ok(())
}

/// Adds `amount` credits to the account's pool total.
#[tracing::instrument(skip_all, fields(account.id = %account_id), err(level = "debug"))]
pub async fn grant(
    db: &Db,
    account_id: Uuid,
    amount: i64,
    note: Option<String>,
) -> AppResult<account::Model> {
    if !(1..=MAX_CREDITS).contains(&amount) {
        return Err(AppError::bad_input(format!(
            "`amount` must be between 1 and {MAX_CREDITS}"
        )));
    }
    let note = note.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if note
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NOTE_LEN)
    {
        return Err(AppError::bad_input(format!(
            "`note` must be at most {MAX_NOTE_LEN} characters"
        )));
    }
    let txn = db.begin_write().await?;
    let movement = Movement {
        account_id,
        kind: CreditEntryKind::Grant,
        amount,
        connection_id: None,
        customer_id: None,
        note,
    };
    let too_many = || AppError::bad_input(format!("the pool cannot exceed {MAX_CREDITS} credits"));
    if txn.get_database_backend() == DbBackend::Postgres {
        let delta = PoolDelta {
            total: amount,
            used: 0,
        };
        return move_credits_and_commit(txn, delta, movement)
            .await?
            .map_err(|PoolRefused| too_many());
    }
    // One statement: concurrent grants add up and the total never overflows. It returns the
    // account as updated, so nothing is read back.
    let update = account::Entity::update_many()
        .col_expr(
            account::Column::CreditsTotal,
            Expr::col(account::Column::CreditsTotal).add(amount),
        )
        .filter(account::Column::Id.eq(account_id))
        .filter(account::Column::CreditsTotal.lte(MAX_CREDITS - amount));
    let Some(account) = move_credits(&*txn, update, movement).await? else {
        find_account(&*txn, account_id).await?;
        return Err(too_many());
    };
    txn.commit().await?;
    Ok(account)
}

/// Books the credits an account was created with (already in its pool total).
pub async fn book_initial_grant(
    txn: &impl ConnectionTrait,
    account: &account::Model,
    amount: i64,
) -> AppResult<()> {
    let account_id = account.id;
    let note = Some("initial credits".to_owned());
    let movement = Movement {
        account_id,
        kind: CreditEntryKind::Grant,
        amount,
        connection_id: None,
        customer_id: None,
        note,
    };
    book(txn, account, movement).await
}

/// SQLite: applies `update` (a conditional UPDATE of one account's pool) and, when it
/// matched, books `movement`: the ledger row and the `credits.changed` event. Returns the
/// account as updated, `None` when the condition did not hold (nothing written). (On
/// PostgreSQL: [`move_credits_and_commit`].)
async fn move_credits(
    txn: &impl ConnectionTrait,
    update: sea_orm::UpdateMany<account::Entity>,
    movement: Movement,
) -> AppResult<Option<account::Model>> {
    let Some(account) = update.exec_with_returning(txn).await?.into_iter().next() else {
        return Ok(None);
    };
    book(txn, &account, movement).await?;
    Ok(Some(account))
}

/// What a movement adds to an account's pool on PostgreSQL (either may be negative).
#[derive(Clone, Copy)]
struct PoolDelta {
    total: i64,
    used: i64,
}

/// PostgreSQL: the call of `millwright_move_credits` (migration `credit_movement_function`)
/// for `movement`: it applies `delta` to the account's row, returning it, and books the
/// movement from the row as updated (the ledger row, whose id is made under the row's lock,
/// and the `credits.changed` event). A function, so that the statement's plan is kept by the
/// session instead of being parsed and planned at every movement; values are written in as
/// literals, for [`WriteTxn::commit_after`].
fn movement_sql(delta: PoolDelta, movement: Movement) -> String {
    use sea_orm::sea_query::{PostgresQueryBuilder, QueryBuilder as _};
    let literal = |value: sea_orm::Value| PostgresQueryBuilder.value_to_string(&value);
    format!(
        "SELECT * FROM millwright_move_credits({account}::uuid, {total}::bigint, \
         {used}::bigint, {kind}::text, {amount}::bigint, {connection}::uuid, {customer}::uuid, \
         {note}::text, {event_id}::uuid, {event_type}::text, {now}::timestamptz)",
        account = literal(movement.account_id.into()),
        total = delta.total,
        used = delta.used,
        kind = literal(movement.kind.to_value().into()),
        amount = movement.amount,
        connection = literal(movement.connection_id.into()),
        customer = literal(movement.customer_id.into()),
        note = literal(movement.note.into()),
        event_id = literal(new_id().into()),
        event_type = literal(EventType::CreditsChanged.to_value().into()),
        now = literal(Utc::now().into()),
    )
}

/// PostgreSQL: applies `delta` to the account's pool and books `movement` as the last
/// statement of `txn`, and commits, in one round trip ([`WriteTxn::commit_after`], in its
/// turn at the account's row): the account's row, which every movement of the account waits
/// for, is held for that statement and the commit only. The update is unconditional: a movement the pool cannot take fails
/// on the table's check (`accounts_credit_pool`: `0 <= used <= total <= 2^31 - 1`), and
/// nothing is committed. Returns the account as updated; `Err(PoolRefused)` inside when the
/// check refused it, `NOT_FOUND` when there is no such account.
async fn move_credits_and_commit(
    txn: WriteTxn,
    delta: PoolDelta,
    movement: Movement,
) -> AppResult<Result<account::Model, PoolRefused>> {
    let account_id = movement.account_id;
    let rows = match txn
        .commit_after(account_id, movement_sql(delta, movement))
        .await
    {
        Ok(rows) => rows,
        Err(err) if breaks_pool(&err) => return Ok(Err(PoolRefused)),
        Err(err) => return Err(err.into()),
    };
    let row = rows.first().ok_or(AppError::NotFound("account"))?;
    Ok(Ok(
        <account::Model as sea_orm::FromQueryResult>::from_query_result(row, "")?,
    ))
}

/// The pool's check refused a movement: nothing was committed.
struct PoolRefused;

/// The error of a statement the pool's check refused (SQLSTATE 23514 on
/// `accounts_credit_pool`).
fn breaks_pool(err: &sea_orm::DbErr) -> bool {
    let (sea_orm::DbErr::Query(sea_orm::RuntimeErr::SqlxError(err))
    | sea_orm::DbErr::Exec(sea_orm::RuntimeErr::SqlxError(err))) = err
    else {
        return false;
    };
    err.as_database_error().is_some_and(|db| {
        db.code().as_deref() == Some("23514") && db.constraint() == Some(POOL_CHECK)
    })
}

/// The PostgreSQL check on an account's pool (migration `credit_pool_check`).
const POOL_CHECK: &str = "accounts_credit_pool";

/// Writes the ledger row and the `credits.changed` event for a movement already applied to
/// `account` (the row as the movement left it).
async fn book(
    txn: &impl ConnectionTrait,
    account: &account::Model,
    movement: Movement,
) -> AppResult<()> {
    let available = account.credits_total - account.credits_used;
    let entry = credit_ledger::ActiveModel {
        id: Set(new_id()),
        account_id: Set(movement.account_id),
        kind: Set(movement.kind),
        amount: Set(movement.amount),
        balance_after: Set(available),
        connection_id: Set(movement.connection_id),
        note: Set(movement.note),
        created_at: Set(Utc::now()),
    };
    let entry = credit_ledger::Entity::insert(entry).build(txn.get_database_backend());
    let event = NewEvent {
        account_id: movement.account_id,
        customer_id: movement.customer_id,
        connection_id: movement.connection_id,
        event_type: EventType::CreditsChanged,
        data: json!({ "amount": movement.amount, "available": available, "kind": movement.kind.to_value() }),
    };
    // The ledger row and the event in one round trip on SQLite.
    events::record_after(txn, vec![entry], vec![event]).await?;
    Ok(())
}

/// One ledger entry of the account.
pub async fn find_entry(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    id: Uuid,
) -> AppResult<credit_ledger::Model> {
    credit_ledger::Entity::find_by_id(id)
        .filter(credit_ledger::Column::AccountId.eq(account_id))
        .one(db)
        .await?
        .ok_or(AppError::NotFound("credit ledger entry"))
}

pub async fn ledger(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    page: PageRequest,
) -> AppResult<Page<credit_ledger::Model>> {
    let select =
        credit_ledger::Entity::find().filter(credit_ledger::Column::AccountId.eq(account_id));
    Ok(fetch_page(db, select, credit_ledger::Column::Id, page).await?)
}

/// Credits held by a customer's live connections.
pub async fn in_use_by_customer(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    customer_id: Uuid,
) -> AppResult<i64> {
    let sum: Option<Option<i64>> = connection::Entity::find()
        .select_only()
        .column_as(Expr::col(connection::Column::CreditCost).sum(), "total")
        .filter(connection::Column::AccountId.eq(account_id))
        .filter(connection::Column::CustomerId.eq(customer_id))
        .filter(connection::Column::Status.ne(connection::ConnectionStatus::Disconnected))
        .into_tuple()
        .one(db)
        .await?;
    Ok(sum.flatten().unwrap_or(0))
}
