//! Retention of deliveries: finished deliveries (succeeded, failed, exhausted) older than
//! the retention are deleted with their attempts, a batch per short write transaction, so
//! that pruning a large backlog never holds SQLite's write lock for long. A pending delivery
//! is never pruned, whatever its age.

use std::time::Duration;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::DeliveryStatus;
use crate::{db::Db, error::AppResult};
use entity::webhook_delivery;

/// Deliveries deleted per transaction (their attempts with them: a few per delivery).
pub const PRUNE_BATCH: u64 = 500;

/// Deletes finished deliveries created before `retention` ago, and their attempts; returns
/// how many deliveries it deleted.
pub async fn prune(db: &Db, retention: Duration) -> AppResult<u64> {
    let horizon = crate::db::horizon(retention);
    let mut deleted = 0;
    loop {
        // Found without the write lock, oldest first (idx_webhook_deliveries_created).
        let expired: Vec<Uuid> = webhook_delivery::Entity::find()
            .select_only()
            .column(webhook_delivery::Column::Id)
            .filter(webhook_delivery::Column::CreatedAt.lt(horizon))
            .filter(webhook_delivery::Column::Status.ne(DeliveryStatus::Pending))
            .order_by_asc(webhook_delivery::Column::CreatedAt)
            .limit(PRUNE_BATCH)
            .into_tuple()
            .all(db.conn())
            .await?;
        if expired.is_empty() {
            return Ok(deleted);
        }
        deleted += delete_finished(db, &expired).await?;
        if (expired.len() as u64) < PRUNE_BATCH {
            return Ok(deleted);
        }
    }
}

/// Deletes those of `ids` that are still finished (a redelivery may have made one pending
/// since: the status is checked by the delete itself), in one transaction; their attempts go
/// with them (the foreign key cascades).
async fn delete_finished(db: &Db, ids: &[Uuid]) -> AppResult<u64> {
    let txn = db.begin_write().await?;
    let result = webhook_delivery::Entity::delete_many()
        .filter(webhook_delivery::Column::Id.is_in(ids.iter().copied()))
        .filter(webhook_delivery::Column::Status.ne(DeliveryStatus::Pending))
        .exec(&*txn)
        .await?;
    txn.commit().await?;
    Ok(result.rows_affected)
}
