//! The sync worker pool: a bounded number of runs at a time, each claimed under a lease so
//! that a run of a crashed process is taken over after the lease expires. A run whose
//! attempt fails unexpectedly is let go with a backoff and retried, at most
//! `sync_max_attempts` times in all; at shutdown a worker lets go of its run at once.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{
    connectors::http::Outbound,
    crypto::Cipher,
    db::Db,
    error::AppError,
    metrics::FlowMetrics,
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
    pub flow_metrics: FlowMetrics,
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
                Ok(Some(run)) if run.attempts > self.settings.max_attempts as i32 => {
                    // Every earlier attempt ended without a word (its process died).
                    tracing::error!(sync_run.id = %run.id, attempts = run.attempts - 1, "a sync run is given up: its attempts never ended");
                    if let Err(err) = sync::give_up(&self.db, run, self.settings.max_attempts).await
                    {
                        tracing::error!(error = %err.detail(), "giving up a sync run failed");
                    }
                }
                Ok(Some(run)) => {
                    let engine = Engine {
                        db: &self.db,
                        cipher: &self.cipher,
                        outbound: &self.outbound,
                        settings: &self.settings,
                        worker: &name,
                        flow_metrics: &self.flow_metrics,
                    };
                    tokio::select! {
                        () = shutdown.cancelled() => {
                            // Let go of the run, so that another worker takes it over now
                            // rather than when the lease expires.
                            match sync::release(&self.db, run.id, &name).await {
                                Ok(_) => tracing::info!(sync_run.id = %run.id, "sync run released at shutdown"),
                                Err(err) => tracing::error!(sync_run.id = %run.id, error = %err.detail(), "releasing a sync run at shutdown failed; it is taken over when its lease expires"),
                            }
                            return;
                        }
                        result = engine.execute(run.clone()) => if let Err(err) = result {
                            self.attempt_failed(&run, &name, &err).await;
                        }
                    }
                }
                Ok(None) => tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = queued.notified() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                },
                Err(err) => {
                    tracing::error!(error = %err.detail(), "claiming a sync run failed");
                    tokio::time::sleep(IDLE_POLL).await;
                }
            }
        }
    }
}

impl SyncWorkers {
    /// After an attempt that ended in an unexpected error: the run is retried after a
    /// backoff, or ends (`MAX_ATTEMPTS`, or `CANCELLED` if asked meanwhile).
    async fn attempt_failed(&self, run: &entity::sync_run::Model, worker: &str, err: &AppError) {
        let (max, lease) = (self.settings.max_attempts, self.settings.lease);
        tracing::error!(sync_run.id = %run.id, attempt = run.attempts, max_attempts = max, error = %err.detail(), "a sync run's attempt failed unexpectedly");
        match sync::attempt_failed(&self.db, run, worker, max, lease).await {
            Ok(Some(now)) if now.status.is_finished() => {
                let code = now.error_code.map(|c| c.to_string()).unwrap_or_default();
                tracing::warn!(sync_run.id = %run.id, status = %now.status, code, "the failing sync run ended");
            }
            Ok(Some(_)) => {
                let backoff = sync::retry_backoff(run.attempts, lease);
                tracing::info!(sync_run.id = %run.id, ?backoff, "the failing sync run is retried after a backoff");
            }
            Ok(None) => {}
            Err(err) => {
                tracing::error!(sync_run.id = %run.id, error = %err.detail(), "recording a failed sync attempt failed; the run is retried when its lease expires");
            }
        }
    }
}

/// Identifies this process in leases.
pub(super) fn process_name() -> String {
    format!(
        "pid{}-{}",
        std::process::id(),
        &crate::ids::new_id().simple().to_string()[24..]
    )
}
