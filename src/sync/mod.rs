//! Sync runs: durable jobs that pull a connection's data into the unified record store.
//! `QUEUED → RUNNING → SUCCEEDED | FAILED | CANCELLED`; at most one queued-or-running run per
//! connection (a partial unique index), claimed by workers under a lease. Each claim is an
//! attempt: one that fails unexpectedly lets the run go for a backoff ([`attempt_failed`]),
//! and `sync_max_attempts` of them end it `MAX_ATTEMPTS`; a shutdown lets it go at once
//! ([`release`]). Writers lock the connection's row before its runs' (docs/architecture.md).

pub mod engine;

use sea_orm::ActiveEnum as _;

use chrono::Utc;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, OnConflict},
};
use serde_json::json;
use uuid::Uuid;

use crate::{
    connections::{self, ConnectionStatus, Scope},
    db::Db,
    error::{AppError, AppResult},
    events::{self, EventType},
    ids::new_id,
    notify::Notice,
    pagination::{Page, PageRequest, fetch_page},
};
pub use entity::enums::{SyncErrorCode, SyncKind, SyncStatus, SyncTrigger};
use entity::{connection, sync_run};

/// Queues a run unless the connection already has a queued or running one, which is returned.
pub async fn enqueue(
    txn: &impl ConnectionTrait,
    connection: &connection::Model,
    kind: SyncKind,
    trigger: SyncTrigger,
) -> AppResult<sync_run::Model> {
    let run = queued(connection, kind, trigger);
    // The connection's one active run (a unique index): the new one, or the one already
    // queued or running. On PostgreSQL the insert returns the new one (a round trip less);
    // sea-orm reads SQLite's back by row id, which would miss it after a conflict.
    let insert =
        sync_run::Entity::insert(run).on_conflict(OnConflict::new().do_nothing().to_owned());
    let backend = txn.get_database_backend();
    if backend == sea_orm::DbBackend::Postgres {
        let mut statement = sea_orm::QueryTrait::into_query(insert);
        statement.returning_all();
        let inserted = <sync_run::Model as sea_orm::FromQueryResult>::find_by_statement(
            backend.build(&statement),
        )
        .one(txn)
        .await?;
        if let Some(run) = inserted {
            return Ok(run);
        }
    } else {
        insert.exec_without_returning(txn).await?;
    }
    active_run(txn, connection.id)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("queued run vanished")))
}

/// A run of `connection`, queued now.
fn queued(
    connection: &connection::Model,
    kind: SyncKind,
    trigger: SyncTrigger,
) -> sync_run::ActiveModel {
    let now = Utc::now();
    sync_run::ActiveModel {
        id: Set(new_id()),
        account_id: Set(connection.account_id),
        connection_id: Set(connection.id),
        kind: Set(kind),
        trigger: Set(trigger),
        status: Set(SyncStatus::Queued),
        queued_at: Set(now),
        started_at: Set(None),
        finished_at: Set(None),
        run_after: Set(now),
        locked_by: Set(None),
        locked_until: Set(None),
        attempts: Set(0),
        cancel_requested: Set(false),
        records_added: Set(0),
        records_updated: Set(0),
        records_deleted: Set(0),
        stats: Set(json!({})),
        error_code: Set(None),
        error_message: Set(None),
    }
}

/// The insert of a new connection's first run (FULL, on connect), for the caller to send
/// with the connection's own insert ([`crate::events::record_after`]): a connection not yet
/// written has no active run to conflict with.
pub fn first_run(
    connection: &connection::Model,
    backend: sea_orm::DbBackend,
) -> sea_orm::Statement {
    let run = queued(connection, SyncKind::Full, SyncTrigger::Connect);
    sea_orm::QueryTrait::build(&sync_run::Entity::insert(run), backend)
}

pub async fn active_run(
    db: &impl ConnectionTrait,
    connection_id: Uuid,
) -> AppResult<Option<sync_run::Model>> {
    Ok(sync_run::Entity::find()
        .filter(sync_run::Column::ConnectionId.eq(connection_id))
        .filter(sync_run::Column::Status.is_in([
            SyncStatus::Queued.to_value(),
            SyncStatus::Running.to_value(),
        ]))
        .one(db)
        .await?)
}

/// `triggerSync`: queues a run, or returns the one already queued or running.
pub async fn trigger(
    db: &Db,
    scope: Scope,
    connection_id: Uuid,
    kind: SyncKind,
) -> AppResult<sync_run::Model> {
    let txn = db.begin_write().await?;
    // Locked before the run is written (docs/architecture.md, "Locks").
    let connection = connections::find_for_update(&*txn, scope, connection_id).await?;
    if connection.status == ConnectionStatus::Disconnected {
        return Err(AppError::Conflict("the connection is disconnected".into()));
    }
    let run = enqueue(&*txn, &connection, kind, SyncTrigger::Manual).await?;
    txn.after_commit(Notice::SyncQueued);
    txn.commit().await?;
    Ok(run)
}

pub async fn find(db: &impl ConnectionTrait, scope: Scope, id: Uuid) -> AppResult<sync_run::Model> {
    let run = sync_run::Entity::find_by_id(id)
        .filter(sync_run::Column::AccountId.eq(scope.account_id))
        .one(db)
        .await?
        .filter(|run| scope.connection_id.is_none_or(|c| c == run.connection_id))
        .ok_or(AppError::NotFound("sync run"))?;
    // A portal session's customer: the run's connection must be one of its.
    if scope.customer_id.is_some() {
        connections::find(db, scope, run.connection_id)
            .await
            .map_err(|err| match err {
                AppError::NotFound(_) => AppError::NotFound("sync run"),
                other => other,
            })?;
    }
    Ok(run)
}

pub async fn list(
    db: &impl ConnectionTrait,
    connection_id: Uuid,
    page: PageRequest,
) -> AppResult<Page<sync_run::Model>> {
    let select = sync_run::Entity::find().filter(sync_run::Column::ConnectionId.eq(connection_id));
    Ok(fetch_page(db, select, sync_run::Column::Id, page).await?)
}

pub async fn last_run(
    db: &impl ConnectionTrait,
    connection_id: Uuid,
) -> AppResult<Option<sync_run::Model>> {
    Ok(sync_run::Entity::find()
        .filter(sync_run::Column::ConnectionId.eq(connection_id))
        .order_by_desc(sync_run::Column::Id)
        .one(db)
        .await?)
}

/// Cancels a run: at once when it is queued, or running with no worker holding it (it waits
/// to be retried after a failed attempt, or its process stopped); else, when a worker is
/// executing it, at the run's next page boundary.
pub async fn cancel(db: &Db, scope: Scope, id: Uuid) -> AppResult<sync_run::Model> {
    let txn = db.begin_write().await?;
    let run = find(&*txn, scope, id).await?;
    // The connection's row, then the run's (docs/architecture.md, "Locks"): with the run's
    // row locked, no worker claims, releases or ends it between this read and the write.
    connections::lock(&*txn, run.connection_id).await?;
    let run = locked(&*txn, id).await?;
    let cancelled = Some((SyncErrorCode::Cancelled, "cancelled".to_owned()));
    let unheld = run.status == SyncStatus::Queued
        || (run.status == SyncStatus::Running && !held(&run, Utc::now()));
    let run = match run.status {
        SyncStatus::Queued | SyncStatus::Running if unheld => {
            match finish(&*txn, run, SyncStatus::Cancelled, cancelled).await? {
                Some(run) => run,
                None => request_cancel(&*txn, id).await?,
            }
        }
        SyncStatus::Running => request_cancel(&*txn, id).await?,
        _ => run,
    };
    txn.commit().await?;
    Ok(run)
}

/// In the transaction that disconnects `connection` (which has locked its row): its queued
/// run, or a running one no worker holds, ends now `CANCELLED` with code `DISCONNECTED`,
/// rather than wait for a worker to claim it only to find that; one a worker holds is asked
/// to stop, and its worker ends it so at its next page boundary. One statement, which decides
/// on the row as it is when it is locked (a worker's claim committed meanwhile makes the run
/// held); returns the `sync.failed` events of the runs it ended, for the caller to store with
/// its own.
pub async fn stop_for_disconnect(
    txn: &impl ConnectionTrait,
    connection: &connection::Model,
) -> AppResult<Vec<events::NewEvent>> {
    use sea_orm::sea_query::Cond;
    let now = Utc::now();
    let (code, message) = disconnected();
    // Queued, or running under no lease or an expired one: the negation of `held`.
    let stoppable = || {
        Cond::any()
            .add(sync_run::Column::Status.eq(SyncStatus::Queued))
            .add(sync_run::Column::LockedBy.is_null())
            .add(sync_run::Column::LockedUntil.is_null())
            .add(sync_run::Column::LockedUntil.lt(now))
    };
    let when_stoppable = |then: sea_orm::Value, otherwise: sync_run::Column| -> Expr {
        Expr::case(stoppable(), then)
            .finally(Expr::col(otherwise))
            .into()
    };
    let stopped = sync_run::Entity::update_many()
        .col_expr(
            sync_run::Column::Status,
            when_stoppable(
                SyncStatus::Cancelled.to_value().into(),
                sync_run::Column::Status,
            ),
        )
        .col_expr(
            sync_run::Column::FinishedAt,
            when_stoppable(Some(now).into(), sync_run::Column::FinishedAt),
        )
        .col_expr(
            sync_run::Column::LockedBy,
            when_stoppable(Option::<String>::None.into(), sync_run::Column::LockedBy),
        )
        .col_expr(
            sync_run::Column::LockedUntil,
            when_stoppable(
                Option::<chrono::DateTime<Utc>>::None.into(),
                sync_run::Column::LockedUntil,
            ),
        )
        .col_expr(
            sync_run::Column::ErrorCode,
            when_stoppable(code.to_value().into(), sync_run::Column::ErrorCode),
        )
        .col_expr(
            sync_run::Column::ErrorMessage,
            when_stoppable(message.clone().into(), sync_run::Column::ErrorMessage),
        )
        .col_expr(
            sync_run::Column::CancelRequested,
            Expr::case(stoppable(), Expr::col(sync_run::Column::CancelRequested))
                .finally(true)
                .into(),
        )
        .filter(sync_run::Column::ConnectionId.eq(connection.id))
        .filter(sync_run::Column::Status.is_in([SyncStatus::Queued, SyncStatus::Running]))
        .exec_with_returning(txn)
        .await?;
    Ok(stopped
        .into_iter()
        .filter(|run| run.status == SyncStatus::Cancelled)
        .map(|run| {
            let mut data = run_summary(&run);
            data["error"] = json!({ "code": code.to_value(), "message": message });
            events::NewEvent {
                account_id: run.account_id,
                customer_id: Some(connection.customer_id),
                connection_id: Some(run.connection_id),
                event_type: EventType::SyncFailed,
                data,
            }
        })
        .collect())
}

/// The run, its row locked for the rest of `txn` (on PostgreSQL).
async fn locked(txn: &impl ConnectionTrait, id: Uuid) -> AppResult<sync_run::Model> {
    sync_run::Entity::find_by_id(id)
        .lock_exclusive()
        .one(txn)
        .await?
        .ok_or(AppError::NotFound("sync run"))
}

/// Whether a worker holds the run under a lease that has not expired.
fn held(run: &sync_run::Model, now: chrono::DateTime<Utc>) -> bool {
    run.locked_by.is_some() && run.locked_until.is_some_and(|until| until >= now)
}

/// The code and message of a run the connection's disconnect stopped.
pub fn disconnected() -> (SyncErrorCode, String) {
    (
        SyncErrorCode::Disconnected,
        "the connection was disconnected".into(),
    )
}

/// The code and message of a run given up after `attempts` attempts.
fn gave_up(attempts: i32) -> (SyncErrorCode, String) {
    (
        SyncErrorCode::MaxAttempts,
        format!(
            "given up after {attempts} attempts that ended unexpectedly (an internal error \
             or a stopped process; the server log has each)"
        ),
    )
}

/// How long a run whose attempt failed unexpectedly waits before it may be claimed again:
/// 1 s after the first attempt, doubling, at most the lease (a run that keeps failing never
/// waits longer than one whose process died) and 5 minutes.
pub fn retry_backoff(attempts: i32, lease: std::time::Duration) -> std::time::Duration {
    let doublings = attempts.saturating_sub(1).clamp(0, 16) as u32;
    std::time::Duration::from_secs(1 << doublings)
        .min(lease)
        .min(std::time::Duration::from_secs(300))
}

/// After an attempt of `run` that `worker` held and that ended in an unexpected error (the
/// caller logs it): the run ends `CANCELLED` if a cancel or a disconnect asked for it
/// meanwhile, `FAILED` with `MAX_ATTEMPTS` when it has had `max_attempts`; otherwise the
/// worker lets it go until `retry_backoff` has passed, when any worker may claim it again.
/// The run as it now stands; `None` when the worker no longer held it.
pub async fn attempt_failed(
    db: &Db,
    run: &sync_run::Model,
    worker: &str,
    max_attempts: u32,
    lease: std::time::Duration,
) -> AppResult<Option<sync_run::Model>> {
    let txn = db.begin_write().await?;
    let scope = Scope::account(run.account_id);
    let connection = connections::find_for_update(&*txn, scope, run.connection_id).await?;
    let current = locked(&*txn, run.id).await?;
    if current.status != SyncStatus::Running || current.locked_by.as_deref() != Some(worker) {
        return Ok(None);
    }
    let outcome = if current.cancel_requested {
        let why = if connection.status == ConnectionStatus::Disconnected {
            disconnected()
        } else {
            (SyncErrorCode::Cancelled, "cancelled".to_owned())
        };
        finish(&*txn, current, SyncStatus::Cancelled, Some(why)).await?
    } else if current.attempts >= max_attempts as i32 {
        let attempts = current.attempts;
        finish(&*txn, current, SyncStatus::Failed, Some(gave_up(attempts))).await?
    } else {
        let retry_at = Utc::now()
            + chrono::Duration::from_std(retry_backoff(current.attempts, lease))
                .unwrap_or_default();
        sync_run::Entity::update_many()
            .col_expr(sync_run::Column::LockedBy, Option::<String>::None.into())
            .col_expr(sync_run::Column::LockedUntil, Some(retry_at).into())
            .filter(sync_run::Column::Id.eq(current.id))
            .exec_with_returning(&*txn)
            .await?
            .into_iter()
            .next()
    };
    txn.commit().await?;
    Ok(outcome)
}

/// Ends a run `worker` has just claimed for more than `max_attempts` attempts (its earlier
/// attempts ended without a word: the process died each time) `FAILED` with `MAX_ATTEMPTS`.
pub async fn give_up(
    db: &Db,
    run: sync_run::Model,
    max_attempts: u32,
) -> AppResult<Option<sync_run::Model>> {
    let txn = db.begin_write().await?;
    connections::lock(&*txn, run.connection_id).await?;
    let ended = finish(
        &*txn,
        run,
        SyncStatus::Failed,
        Some(gave_up(max_attempts as i32)),
    )
    .await?;
    txn.commit().await?;
    Ok(ended)
}

/// Lets go of a run `worker` holds, at once (at shutdown): another worker, of this process
/// or another, claims it without waiting for its lease to expire. The interrupted attempt
/// is given back, so that a run outlives any number of restarts, except a run's first: an
/// attempt count of 1 or more marks a run that has started (its `sync.started` is stored
/// once). Whether the worker still held it.
pub async fn release(db: &Db, run_id: Uuid, worker: &str) -> AppResult<bool> {
    let txn = db.begin_write().await?;
    let released = sync_run::Entity::update_many()
        .col_expr(sync_run::Column::LockedBy, Option::<String>::None.into())
        .col_expr(sync_run::Column::LockedUntil, Some(Utc::now()).into())
        .col_expr(
            sync_run::Column::Attempts,
            Expr::case(
                Expr::col(sync_run::Column::Attempts).gt(1),
                Expr::col(sync_run::Column::Attempts).sub(1),
            )
            .finally(Expr::col(sync_run::Column::Attempts))
            .into(),
        )
        .filter(sync_run::Column::Id.eq(run_id))
        .filter(sync_run::Column::LockedBy.eq(worker))
        .filter(sync_run::Column::Status.eq(SyncStatus::Running))
        .exec(&*txn)
        .await?;
    txn.commit().await?;
    Ok(released.rows_affected == 1)
}

/// Asks a running run to stop at its next page boundary; the run as it now stands.
async fn request_cancel(txn: &impl ConnectionTrait, id: Uuid) -> AppResult<sync_run::Model> {
    sync_run::Entity::update_many()
        .col_expr(sync_run::Column::CancelRequested, true.into())
        .filter(sync_run::Column::Id.eq(id))
        .filter(sync_run::Column::Status.eq(SyncStatus::Running))
        .exec(txn)
        .await?;
    sync_run::Entity::find_by_id(id)
        .one(txn)
        .await?
        .ok_or(AppError::NotFound("sync run"))
}

/// Ends a run and stores its closing event (`sync.completed`, or `sync.failed` with the
/// error), provided it still stands as `run` says: same status and same lease holder. `None`
/// when it does not (another worker took it over, or it was finished meanwhile): then
/// nothing is written.
pub async fn finish(
    txn: &impl ConnectionTrait,
    run: sync_run::Model,
    to: SyncStatus,
    error: Option<(SyncErrorCode, String)>,
) -> AppResult<Option<sync_run::Model>> {
    let holder = match &run.locked_by {
        Some(worker) => sync_run::Column::LockedBy.eq(worker.as_str()),
        None => sync_run::Column::LockedBy.is_null(),
    };
    let updated = sync_run::Entity::update_many()
        .col_expr(sync_run::Column::Status, to.to_value().into())
        .col_expr(sync_run::Column::FinishedAt, Some(Utc::now()).into())
        .col_expr(sync_run::Column::LockedBy, Option::<String>::None.into())
        .col_expr(
            sync_run::Column::LockedUntil,
            Option::<chrono::DateTime<Utc>>::None.into(),
        )
        .col_expr(
            sync_run::Column::ErrorCode,
            error.as_ref().map(|e| e.0).into(),
        )
        .col_expr(
            sync_run::Column::ErrorMessage,
            error.as_ref().map(|e| e.1.clone()).into(),
        )
        .filter(sync_run::Column::Id.eq(run.id))
        .filter(sync_run::Column::Status.eq(run.status))
        .filter(holder)
        .exec_with_returning(txn)
        .await?;
    let Some(run) = updated.into_iter().next() else {
        return Ok(None);
    };
    let event_type = if to == SyncStatus::Succeeded {
        EventType::SyncCompleted
    } else {
        EventType::SyncFailed
    };
    let mut data = run_summary(&run);
    if let Some((code, message)) = error {
        data["error"] = json!({ "code": code.to_value(), "message": message });
    }
    record_run_event(txn, &run, event_type, data).await?;
    Ok(Some(run))
}

pub fn run_summary(run: &sync_run::Model) -> serde_json::Value {
    json!({
        "sync_run_id": crate::ids::encode(crate::ids::Kind::SyncRun, run.id),
        "kind": run.kind.to_value(), "status": run.status.to_value(),
        "added": run.records_added, "updated": run.records_updated, "deleted": run.records_deleted,
        "entities": run.stats,
    })
}

pub async fn record_run_event(
    txn: &impl ConnectionTrait,
    run: &sync_run::Model,
    event_type: EventType,
    data: serde_json::Value,
) -> AppResult<()> {
    events::record_for_connection(txn, run.account_id, run.connection_id, event_type, data).await?;
    Ok(())
}

/// Claims the next runnable run (queued and due, or running with an expired lease).
pub async fn claim(
    db: &Db,
    worker: &str,
    lease: std::time::Duration,
) -> AppResult<Option<sync_run::Model>> {
    let statuses = (
        SyncStatus::Queued.to_value(),
        SyncStatus::Running.to_value(),
    );
    let statuses = (statuses.0.as_str(), statuses.1.as_str());
    Ok(crate::db::claim::<sync_run::Entity>(db, "sync_runs", statuses, worker, lease).await?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::retry_backoff;

    #[test]
    fn retries_back_off_doubling_within_the_lease() {
        let lease = Duration::from_secs(30);
        let waits: Vec<u64> = (1..=7)
            .map(|attempts| retry_backoff(attempts, lease).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(
            retry_backoff(99, Duration::from_secs(3600)),
            Duration::from_secs(300)
        );
        assert_eq!(
            retry_backoff(3, Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }
}
