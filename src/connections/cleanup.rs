//! Storage of disconnected connections. A disconnected connection holds no credits, so what
//! it stored is not paid for: its records and sync cursors are deleted after a grace period
//! ([`purge_expired`]); the connection row, its sync runs and its events stay as history.
//! A deleted customer's connections go entirely ([`delete`]).
//!
//! Everything is deleted in batches, a short write transaction each, so that a connection
//! with millions of records never holds SQLite's write lock for long; every step can be run
//! again after a crash and picks up where the last one stopped.

use std::time::Duration;

use chrono::Utc;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::ConnectionStatus;
use crate::{db::Db, error::AppResult};
use entity::{connection, record, sync_cursor, sync_run};

/// Rows deleted per transaction.
pub const DELETE_BATCH: u64 = 1000;
/// Connections looked at per round of [`purge_expired`].
const CONNECTIONS_PER_ROUND: u64 = 100;

/// Deletes the records and cursors of connections disconnected more than `grace` ago that
/// still have them; returns how many connections it purged.
pub async fn purge_expired(db: &Db, grace: Duration) -> AppResult<usize> {
    let horizon = crate::db::horizon(grace);
    let mut purged = 0;
    loop {
        // idx_connections_unpurged: only disconnected connections not purged yet.
        let due: Vec<Uuid> = connection::Entity::find()
            .select_only()
            .column(connection::Column::Id)
            .filter(connection::Column::PurgedAt.is_null())
            .filter(connection::Column::DisconnectedAt.is_not_null())
            .filter(connection::Column::DisconnectedAt.lt(horizon))
            .filter(connection::Column::Status.eq(ConnectionStatus::Disconnected))
            .order_by_asc(connection::Column::DisconnectedAt)
            .limit(CONNECTIONS_PER_ROUND)
            .into_tuple()
            .all(db.conn())
            .await?;
        let mut skipped = 0;
        for id in &due {
            if purge(db, *id).await? {
                purged += 1;
            } else {
                skipped += 1;
            }
        }
        // A round of connections whose sync runs are still ending is left for the next call.
        if (due.len() as u64) < CONNECTIONS_PER_ROUND || skipped == due.len() {
            return Ok(purged);
        }
    }
}

/// Deletes a disconnected connection's records and cursors and marks it purged; `false`
/// (nothing done) while one of its sync runs has not ended: a run stops at its next page
/// once its connection is disconnected, and could write records after they were deleted.
pub async fn purge(db: &Db, connection_id: Uuid) -> AppResult<bool> {
    if has_active_runs(db, connection_id).await? {
        return Ok(false);
    }
    delete_records(db, connection_id).await?;
    let txn = db.begin_write().await?;
    sync_cursor::Entity::delete_many()
        .filter(sync_cursor::Column::ConnectionId.eq(connection_id))
        .exec(&*txn)
        .await?;
    connection::Entity::update_many()
        .col_expr(connection::Column::PurgedAt, Utc::now().into())
        .filter(connection::Column::Id.eq(connection_id))
        .filter(connection::Column::Status.eq(ConnectionStatus::Disconnected))
        .exec(&*txn)
        .await?;
    txn.commit().await?;
    Ok(true)
}

/// Deletes a disconnected connection with everything it holds (records, cursors, runs);
/// `false` (nothing done) while one of its sync runs has not ended. The caller makes sure
/// the connection is disconnected.
pub async fn delete(db: &Db, connection_id: Uuid) -> AppResult<bool> {
    if has_active_runs(db, connection_id).await? {
        return Ok(false);
    }
    delete_records(db, connection_id).await?;
    loop {
        let runs: Vec<Uuid> = sync_run::Entity::find()
            .select_only()
            .column(sync_run::Column::Id)
            .filter(sync_run::Column::ConnectionId.eq(connection_id))
            .limit(DELETE_BATCH)
            .into_tuple()
            .all(db.conn())
            .await?;
        if runs.is_empty() {
            break;
        }
        let txn = db.begin_write().await?;
        sync_run::Entity::delete_many()
            .filter(sync_run::Column::Id.is_in(runs))
            .exec(&*txn)
            .await?;
        txn.commit().await?;
    }
    // What is left is small: the cursors, and what a write since the batches added, which
    // the foreign keys' cascades take with the row.
    let txn = db.begin_write().await?;
    sync_cursor::Entity::delete_many()
        .filter(sync_cursor::Column::ConnectionId.eq(connection_id))
        .exec(&*txn)
        .await?;
    connection::Entity::delete_by_id(connection_id)
        .exec(&*txn)
        .await?;
    txn.commit().await?;
    Ok(true)
}

async fn has_active_runs(db: &Db, connection_id: Uuid) -> AppResult<bool> {
    let active = sync_run::Entity::find()
        .filter(sync_run::Column::ConnectionId.eq(connection_id))
        .filter(
            sync_run::Column::Status
                .is_in([sync_run::SyncStatus::Queued, sync_run::SyncStatus::Running]),
        )
        .count(db.conn())
        .await?;
    Ok(active > 0)
}

/// Deletes the connection's records, a batch per transaction, each batch found without the
/// write lock (`idx_records_page`).
async fn delete_records(db: &Db, connection_id: Uuid) -> AppResult<u64> {
    let mut deleted = 0;
    loop {
        let ids: Vec<Uuid> = record::Entity::find()
            .select_only()
            .column(record::Column::Id)
            .filter(record::Column::ConnectionId.eq(connection_id))
            .limit(DELETE_BATCH)
            .into_tuple()
            .all(db.conn())
            .await?;
        if ids.is_empty() {
            return Ok(deleted);
        }
        let txn = db.begin_write().await?;
        let result = record::Entity::delete_many()
            .filter(record::Column::Id.is_in(ids))
            .exec(&*txn)
            .await?;
        txn.commit().await?;
        deleted += result.rows_affected;
    }
}
