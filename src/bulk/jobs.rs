//! A bulk operation as a durable job: claimed under a lease (`SKIP LOCKED` on PostgreSQL), its
//! lease renewed while it works, each batch marked as being sent before it is sent and its
//! outcomes stored after, and its end stored with its `bulk_operation.completed` event.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveEnum as _, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
    sea_query::{Expr, ExprTrait},
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    connectors::WriteOutcome,
    db::{self, Db},
    error::{AppError, AppResult},
    events::{self, EventType},
    ids,
};
use entity::{
    bulk_operation::{self, BulkStatus},
    bulk_record,
};

/// The operation's row, locked for the rest of the transaction.
pub async fn locked(txn: &impl ConnectionTrait, id: Uuid) -> AppResult<bulk_operation::Model> {
    bulk_operation::Entity::find_by_id(id)
        .lock_exclusive()
        .one(txn)
        .await?
        .ok_or(AppError::NotFound("bulk operation"))
}

/// Asks the worker that holds a running operation to stop before its next batch.
pub async fn request_cancel(
    txn: &impl ConnectionTrait,
    id: Uuid,
) -> AppResult<bulk_operation::Model> {
    bulk_operation::Entity::update_many()
        .col_expr(bulk_operation::Column::CancelRequested, true.into())
        .filter(bulk_operation::Column::Id.eq(id))
        .exec_with_returning(txn)
        .await?
        .into_iter()
        .next()
        .ok_or(AppError::NotFound("bulk operation"))
}

/// How an operation that ran to its end (or was cancelled) ends, by its counts.
pub fn final_status(op: &bulk_operation::Model) -> BulkStatus {
    if op.cancel_requested {
        BulkStatus::Cancelled
    } else if op.failed == 0 {
        BulkStatus::Succeeded
    } else if op.succeeded == 0 {
        BulkStatus::Failed
    } else {
        BulkStatus::PartiallyFailed
    }
}

/// The outcome of a record whose batch was being sent when its operation ended (cancelled,
/// given up, disconnected) without an answer from the remote.
pub const ENDED_WHILE_SENDING: &str = "outcome unknown: the operation ended while this \
     record's batch was being sent; check the remote system before writing it again";

/// How many records from `processed` on were in the batch being sent when `op` ends (none
/// unless its sending mark is set): they get [`ENDED_WHILE_SENDING`], counted as failed, so
/// that no record that may have reached the remote is left without an outcome.
fn in_flight(op: &bulk_operation::Model) -> i32 {
    if op.sending_since.is_none() {
        return 0;
    }
    let size = Ord::max(op.batch_size, 1);
    let end = Ord::min(((op.processed / size) + 1) * size, op.total);
    Ord::max(end - op.processed, 0)
}

/// Ends an operation and stores `bulk_operation.completed`, provided it still stands as `op`
/// says (same status, same lease holder); `None`, and nothing written, when it does not.
pub async fn finish(
    txn: &impl ConnectionTrait,
    op: bulk_operation::Model,
    to: BulkStatus,
    error: Option<String>,
) -> AppResult<Option<bulk_operation::Model>> {
    let holder = match &op.locked_by {
        Some(worker) => bulk_operation::Column::LockedBy.eq(worker.as_str()),
        None => bulk_operation::Column::LockedBy.is_null(),
    };
    let unknown = in_flight(&op);
    let ended = bulk_operation::Entity::update_many()
        .col_expr(
            bulk_operation::Column::Processed,
            Expr::col(bulk_operation::Column::Processed).add(unknown),
        )
        .col_expr(
            bulk_operation::Column::Failed,
            Expr::col(bulk_operation::Column::Failed).add(unknown),
        )
        .col_expr(bulk_operation::Column::Status, to.to_value().into())
        .col_expr(bulk_operation::Column::FinishedAt, Some(Utc::now()).into())
        .col_expr(
            bulk_operation::Column::LockedBy,
            Option::<String>::None.into(),
        )
        .col_expr(
            bulk_operation::Column::LockedUntil,
            Option::<DateTime<Utc>>::None.into(),
        )
        .col_expr(
            bulk_operation::Column::SendingSince,
            Option::<DateTime<Utc>>::None.into(),
        )
        .col_expr(bulk_operation::Column::ErrorMessage, error.into())
        .filter(bulk_operation::Column::Id.eq(op.id))
        .filter(bulk_operation::Column::Status.eq(op.status))
        .filter(holder)
        .exec_with_returning(txn)
        .await?
        .into_iter()
        .next();
    if let Some(ended) = &ended {
        if unknown > 0 {
            let outcomes = vec![Err(ENDED_WHILE_SENDING.to_owned()); unknown as usize];
            store_outcomes(txn, op.id, op.processed, &outcomes).await?;
        }
        record_completed(txn, ended).await?;
    }
    Ok(ended)
}

/// What `bulk_operation.completed` carries.
pub fn summary(op: &bulk_operation::Model) -> Value {
    json!({
        "bulk_operation_id": ids::encode(ids::Kind::BulkOperation, op.id),
        "connection_id": ids::encode(ids::Kind::Connection, op.connection_id),
        "entity": op.entity.to_value(), "operation": op.operation.to_value(),
        "status": op.status.to_value(), "total": op.total, "processed": op.processed,
        "succeeded": op.succeeded, "failed": op.failed, "error": op.error_message,
    })
}

async fn record_completed(txn: &impl ConnectionTrait, op: &bulk_operation::Model) -> AppResult<()> {
    let event_type = EventType::BulkOperationCompleted;
    events::record_for_connection(
        txn,
        op.account_id,
        op.connection_id,
        event_type,
        summary(op),
    )
    .await?;
    Ok(())
}

/// Claims the next operation due: queued, waiting to be retried, or held under an expired
/// lease (its process died). Its attempt count goes up by one.
pub async fn claim(
    db: &Db,
    worker: &str,
    lease: Duration,
) -> AppResult<Option<bulk_operation::Model>> {
    let statuses = (
        BulkStatus::Queued.to_value(),
        BulkStatus::Running.to_value(),
    );
    let statuses = (statuses.0.as_str(), statuses.1.as_str());
    let table = "bulk_operations";
    Ok(db::claim::<bulk_operation::Entity>(db, table, statuses, worker, lease).await?)
}

/// Whether a renewal of the lease also marks the next batch as being sent.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Between batches or while one is out: the lease only.
    Lease,
    /// Before a batch: the lease, and the mark that the batch from record `processed` on is
    /// being sent (unless an earlier attempt left that mark): after a crash, the next worker
    /// knows these records may have reached the remote.
    MarkSending,
}

/// Renews the lease `worker` holds on operation `id` (see [`Renewal`]) and returns the
/// operation as it now stands (a cancel asked meanwhile shows in it); `None` when the worker
/// no longer holds it.
pub async fn renew(
    db: &Db,
    id: Uuid,
    worker: &str,
    lease: Duration,
    renewal: Renewal,
) -> AppResult<Option<bulk_operation::Model>> {
    let now = Utc::now();
    let until = now + chrono::Duration::from_std(lease).unwrap_or_default();
    let mut update = bulk_operation::Entity::update_many()
        .col_expr(bulk_operation::Column::LockedUntil, Some(until).into());
    if renewal == Renewal::MarkSending {
        update = update.col_expr(
            bulk_operation::Column::SendingSince,
            Expr::col(bulk_operation::Column::SendingSince).if_null(now),
        );
    }
    let txn = db.begin_write().await?;
    let op = update
        .filter(bulk_operation::Column::Id.eq(id))
        .filter(bulk_operation::Column::LockedBy.eq(worker))
        .filter(bulk_operation::Column::Status.eq(BulkStatus::Running))
        .exec_with_returning(&*txn)
        .await?
        .into_iter()
        .next();
    txn.commit().await?;
    Ok(op)
}

/// The records of the batch that starts at the operation's first unwritten record: up to
/// the batch's boundary (a batch cut short by a rate limit is finished before the next).
pub async fn next_batch(
    db: &impl ConnectionTrait,
    op: &bulk_operation::Model,
) -> AppResult<Vec<bulk_record::Model>> {
    let size = Ord::max(op.batch_size, 1);
    let end = ((op.processed / size) + 1) * size;
    Ok(bulk_record::Entity::find()
        .filter(bulk_record::Column::OperationId.eq(op.id))
        .filter(bulk_record::Column::Position.gte(op.processed))
        .filter(bulk_record::Column::Position.lt(Ord::min(end, op.total)))
        .order_by_asc(bulk_record::Column::Position)
        .all(db)
        .await?)
}

/// Stores the outcomes of the records from index `from` on, in one statement, and moves the
/// operation's counts; `still_sending` keeps the mark that records after them may have been
/// sent. The operation as it now stands; `None` when `worker` no longer holds it.
pub async fn record_outcomes(
    txn: &impl ConnectionTrait,
    op: &bulk_operation::Model,
    from: i32,
    outcomes: &[WriteOutcome],
    still_sending: bool,
) -> AppResult<Option<bulk_operation::Model>> {
    if !outcomes.is_empty() {
        store_outcomes(txn, op.id, from, outcomes).await?;
    }
    let succeeded = outcomes.iter().filter(|o| o.is_ok()).count() as i32;
    let failed = outcomes.len() as i32 - succeeded;
    let sending: Option<DateTime<Utc>> = if still_sending {
        op.sending_since.or(Some(Utc::now()))
    } else {
        None
    };
    Ok(bulk_operation::Entity::update_many()
        .col_expr(
            bulk_operation::Column::Processed,
            Expr::col(bulk_operation::Column::Processed).add(outcomes.len() as i32),
        )
        .col_expr(
            bulk_operation::Column::Succeeded,
            Expr::col(bulk_operation::Column::Succeeded).add(succeeded),
        )
        .col_expr(
            bulk_operation::Column::Failed,
            Expr::col(bulk_operation::Column::Failed).add(failed),
        )
        .col_expr(bulk_operation::Column::SendingSince, sending.into())
        // An attempt that makes progress starts the count of failed attempts again.
        .col_expr(
            bulk_operation::Column::Attempts,
            if outcomes.is_empty() {
                Expr::col(bulk_operation::Column::Attempts)
            } else {
                Expr::value(1)
            },
        )
        .filter(bulk_operation::Column::Id.eq(op.id))
        .filter(bulk_operation::Column::LockedBy.eq(op.locked_by.as_deref()))
        .filter(bulk_operation::Column::Status.eq(BulkStatus::Running))
        .filter(bulk_operation::Column::Processed.eq(from))
        .exec_with_returning(txn)
        .await?
        .into_iter()
        .next())
}

/// One `UPDATE … FROM (VALUES …)` for a batch's outcomes (a CTE names the columns, which
/// SQLite's VALUES cannot).
async fn store_outcomes(
    txn: &impl ConnectionTrait,
    operation_id: Uuid,
    from: i32,
    outcomes: &[WriteOutcome],
) -> AppResult<()> {
    let backend = txn.get_database_backend();
    let rows = vec!["(?, ?, ?, ?)"; outcomes.len()].join(", ");
    let sql = format!(
        "WITH outcome(idx, ok, remote_key, message) AS (VALUES {rows}) \
         UPDATE bulk_records SET succeeded = outcome.ok, remote_key = outcome.remote_key, \
         error = outcome.message FROM outcome \
         WHERE bulk_records.operation_id = ? AND bulk_records.position = outcome.idx"
    );
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(outcomes.len() * 4 + 1);
    for (n, outcome) in outcomes.iter().enumerate() {
        let (ok, key, message) = match outcome {
            Ok(key) => (true, Some(key.clone()), None),
            Err(message) => (false, None, Some(message.clone())),
        };
        values.extend([
            (from + n as i32).into(),
            ok.into(),
            key.into(),
            message.into(),
        ]);
    }
    values.push(operation_id.into());
    txn.execute_raw(db::statement(backend, &sql, values))
        .await?;
    Ok(())
}

/// Counts a remote 429 the operation waited out.
pub async fn count_rate_limit(db: &Db, id: Uuid) -> AppResult<()> {
    let txn = db.begin_write().await?;
    bulk_operation::Entity::update_many()
        .col_expr(
            bulk_operation::Column::RateLimited,
            Expr::col(bulk_operation::Column::RateLimited).add(1),
        )
        .filter(bulk_operation::Column::Id.eq(id))
        .exec(&*txn)
        .await?;
    txn.commit().await?;
    Ok(())
}

/// After an attempt that ended in an unexpected error or an unreachable remote: the operation
/// ends `CANCELLED` if asked meanwhile, `FAILED` after `max_attempts`, and otherwise is let
/// go until a backoff has passed (the sync runs' backoff). The operation as it now stands;
/// `None` when `worker` no longer held it.
pub async fn attempt_failed(
    db: &Db,
    op: &bulk_operation::Model,
    why: &str,
    max_attempts: u32,
    lease: Duration,
) -> AppResult<Option<bulk_operation::Model>> {
    let txn = db.begin_write().await?;
    crate::connections::lock(&*txn, op.connection_id).await?;
    let current = locked(&*txn, op.id).await?;
    if current.status != BulkStatus::Running || current.locked_by != op.locked_by {
        return Ok(None);
    }
    let outcome = if current.cancel_requested {
        finish(&*txn, current, BulkStatus::Cancelled, None).await?
    } else if current.attempts >= max_attempts as i32 {
        let message = format!("gave up after {} attempts: {why}", current.attempts);
        finish(&*txn, current, BulkStatus::Failed, Some(message)).await?
    } else {
        let retry_at = Utc::now()
            + chrono::Duration::from_std(crate::sync::retry_backoff(current.attempts, lease))
                .unwrap_or_default();
        bulk_operation::Entity::update_many()
            .col_expr(
                bulk_operation::Column::LockedBy,
                Option::<String>::None.into(),
            )
            .col_expr(bulk_operation::Column::LockedUntil, Some(retry_at).into())
            .col_expr(bulk_operation::Column::RunAfter, retry_at.into())
            .filter(bulk_operation::Column::Id.eq(current.id))
            .exec_with_returning(&*txn)
            .await?
            .into_iter()
            .next()
    };
    txn.commit().await?;
    Ok(outcome)
}

/// Lets go of an operation at shutdown, so that another worker takes it over at once; the
/// interrupted attempt is given back. Whether the worker still held it.
pub async fn release(db: &Db, id: Uuid, worker: &str) -> AppResult<bool> {
    let txn = db.begin_write().await?;
    let released = bulk_operation::Entity::update_many()
        .col_expr(
            bulk_operation::Column::LockedBy,
            Option::<String>::None.into(),
        )
        .col_expr(bulk_operation::Column::LockedUntil, Some(Utc::now()).into())
        .col_expr(
            bulk_operation::Column::Attempts,
            Expr::col(bulk_operation::Column::Attempts).sub(1),
        )
        .filter(bulk_operation::Column::Id.eq(id))
        .filter(bulk_operation::Column::LockedBy.eq(worker))
        .filter(bulk_operation::Column::Status.eq(BulkStatus::Running))
        .exec(&*txn)
        .await?;
    txn.commit().await?;
    Ok(released.rows_affected == 1)
}

/// Ends an operation claimed more than `max_attempts` times, all of whose attempts ended
/// without a word (their process died).
pub async fn give_up(db: &Db, op: bulk_operation::Model, max_attempts: u32) -> AppResult<()> {
    let txn = db.begin_write().await?;
    crate::connections::lock(&*txn, op.connection_id).await?;
    let message = format!("gave up after {max_attempts} attempts that never ended");
    finish(&*txn, op, BulkStatus::Failed, Some(message)).await?;
    txn.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(processed: i32, total: i32, batch_size: i32, sending: bool) -> bulk_operation::Model {
        bulk_operation::Model {
            id: Uuid::nil(),
            account_id: Uuid::nil(),
            connection_id: Uuid::nil(),
            entity: entity::enums::EntityType::WorkOrder,
            operation: entity::enums::WriteOperation::Create,
            status: BulkStatus::Running,
            total,
            processed,
            succeeded: processed,
            failed: 0,
            batch_size,
            delay_between_batches_ms: 0,
            idempotency_key: None,
            request_hash: String::new(),
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            run_after: Utc::now(),
            locked_by: None,
            locked_until: None,
            attempts: 1,
            cancel_requested: false,
            sending_since: sending.then(Utc::now),
            rate_limited: 0,
            error_message: None,
            flow_id: None,
        }
    }

    #[test]
    fn an_operation_ended_mid_batch_leaves_that_batch_in_doubt() {
        assert_eq!(in_flight(&op(40, 100, 20, true)), 20);
        // A batch cut short (a rate limit, a fault) is in doubt up to its boundary only.
        assert_eq!(in_flight(&op(47, 100, 20, true)), 13);
        assert_eq!(in_flight(&op(90, 95, 20, true)), 5);
        assert_eq!(in_flight(&op(40, 100, 20, false)), 0);
        assert_eq!(in_flight(&op(100, 100, 20, true)), 0);
    }

    #[test]
    fn the_status_follows_the_counts() {
        let mut ended = op(10, 10, 5, false);
        assert_eq!(final_status(&ended), BulkStatus::Succeeded);
        (ended.succeeded, ended.failed) = (7, 3);
        assert_eq!(final_status(&ended), BulkStatus::PartiallyFailed);
        (ended.succeeded, ended.failed) = (0, 10);
        assert_eq!(final_status(&ended), BulkStatus::Failed);
        ended.cancel_requested = true;
        assert_eq!(final_status(&ended), BulkStatus::Cancelled);
    }
}
