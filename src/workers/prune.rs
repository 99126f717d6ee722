//! Retention: deletes events, finished webhook deliveries, ended bulk operations and expired
//! portal sessions older than their retention now and then, every tenth of the retention and
//! at most hourly.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{bulk, db::Db, error::AppResult, events, portal, webhooks};

/// What a pruning worker deletes.
#[derive(Clone, Copy, Debug)]
pub enum Pruned {
    Events,
    WebhookDeliveries,
    BulkOperations,
    PortalSessions,
}

impl Pruned {
    fn noun(self) -> &'static str {
        match self {
            Pruned::Events => "events",
            Pruned::WebhookDeliveries => "webhook deliveries",
            Pruned::BulkOperations => "bulk operations",
            Pruned::PortalSessions => "portal sessions",
        }
    }
}

#[derive(Clone)]
pub struct Pruning {
    pub db: Db,
    pub retention: Duration,
    pub what: Pruned,
}

impl Pruning {
    pub async fn run(self, shutdown: CancellationToken) {
        let every = period(self.retention);
        let what = self.what.noun();
        loop {
            match self.prune().await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, what, "expired rows pruned"),
                Err(err) => tracing::error!(error = %err.detail(), what, "pruning failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    async fn prune(&self) -> AppResult<u64> {
        match self.what {
            Pruned::Events => events::prune(&self.db, self.retention).await,
            Pruned::WebhookDeliveries => webhooks::retention::prune(&self.db, self.retention).await,
            Pruned::BulkOperations => bulk::prune(&self.db, self.retention).await,
            Pruned::PortalSessions => portal::prune(&self.db, self.retention).await,
        }
    }
}

/// How often pruning with this retention runs.
fn period(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_millis(100), Duration::from_secs(3600))
}
