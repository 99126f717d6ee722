//! The scheduler: queues an incremental run for every connection whose sync interval has
//! passed since its last run. Connections waiting for new credentials are left alone.

use sea_orm::ActiveEnum as _;
use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, EntityTrait, QueryFilter, QuerySelect,
    sea_query::{Expr, ExprTrait},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    connections::{self, ConnectionStatus},
    db::Db,
    error::AppResult,
    notify::Notice,
    sync::{SyncKind, SyncTrigger, enqueue},
};
use entity::{connection, sync_run};

#[derive(Clone)]
pub struct Scheduler {
    pub db: Db,
    /// Length of one "minute" of `syncIntervalMinutes` (shortened in tests).
    pub minute: Duration,
}

impl Scheduler {
    pub async fn run(self, shutdown: CancellationToken) {
        let tick = (self.minute / 4).clamp(Duration::from_millis(200), Duration::from_secs(15));
        loop {
            if let Err(err) = self.queue_due().await {
                tracing::error!(error = %err.detail(), "scheduling syncs failed");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(tick) => {}
            }
        }
    }

    pub async fn queue_due(&self) -> AppResult<usize> {
        let scheduled = connection::Entity::find()
            .filter(connection::Column::SyncIntervalMinutes.is_not_null())
            .filter(connection::Column::Status.is_in([
                ConnectionStatus::Online.to_value(),
                ConnectionStatus::Offline.to_value(),
                ConnectionStatus::Pending.to_value(),
            ]))
            .all(self.db.conn())
            .await?;
        if scheduled.is_empty() {
            return Ok(0);
        }
        let mut latest: HashMap<Uuid, DateTime<Utc>> = HashMap::with_capacity(scheduled.len());
        // In chunks: SQLite binds at most 32,766 values a statement.
        for chunk in scheduled.chunks(1000) {
            let runs = sync_run::Entity::find()
                .select_only()
                .column(sync_run::Column::ConnectionId)
                .column_as(Expr::col(sync_run::Column::QueuedAt).max(), "latest")
                .filter(sync_run::Column::ConnectionId.is_in(chunk.iter().map(|c| c.id)))
                .group_by(sync_run::Column::ConnectionId)
                .into_tuple::<(Uuid, DateTime<Utc>)>()
                .all(self.db.conn())
                .await?;
            latest.extend(runs);
        }
        let now = Utc::now();
        let mut queued = 0;
        for connection in scheduled {
            let minutes = Ord::max(connection.sync_interval_minutes.unwrap_or(1), 1) as u32;
            let interval = chrono::Duration::from_std(self.minute * minutes).unwrap_or_default();
            let due = latest
                .get(&connection.id)
                .is_none_or(|last| *last + interval <= now);
            if due {
                let txn = self.db.begin_write().await?;
                // The connection's row before its run's (docs/architecture.md, "Locks").
                connections::lock(&*txn, connection.id).await?;
                enqueue(
                    &*txn,
                    &connection,
                    SyncKind::Incremental,
                    SyncTrigger::Schedule,
                )
                .await?;
                txn.after_commit(Notice::SyncQueued);
                txn.commit().await?;
                queued += 1;
            }
        }
        Ok(queued)
    }
}
