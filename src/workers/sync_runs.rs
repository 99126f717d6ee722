//! The sync worker pool: a bounded number of runs at a time, each claimed under a lease so
//! that a run of a crashed process is taken over after the lease expires.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{
    connectors::http::Outbound,
    crypto::Cipher,
    db::Db,
    sync::{
        self,
        engine::{Engine, EngineSettings},
    },
};

const IDLE_POLL: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct SyncWorkers {
    pub db: Db,
    pub cipher: Cipher,
    pub outbound: Outbound,
    pub settings: EngineSettings,
    pub concurrency: usize,
}

impl SyncWorkers {
    /// Runs `concurrency` loops until shutdown. A loop that panics or ends before shutdown
    /// stops the others (as a shutdown would) and fails the worker, whose supervisor starts
    /// them all again.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), String> {
        let stopping = shutdown.child_token();
        let mut set = tokio::task::JoinSet::new();
        for n in 0..self.concurrency.max(1) {
            let name = format!("{}-sync-{n}", process_name());
            set.spawn(self.clone().work(name, stopping.clone()));
        }
        super::supervise::join_loops(set, &stopping, "a sync loop").await
    }

    async fn work(self, name: String, shutdown: CancellationToken) {
        // Signalled when a run is queued, so that an idle worker starts at once.
        let queued = self.db.notifier().sync_queued();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            match sync::claim(&self.db, &name, self.settings.lease).await {
                Ok(Some(run)) => {
                    let engine = Engine {
                        db: &self.db,
                        cipher: &self.cipher,
                        outbound: &self.outbound,
                        settings: &self.settings,
                        worker: &name,
                    };
                    // A stop mid-run leaves the run RUNNING under a lease another worker retakes.
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        result = engine.execute(run) => if let Err(err) = result {
                            tracing::error!(error = %err, "sync run failed unexpectedly; it will be retried when its lease expires");
                        }
                    }
                }
                Ok(None) => tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = queued.notified() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                },
                Err(err) => {
                    tracing::error!(error = %err, "claiming a sync run failed");
                    tokio::time::sleep(IDLE_POLL).await;
                }
            }
        }
    }
}

/// Identifies this process in leases.
fn process_name() -> String {
    format!(
        "pid{}-{}",
        std::process::id(),
        &crate::ids::new_id().simple().to_string()[24..]
    )
}
