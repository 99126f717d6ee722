//! Retention: deletes events, and finished webhook deliveries, older than their retention
//! now and then, every tenth of the retention and at most hourly.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{db::Db, events, webhooks};

#[derive(Clone)]
pub struct EventPruning {
    pub db: Db,
    pub retention: Duration,
}

impl EventPruning {
    pub async fn run(self, shutdown: CancellationToken) {
        let every = period(self.retention);
        loop {
            match events::prune(&self.db, self.retention).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "expired events pruned"),
                Err(err) => tracing::error!(error = %err, "pruning events failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}

/// How often pruning with this retention runs.
fn period(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_millis(100), Duration::from_secs(3600))
}

#[derive(Clone)]
pub struct WebhookPruning {
    pub db: Db,
    pub retention: Duration,
}

impl WebhookPruning {
    pub async fn run(self, shutdown: CancellationToken) {
        let every = period(self.retention);
        loop {
            match webhooks::retention::prune(&self.db, self.retention).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "expired webhook deliveries pruned"),
                Err(err) => tracing::error!(error = %err, "pruning webhook deliveries failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}
