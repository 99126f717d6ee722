//! Storage of what is no longer paid for: finishes the deletes of customers marked deleted
//! (after a crash, or once their last sync run ended), and deletes the records of connections
//! disconnected longer than the grace period. Every tenth of the grace, at least once a
//! minute, so that an interrupted customer delete is finished soon.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{connections, customers, db::Db};

#[derive(Clone)]
pub struct ConnectionCleanup {
    pub db: Db,
    pub grace: Duration,
}

impl ConnectionCleanup {
    pub async fn run(self, shutdown: CancellationToken) {
        let every = (self.grace / 10).clamp(Duration::from_millis(100), Duration::from_secs(60));
        loop {
            match customers::finish_deletes(&self.db).await {
                Ok(0) => {}
                Ok(finished) => tracing::info!(finished, "customer deletes finished"),
                Err(err) => {
                    tracing::error!(error = %err.detail(), "finishing customer deletes failed")
                }
            }
            match connections::cleanup::purge_expired(&self.db, self.grace).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "records of disconnected connections deleted"),
                Err(err) => {
                    tracing::error!(error = %err.detail(), "deleting records of disconnected connections failed")
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}
