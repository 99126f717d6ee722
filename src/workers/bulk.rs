//! The bulk-write worker pool: a bounded number of operations at a time, each claimed under
//! a lease so that the operation of a crashed process is taken over (from its first
//! unfinished batch) after the lease expires. An attempt that fails is retried after a
//! backoff, at most `bulk_max_attempts` times in all; at shutdown a worker lets go of its
//! operation at once.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{
    bulk::{
        jobs,
        run::{AttemptFailed, BulkSettings, Runner},
    },
    connectors::http::Outbound,
    crypto::Cipher,
    db::Db,
};

const IDLE_POLL: Duration = Duration::from_millis(500);
/// How long shutdown waits for the batch being sent.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct BulkWorkers {
    pub db: Db,
    pub cipher: Cipher,
    pub outbound: Outbound,
    pub settings: BulkSettings,
    pub concurrency: usize,
}

impl BulkWorkers {
    /// Runs `concurrency` loops until shutdown (a loop that panics fails the worker).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), String> {
        let stopping = shutdown.child_token();
        let mut set = tokio::task::JoinSet::new();
        for n in 0..self.concurrency.max(1) {
            let name = format!("{}-bulk-{n}", super::sync_runs::process_name());
            set.spawn(self.clone().work(name, stopping.clone()));
        }
        super::supervise::join_loops(set, &stopping, "a bulk-write loop").await
    }

    async fn work(self, name: String, shutdown: CancellationToken) {
        let queued = self.db.notifier().bulk_queued();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            match jobs::claim(&self.db, &name, self.settings.lease).await {
                Ok(Some(op)) if op.attempts > self.settings.max_attempts as i32 => {
                    tracing::error!(bulk_operation.id = %op.id, attempts = op.attempts - 1, "a bulk operation is given up: its attempts never ended");
                    if let Err(err) = jobs::give_up(&self.db, op, self.settings.max_attempts).await
                    {
                        tracing::error!(error = %err.detail(), "giving up a bulk operation failed");
                    }
                }
                Ok(Some(op)) => {
                    let runner = Runner {
                        db: &self.db,
                        cipher: &self.cipher,
                        outbound: &self.outbound,
                        settings: &self.settings,
                        stop: &shutdown,
                    };
                    let run = runner.execute(op.clone());
                    tokio::pin!(run);
                    let result = tokio::select! {
                        result = &mut run => Some(result),
                        // The batch being sent is finished and stored (the job stops at its
                        // next boundary), unless that takes longer than the grace.
                        () = shutdown.cancelled() => tokio::time::timeout(SHUTDOWN_GRACE, &mut run).await.ok(),
                    };
                    if let Some(Err(err)) = result {
                        self.attempt_failed(&op, &err).await;
                    }
                    if shutdown.is_cancelled() {
                        // Let go of the operation, so that another worker takes it over now
                        // rather than when the lease expires.
                        match jobs::release(&self.db, op.id, &name).await {
                            Ok(true) => {
                                tracing::info!(bulk_operation.id = %op.id, "bulk operation released at shutdown")
                            }
                            Ok(false) => {}
                            Err(err) => {
                                tracing::error!(bulk_operation.id = %op.id, error = %err.detail(), "releasing a bulk operation at shutdown failed; it is taken over when its lease expires")
                            }
                        }
                        return;
                    }
                }
                Ok(None) => tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = queued.notified() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                },
                Err(err) => {
                    tracing::error!(error = %err.detail(), "claiming a bulk operation failed");
                    tokio::time::sleep(IDLE_POLL).await;
                }
            }
        }
    }

    async fn attempt_failed(&self, op: &entity::bulk_operation::Model, err: &AttemptFailed) {
        let (max, lease) = (self.settings.max_attempts, self.settings.lease);
        match err {
            AttemptFailed::Remote(_) => {
                tracing::warn!(bulk_operation.id = %op.id, attempt = op.attempts, error = %err, "a bulk operation's attempt stopped");
            }
            AttemptFailed::Internal(internal) => {
                tracing::error!(bulk_operation.id = %op.id, attempt = op.attempts, error = %internal.detail(), "a bulk operation's attempt failed unexpectedly");
            }
        }
        match jobs::attempt_failed(&self.db, op, &err.to_string(), max, lease).await {
            Ok(Some(now)) if now.status.is_finished() => {
                tracing::warn!(bulk_operation.id = %op.id, status = %now.status, "the failing bulk operation ended");
            }
            Ok(_) => {}
            Err(err) => {
                tracing::error!(bulk_operation.id = %op.id, error = %err.detail(), "recording a failed bulk attempt failed; the operation is retried when its lease expires");
            }
        }
    }
}
