//! Millwright: a self-hosted unified API for industrial systems (CMMS, EAM, ERP).
//!
//! [`run`] serves the GraphQL API on a listener until the shutdown token fires; the binary
//! and the tests both start the server through it.

pub mod accounts;
pub mod auth;
pub mod bulk;
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
pub mod flows;
pub mod graphql;
pub mod guard;
pub mod http;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod pagination;
pub mod portal;
pub mod records;
pub mod sync;
pub mod telemetry;
pub mod webhooks;
pub mod workers;
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
    warn_about(&config);
    let cipher = crypto::Cipher::from_config(&config)?;
    let old_key_ids: Vec<String> = cipher
        .old_key_ids()
        .iter()
        .map(ToString::to_string)
        .collect();
    tracing::info!(key_id = %cipher.current_key_id(), old_key_ids = ?old_key_ids, "encryption keys");
    let metrics = Metrics::new(config.process.metrics_max_operation_names);
    let db = open_database(&config, &metrics).await?;
    let feed = events::feed::EventFeed::new(db.clone(), config.events.feed_capacity).await?;
    let limits = Arc::new(limits::RateLimits::new(
        &config,
        db.notifier().rate_limits(),
    ));
    limits
        .reload(&db)
        .await
        .context("reading the accounts' rate limits")?;
    let services = workers::Services {
        db: db.clone(),
        cipher,
        outbound: connectors::http::Outbound::new(config.connectors.allow_private_targets)
            .with_request_rate(config.sync.requests_per_second),
        feed,
        limits,
        flow_metrics: metrics.flows.clone(),
        webhook_metrics: metrics.webhooks.clone(),
    };
    let workers = workers::start(
        &services,
        &config,
        metrics.worker_restarts.clone(),
        shutdown.clone(),
    );
    let app = http::router(api_state(
        services,
        metrics,
        workers.health(),
        config,
        shutdown.clone(),
    ));
    serve(listener, app, &shutdown).await?;
    workers.stop().await;
    db.close().await.context("closing the database")?;
    tracing::info!("stopped");
    Ok(())
}

/// Settings that work but are probably not what the operator meant.
fn warn_about(config: &Config) {
    let retrying: u64 = config.webhooks.retry_schedule.iter().sum();
    if retrying > config.events.retention_secs {
        tracing::warn!(
            retrying_secs = retrying,
            retention_secs = config.events.retention_secs,
            "webhook retries outlast the event retention: a late retry finds its event pruned and fails"
        );
    }
}

/// Connects (counting statements for `/metrics`) and migrates.
async fn open_database(config: &Config, metrics: &Metrics) -> anyhow::Result<Db> {
    let mut db = Db::connect(config)
        .await
        .context("connecting to the database")?;
    db.count_statements(metrics.db_statements.clone());
    db.migrate().await.context("migrating the database")?;
    Ok(db)
}

/// The API's shared state: the schema and what the HTTP layer needs beside it.
fn api_state(
    services: workers::Services,
    metrics: Metrics,
    workers: workers::WorkerHealth,
    config: Config,
    shutdown: CancellationToken,
) -> Arc<AppState> {
    let workers::Services {
        db,
        cipher,
        outbound,
        feed,
        limits,
        flow_metrics: _,
        webhook_metrics: _,
    } = services;
    let schema = graphql::build_schema(db.clone(), cipher, outbound, feed, &config);
    Arc::new(AppState {
        auth_cache: db.notifier().auth_cache(),
        db,
        schema,
        metrics,
        workers,
        limits,
        config,
        shutdown,
    })
}

/// Serves until `shutdown`; in-flight requests then get a grace period, so that a client that
/// never finishes reading cannot hold the process open.
async fn serve(
    listener: TcpListener,
    app: axum::Router,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    tracing::info!("listening on {}", listener.local_addr()?);
    // The client's address, for the rate limit of failed authentication.
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = server => served.context("serving HTTP")?,
        () = deadline => tracing::warn!("connections still open after the grace period; closing"),
    }
    shutdown.cancel();
    Ok(())
}

#[cfg(test)]
mod layering {
    use std::path::{Path, PathBuf};

    fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }

    /// The domain knows nothing of GraphQL, and resolvers hold no SQL: GraphQL lives in
    /// `graphql/` and the two edges, queries live in the domain.
    #[test]
    fn graphql_stays_in_its_layer_and_sql_in_the_domain() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&root, &mut files);
        assert!(files.len() > 20, "found {} source files", files.len());
        for file in files {
            let relative = file
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&file).unwrap();
            let edge = relative.starts_with("graphql/")
                || relative == "http.rs"
                || relative.starts_with("http/")
                || relative == "ws.rs";
            if !edge && relative != "lib.rs" {
                assert!(
                    !text.contains("async_graphql"),
                    "{relative} uses async_graphql"
                );
            }
            if relative.starts_with("graphql/") {
                for sql in [
                    "Entity::find",
                    "::Column::",
                    "Statement::",
                    "execute_unprepared",
                ] {
                    assert!(
                        !text.contains(sql),
                        "{relative} queries the database ({sql})"
                    );
                }
            }
        }
    }
}
