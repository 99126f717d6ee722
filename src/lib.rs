//! Millwright: a self-hosted unified API for industrial systems (CMMS, EAM, ERP).
//!
//! [`run`] serves the GraphQL API on a listener until the shutdown token fires; the binary
//! and the tests both start the server through it.

pub mod accounts;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod connections;
pub mod connectors;
pub mod credits;
pub mod crypto;
pub mod customers;
pub mod db;
pub mod error;
pub mod events;
pub mod graphql;
pub mod guard;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod pagination;
pub mod records;
pub mod sync;
pub mod telemetry;
pub mod webhooks;
pub mod ws;

use std::{future::IntoFuture, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{config::Config, db::Db, http::AppState, metrics::Metrics};

/// How long in-flight requests may take to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Migrates the database, then serves HTTP and WebSocket on `listener` until `shutdown`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let cipher = crypto::Cipher::from_config(&config)?;
    let retrying: u64 = config.webhook_retry_schedule.iter().sum();
    if retrying > config.event_retention_secs {
        tracing::warn!(
            retrying_secs = retrying,
            retention_secs = config.event_retention_secs,
            "webhook retries outlast the event retention: a late retry finds its event pruned and fails"
        );
    }
    let mut db = Db::connect(&config)
        .await
        .context("connecting to the database")?;
    let metrics = Metrics::new();
    db.count_statements(metrics.db_statements.clone());
    db.migrate().await.context("migrating the database")?;
    let feed = events::feed::EventFeed::new(db.clone(), config.event_feed_capacity).await?;
    let sync_wake = Arc::new(tokio::sync::Notify::new());
    let webhook_wake = Arc::new(tokio::sync::Notify::new());
    let auth_cache = Arc::new(auth::AuthCache::default());
    let outbound = connectors::http::Outbound::new(config.connector_allow_private_targets);
    let schema = graphql::build_schema(
        db.clone(),
        auth_cache.clone(),
        cipher.clone(),
        outbound.clone(),
        feed.clone(),
        sync_wake.clone(),
        webhook_wake.clone(),
        &config,
    );
    let state = Arc::new(AppState {
        db: db.clone(),
        schema,
        metrics,
        auth_cache,
        config,
        shutdown: shutdown.clone(),
    });
    let mut workers = tokio::task::JoinSet::new();
    let postgres_url = (!state.config.is_sqlite()).then(|| state.config.database_url.clone());
    workers.spawn(feed.run(postgres_url, shutdown.clone()));
    if let Some(interval) = state.config.sqlite_checkpoint_interval() {
        workers.spawn(
            db.clone()
                .checkpoint_periodically(interval, shutdown.clone()),
        );
    }
    if state.config.workers {
        let health = connections::health::HealthCheck {
            db: db.clone(),
            cipher: cipher.clone(),
            outbound: outbound.clone(),
            interval: state.config.health_check_interval(),
        };
        workers.spawn(health.run(shutdown.clone()));
        let scheduler = sync::scheduler::Scheduler {
            db: db.clone(),
            minute: Duration::from_secs(state.config.sync_schedule_minute_secs),
            wake: sync_wake.clone(),
        };
        workers.spawn(scheduler.run(shutdown.clone()));
        let sync_workers = sync::worker::SyncWorkers {
            db: db.clone(),
            cipher: cipher.clone(),
            outbound: outbound.clone(),
            settings: state.config.engine_settings(),
            concurrency: state.config.sync_workers,
            wake: sync_wake.clone(),
        };
        workers.spawn(sync_workers.run(shutdown.clone()));
        let deliveries = webhooks::deliver::DeliveryWorkers::new(
            db.clone(),
            cipher.clone(),
            state.config.delivery_settings(),
            webhook_wake.clone(),
        );
        let dispatcher = webhooks::dispatch::Dispatcher {
            db: db.clone(),
            deliveries: webhook_wake.clone(),
            direct: Some(deliveries.direct_dispatch()),
        };
        workers.spawn(dispatcher.run(db.commits(), shutdown.clone()));
        workers.spawn(deliveries.run(shutdown.clone()));
        workers.spawn(events::prune_periodically(
            db.clone(),
            state.config.event_retention(),
            shutdown.clone(),
        ));
    }
    let app = http::router(state);
    tracing::info!("listening on {}", listener.local_addr()?);
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    // In-flight requests get a grace period; a client that never finishes reading cannot
    // hold the process open.
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = server => served.context("serving HTTP")?,
        () = deadline => tracing::warn!("connections still open after the grace period; closing"),
    }
    shutdown.cancel();
    while workers.join_next().await.is_some() {}
    db.close().await.context("closing the database")?;
    tracing::info!("stopped");
    Ok(())
}
