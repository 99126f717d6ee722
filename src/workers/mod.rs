//! Background work: every long-running task of the process, started, named, supervised and
//! stopped in one place.
//!
//! | Worker | What it does | Where it runs |
//! |---|---|---|
//! | `event-feed` | Reads committed events and fans them out to subscriptions | always |
//! | `event-listener` | LISTENs for other processes' commits and wakes the event feed and the webhook dispatcher | PostgreSQL |
//! | `event-announcer` | NOTIFYs other processes of this one's commits, outside the writers' transactions | PostgreSQL |
//! | `revocations` | Closes the WebSockets of tokens other processes revoked (`NOTIFY` on PostgreSQL, a poll each second on SQLite) | always |
//! | `rate-limits` | Drops idle rate-limit buckets; rereads accounts' limits (PostgreSQL) | always |
//! | `sqlite-checkpoint` | Copies the SQLite log into the database file after writes | SQLite |
//! | `health-check` | Probes each live connection once per interval | `workers = true` |
//! | `sync-schedule` | Queues incremental runs whose interval has passed | `workers = true` |
//! | `sync-runs` | Claims queued runs under a lease and executes them (`sync_workers` loops) | `workers = true` |
//! | `bulk-writes` | Claims queued bulk operations under a lease and writes them batch by batch (`bulk_workers` loops) | `workers = true` |
//! | `webhook-dispatch` | Turns committed events into deliveries | `workers = true` |
//! | `webhook-delivery` | Claims due deliveries and sends them | `workers = true` |
//! | `event-pruning` | Deletes events older than the retention | `workers = true` |
//! | `bulk-pruning` | Deletes bulk operations (and their records' outcomes) that ended longer than the retention ago, one operation per transaction | `workers = true` |
//! | `webhook-pruning` | Deletes finished webhook deliveries (and their attempts) older than the retention, in batches | `workers = true` |
//! | `connection-cleanup` | Deletes the records of connections disconnected longer than the grace period, and finishes customer deletes, in batches | `workers = true` |
//!
//! To add one: `workers.spawn("name", move |shutdown| worker.clone().run(shutdown))` in
//! [`start`], and a row above. The closure is a factory: the supervisor calls it for every
//! (re)start, so it clones what the run consumes. The run returns `()` or a `Result<(), E:
//! Display>` and must return promptly once `shutdown` fires.
//!
//! Supervision (see [`supervise`]): a run that panics, returns an error, or returns before
//! shutdown is a failure, logged with the worker's name; the worker starts again after an
//! exponential backoff (1 s doubling to 60 s, back to 1 s after a run that lasted 60 s), and
//! `millwright_worker_restarts_total{worker}` counts the restart. A worker with 3 failures
//! in a row and no healthy run since keeps failing: `/readyz` answers 503 naming it. A loop
//! that only logs its errors and tries again is not failing; one whose error leaves it
//! broken returns it. Tasks a worker spawns itself (the sync loops, the webhook senders and
//! recorder) are watched by that worker: one that panics or ends early fails the worker
//! ([`supervise::join_loops`] does that for a set of loops). Operators read about it in
//! docs/operations.md (Supervised workers).
//!
//! [`Workers::stop`] fires the shutdown token and waits for every worker, including those
//! waiting out a backoff. With `workers = false` an instance serves the API only, and other
//! instances do the work.

mod bulk;
mod cleanup;
mod health;
mod prune;
mod schedule;
pub mod supervise;
mod sync_runs;

use std::{future::Future, sync::Arc};

use prometheus::IntCounterVec;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

pub use bulk::BulkWorkers;
pub use cleanup::ConnectionCleanup;
pub use health::HealthCheck;
pub use prune::{Pruned, Pruning};
pub use schedule::Scheduler;
pub use supervise::{Failing, Outcome, Policy, WorkerHealth};
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

/// The running background tasks of one process, each under its supervisor.
pub struct Workers {
    tasks: JoinSet<&'static str>,
    shutdown: CancellationToken,
    health: WorkerHealth,
    restarts: IntCounterVec,
    /// Testing only: the worker that panics each time it starts.
    panic_in: Option<&'static str>,
}

impl Workers {
    /// Workers that stop on `shutdown` and count their restarts in `restarts` (one label:
    /// the worker's name).
    pub fn new(shutdown: CancellationToken, restarts: IntCounterVec, policy: Policy) -> Self {
        Self {
            tasks: JoinSet::new(),
            shutdown,
            health: WorkerHealth::new(policy),
            restarts,
            panic_in: None,
        }
    }

    /// Starts the worker `name` under a supervisor: `factory` makes each run, given the
    /// shutdown token (see the module doc).
    pub fn spawn<F, Fut>(&mut self, name: &'static str, factory: F)
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output: Outcome> + Send + 'static,
    {
        tracing::debug!(worker = name, "worker starting");
        // The series exists from the start, at 0.
        self.restarts.with_label_values(&[name]);
        let supervised = supervise::Supervised {
            name,
            factory,
            health: self.health.clone(),
            restarts: self.restarts.clone(),
            inject_panic: self.panic_in == Some(name),
        };
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(
            async move {
                supervised.run(shutdown).await;
                name
            }
            .instrument(tracing::info_span!("worker", name)),
        );
    }

    /// What `/readyz` reads: the workers that keep failing.
    pub fn health(&self) -> WorkerHealth {
        self.health.clone()
    }

    /// Signals shutdown and waits until every worker has stopped.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while let Some(ended) = self.tasks.join_next().await {
            match ended {
                Ok(name) => tracing::debug!(worker = name, "worker stopped"),
                Err(err) => tracing::error!(error = %err, "a worker's supervisor panicked"),
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
    pub flow_metrics: crate::metrics::FlowMetrics,
    pub webhook_metrics: crate::metrics::WebhookMetrics,
}

/// Starts the workers `config` asks for, counting their restarts in `restarts`.
pub fn start(
    services: &Services,
    config: &Config,
    restarts: IntCounterVec,
    shutdown: CancellationToken,
) -> Workers {
    let mut workers = Workers::new(shutdown, restarts, Policy::default());
    workers.panic_in = config.testing.panic_in_worker;
    start_always(&mut workers, services, config);
    if config.process.workers {
        start_sync(&mut workers, services, config);
        start_webhooks(&mut workers, services, config);
        let prunings = [
            ("event-pruning", Pruned::Events, config.event_retention()),
            (
                "webhook-pruning",
                Pruned::WebhookDeliveries,
                config.webhook_retention(),
            ),
            (
                "bulk-pruning",
                Pruned::BulkOperations,
                config.bulk_retention(),
            ),
            (
                "portal-pruning",
                Pruned::PortalSessions,
                crate::portal::RETENTION,
            ),
        ];
        for (name, what, retention) in prunings {
            let pruning = Pruning {
                db: services.db.clone(),
                retention,
                what,
            };
            workers.spawn(name, move |s| pruning.clone().run(s));
        }
        let cleanup = ConnectionCleanup {
            db: services.db.clone(),
            grace: config.disconnected_records_grace(),
        };
        workers.spawn("connection-cleanup", move |s| cleanup.clone().run(s));
    }
    workers
}

/// The workers every process runs, whether or not it does the background work.
fn start_always(workers: &mut Workers, services: &Services, config: &Config) {
    let Services {
        db, feed, limits, ..
    } = services;
    let postgres_url = (!config.is_sqlite()).then(|| config.database.url.clone());
    let event_feed = feed.clone();
    workers.spawn("event-feed", move |s| event_feed.clone().run(s));
    if let Some(url) = postgres_url.clone() {
        let event_feed = feed.clone();
        workers.spawn("event-listener", move |s| {
            event_feed.clone().listen(url.clone(), s)
        });
        let announcer = db.clone();
        workers.spawn("event-announcer", move |s| {
            announcer
                .clone()
                .announce_commits(crate::events::feed::CHANNEL, s)
        });
    }
    // Every process serves WebSockets, so every process closes those of revoked tokens.
    let revocations_db = db.clone();
    workers.spawn("revocations", move |s| {
        crate::auth::sockets::watch(revocations_db.clone(), postgres_url.clone(), s)
    });
    // Only PostgreSQL is shared by several processes, whose limit changes this one must learn.
    let reload = (!config.is_sqlite()).then_some(limits::RELOAD_EVERY);
    let (limits, limits_db) = (limits.clone(), db.clone());
    workers.spawn("rate-limits", move |s| {
        limits.clone().housekeep(limits_db.clone(), reload, s)
    });
    if let Some(interval) = config.sqlite_checkpoint_interval() {
        let db = db.clone();
        workers.spawn("sqlite-checkpoint", move |s| {
            db.clone().checkpoint_periodically(interval, s)
        });
    }
}

/// Health checks, syncs and bulk writes.
fn start_sync(workers: &mut Workers, services: &Services, config: &Config) {
    let health = HealthCheck {
        db: services.db.clone(),
        cipher: services.cipher.clone(),
        outbound: services.outbound.clone(),
        interval: config.health_check_interval(),
    };
    workers.spawn("health-check", move |s| health.clone().run(s));
    let scheduler = Scheduler {
        db: services.db.clone(),
        minute: config.testing.schedule_minute,
    };
    workers.spawn("sync-schedule", move |s| scheduler.clone().run(s));
    let sync_runs = SyncWorkers {
        db: services.db.clone(),
        cipher: services.cipher.clone(),
        outbound: services.outbound.clone(),
        settings: config.engine_settings(),
        concurrency: config.sync.workers,
        flow_metrics: services.flow_metrics.clone(),
    };
    workers.spawn("sync-runs", move |s| sync_runs.clone().run(s));
    let bulk = BulkWorkers {
        db: services.db.clone(),
        cipher: services.cipher.clone(),
        outbound: services.outbound.clone(),
        settings: config.bulk_settings(),
        concurrency: config.bulk.workers,
    };
    workers.spawn("bulk-writes", move |s| bulk.clone().run(s));
}

/// The webhook dispatcher and this process's delivery workers, which it hands new
/// deliveries to directly.
fn start_webhooks(workers: &mut Workers, services: &Services, config: &Config) {
    let db = &services.db;
    let deliveries = Arc::new(webhooks::deliver::DeliveryWorkers::new(
        db.clone(),
        services.cipher.clone(),
        config.delivery_settings(),
        db.notifier().deliveries_queued(),
        services.webhook_metrics.clone(),
    ));
    let dispatcher = webhooks::dispatch::Dispatcher {
        db: db.clone(),
        deliveries: db.notifier().deliveries_queued(),
        direct: Some(deliveries.direct_dispatch()),
    };
    let commits = db.commits();
    workers.spawn("webhook-dispatch", move |s| {
        dispatcher.clone().run(commits.clone(), s)
    });
    workers.spawn("webhook-delivery", move |s| {
        let deliveries = deliveries.clone();
        async move { deliveries.run(s).await }
    });
}
