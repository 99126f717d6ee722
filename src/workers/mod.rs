//! Background work: every long-running task of the process, started, named and stopped in
//! one place.
//!
//! | Worker | What it does | Where it runs |
//! |---|---|---|
//! | `event-feed` | Reads committed events and fans them out to subscriptions | always |
//! | `revocations` | Closes the WebSockets of tokens other processes revoked (`NOTIFY` on PostgreSQL, a poll each second on SQLite) | always |
//! | `rate-limits` | Drops idle rate-limit buckets; rereads accounts' limits (PostgreSQL) | always |
//! | `sqlite-checkpoint` | Copies the SQLite log into the database file after writes | SQLite |
//! | `health-check` | Probes each live connection once per interval | `workers = true` |
//! | `sync-schedule` | Queues incremental runs whose interval has passed | `workers = true` |
//! | `sync-runs` | Claims queued runs under a lease and executes them | `workers = true` |
//! | `webhook-dispatch` | Turns committed events into deliveries | `workers = true` |
//! | `webhook-delivery` | Claims due deliveries and sends them | `workers = true` |
//! | `event-pruning` | Deletes events older than the retention | `workers = true` |
//! | `webhook-pruning` | Deletes finished webhook deliveries (and their attempts) older than the retention, in batches | `workers = true` |
//! | `connection-cleanup` | Deletes the records of connections disconnected longer than the grace period, and finishes customer deletes, in batches | `workers = true` |
//!
//! Each runs until the shutdown token fires; [`Workers::stop`] then waits for all of them.
//! With `workers = false` an instance serves the API only, and other instances do the work.

mod cleanup;
mod health;
mod prune;
mod schedule;
mod sync_runs;

use std::{future::Future, sync::Arc};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

pub use cleanup::ConnectionCleanup;
pub use health::HealthCheck;
pub use prune::{EventPruning, WebhookPruning};
pub use schedule::Scheduler;
pub use sync_runs::SyncWorkers;

use crate::{
    config::Config,
    connectors::http::Outbound,
    crypto::Cipher,
    db::Db,
    events::feed::EventFeed,
    limits::{self, RateLimits},
    webhooks,
};

/// The running background tasks of one process.
pub struct Workers {
    tasks: JoinSet<&'static str>,
    shutdown: CancellationToken,
}

impl Workers {
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            tasks: JoinSet::new(),
            shutdown,
        }
    }

    /// Starts `task` under `name` (its tracing span and its log lines when it ends).
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tracing::debug!(worker = name, "worker starting");
        self.tasks.spawn(
            async move {
                task.await;
                name
            }
            .instrument(tracing::info_span!("worker", name)),
        );
    }

    /// The token every worker stops on.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Signals shutdown and waits until every worker has stopped.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while let Some(ended) = self.tasks.join_next().await {
            match ended {
                Ok(name) => tracing::debug!(worker = name, "worker stopped"),
                Err(err) => tracing::error!(error = %err, "a worker panicked"),
            }
        }
    }
}

/// What the workers share with the API.
pub struct Services {
    pub db: Db,
    pub cipher: Cipher,
    pub outbound: Outbound,
    pub feed: EventFeed,
    pub limits: Arc<RateLimits>,
}

/// Starts the workers `config` asks for.
pub fn start(services: &Services, config: &Config, shutdown: CancellationToken) -> Workers {
    let Services {
        db,
        cipher,
        outbound,
        feed,
        limits,
    } = services;
    let mut workers = Workers::new(shutdown);
    let postgres_url = (!config.is_sqlite()).then(|| config.database.url.clone());
    workers.spawn(
        "event-feed",
        feed.clone().run(postgres_url.clone(), workers.shutdown()),
    );
    // Every process serves WebSockets, so every process closes those of revoked tokens.
    workers.spawn(
        "revocations",
        crate::auth::sockets::watch(db.clone(), postgres_url, workers.shutdown()),
    );
    // Only PostgreSQL is shared by several processes, whose limit changes this one must learn.
    let reload = (!config.is_sqlite()).then_some(limits::RELOAD_EVERY);
    workers.spawn(
        "rate-limits",
        limits
            .clone()
            .housekeep(db.clone(), reload, workers.shutdown()),
    );
    if let Some(interval) = config.sqlite_checkpoint_interval() {
        workers.spawn(
            "sqlite-checkpoint",
            db.clone()
                .checkpoint_periodically(interval, workers.shutdown()),
        );
    }
    if !config.process.workers {
        return workers;
    }
    let health = HealthCheck {
        db: db.clone(),
        cipher: cipher.clone(),
        outbound: outbound.clone(),
        interval: config.health_check_interval(),
    };
    workers.spawn("health-check", health.run(workers.shutdown()));
    let scheduler = Scheduler {
        db: db.clone(),
        minute: config.testing.schedule_minute,
    };
    workers.spawn("sync-schedule", scheduler.run(workers.shutdown()));
    let sync_runs = SyncWorkers {
        db: db.clone(),
        cipher: cipher.clone(),
        outbound: outbound.clone(),
        settings: config.engine_settings(),
        concurrency: config.sync.workers,
    };
    workers.spawn("sync-runs", sync_runs.run(workers.shutdown()));
    let deliveries = webhooks::deliver::DeliveryWorkers::new(
        db.clone(),
        cipher.clone(),
        config.delivery_settings(),
        db.notifier().deliveries_queued(),
    );
    let dispatcher = webhooks::dispatch::Dispatcher {
        db: db.clone(),
        deliveries: db.notifier().deliveries_queued(),
        direct: Some(deliveries.direct_dispatch()),
    };
    workers.spawn(
        "webhook-dispatch",
        dispatcher.run(db.commits(), workers.shutdown()),
    );
    workers.spawn("webhook-delivery", deliveries.run(workers.shutdown()));
    let pruning = EventPruning {
        db: db.clone(),
        retention: config.event_retention(),
    };
    workers.spawn("event-pruning", pruning.run(workers.shutdown()));
    let webhook_pruning = WebhookPruning {
        db: db.clone(),
        retention: config.webhook_retention(),
    };
    workers.spawn("webhook-pruning", webhook_pruning.run(workers.shutdown()));
    let cleanup = ConnectionCleanup {
        db: db.clone(),
        grace: config.disconnected_records_grace(),
    };
    workers.spawn("connection-cleanup", cleanup.run(workers.shutdown()));
    workers
}
