//! Sync runs: durable jobs that pull a connection's data into the unified record store.
//! `QUEUED → RUNNING → SUCCEEDED | FAILED | CANCELLED`; at most one queued-or-running run per
//! connection (a partial unique index), claimed by workers under a lease.

pub mod engine;

use sea_orm::ActiveEnum as _;
use std::sync::LazyLock;

use chrono::Utc;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement, sea_query::OnConflict,
};
use serde_json::json;
use uuid::Uuid;

use crate::{
    connections::{self, ConnectionStatus, Scope},
    db::Db,
    error::{AppError, AppResult},
    events::{self, EventType, NewEvent},
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
    let now = Utc::now();
    let run = sync_run::ActiveModel {
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
    };
    sync_run::Entity::insert(run)
        .on_conflict(OnConflict::new().do_nothing().to_owned())
        .exec_without_returning(txn)
        .await?;
    active_run(txn, connection.id)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("queued run vanished")))
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

/// Cancels a queued run at once, a running one at its next page boundary.
pub async fn cancel(db: &Db, scope: Scope, id: Uuid) -> AppResult<sync_run::Model> {
    let txn = db.begin_write().await?;
    let run = find(&*txn, scope, id).await?;
    // The connection's row, then the run's (docs/architecture.md, "Locks"): with the run's
    // row locked, no worker claims or ends it between this read and the write.
    connections::lock(&*txn, run.connection_id).await?;
    let run = locked(&*txn, id).await?;
    let cancelled = Some((SyncErrorCode::Cancelled, "cancelled".to_owned()));
    // Each step is conditional on the status just read: on PostgreSQL a worker may claim
    // the queued run in between, and then the cancel becomes a request to the running run.
    let run = match run.status {
        SyncStatus::Queued => match finish(&*txn, run, SyncStatus::Cancelled, cancelled).await? {
            Some(run) => run,
            None => request_cancel(&*txn, id).await?,
        },
        SyncStatus::Running => request_cancel(&*txn, id).await?,
        _ => run,
    };
    txn.commit().await?;
    Ok(run)
}

/// The run, its row locked for the rest of `txn` (on PostgreSQL).
async fn locked(txn: &impl ConnectionTrait, id: Uuid) -> AppResult<sync_run::Model> {
    sync_run::Entity::find_by_id(id)
        .lock_exclusive()
        .one(txn)
        .await?
        .ok_or(AppError::NotFound("sync run"))
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
    let customer_id = connection::Entity::find_by_id(run.connection_id)
        .one(txn)
        .await?
        .map(|c| c.customer_id);
    let event = NewEvent {
        account_id: run.account_id,
        customer_id,
        connection_id: Some(run.connection_id),
        event_type,
        data,
    };
    events::record(txn, vec![event]).await?;
    Ok(())
}

/// Claims the next runnable run (queued and due, or running with an expired lease).
pub async fn claim(
    db: &Db,
    worker: &str,
    lease: std::time::Duration,
) -> AppResult<Option<sync_run::Model>> {
    let now = Utc::now();
    let until = now + chrono::Duration::from_std(lease).unwrap_or_default();
    let backend = db.conn().get_database_backend();
    let statement = Statement::from_sql_and_values(
        backend,
        claim_sql(backend),
        [
            worker.into(),
            until.into(),
            now.into(),
            SyncStatus::Running.into(),
            now.into(),
            now.into(),
        ],
    );
    let txn = db.begin_write().await?;
    let run = sync_run::Entity::find()
        .from_raw_sql(statement)
        .one(&*txn)
        .await?;
    txn.commit().await?;
    Ok(run)
}

/// The claim statement. Statuses are written into the SQL as literals, not bound: the
/// partial index over queued and running runs is used only for a literal match.
fn claim_sql(backend: DbBackend) -> &'static str {
    fn written_for(backend: DbBackend) -> String {
        // PostgreSQL: concurrent claimers skip a row another one is taking.
        let lock = if backend == DbBackend::Postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE sync_runs SET locked_by = ?, locked_until = ?, \
             started_at = COALESCE(started_at, ?), status = ?, attempts = attempts + 1 \
             WHERE id = (SELECT id FROM sync_runs WHERE (status = '{queued}' AND run_after <= ?) \
             OR (status = '{running}' AND locked_until < ?) ORDER BY run_after LIMIT 1{lock}) \
             RETURNING *",
            queued = SyncStatus::Queued.to_value(),
            running = SyncStatus::Running.to_value(),
        );
        crate::db::statement(backend, &sql, []).sql
    }
    static SQLITE: LazyLock<String> = LazyLock::new(|| written_for(DbBackend::Sqlite));
    static POSTGRES: LazyLock<String> = LazyLock::new(|| written_for(DbBackend::Postgres));
    match backend {
        DbBackend::Postgres => &POSTGRES,
        _ => &SQLITE,
    }
}
