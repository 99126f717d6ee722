//! The server under faults an operator meets: a background worker that keeps failing, and
//! several processes starting at once on an empty database.

use std::time::Duration;

use migration::MigratorTrait;
use sea_orm::{ConnectionTrait, Statement};

use crate::harness::{ServerProcess, TestApp, TestDb, wait_for};

/// The value of `millwright_worker_restarts_total` for `worker` on a `/metrics` page.
fn restarts(metrics: &str, worker: &str) -> Option<u64> {
    let series = format!("millwright_worker_restarts_total{{worker=\"{worker}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn a_worker_that_keeps_failing_is_restarted_counted_and_named_by_readyz() {
    // A testing-only knob (no setting reads it): the sync workers panic each time they start.
    let app = TestApp::spawn_with(|c| c.testing.panic_in_worker = Some("sync-runs")).await;
    let body = wait_for(
        Duration::from_secs(30),
        "/readyz to name the failing worker",
        async || {
            let response = app.http.get(app.url("/readyz")).send().await.ok()?;
            let status = response.status().as_u16();
            let body = response.text().await.ok()?;
            (status == 503).then_some(body)
        },
    )
    .await;
    assert!(
        body.contains(
            "worker sync-runs keeps failing (3 failures in a row; last: panicked: injected failure"
        ),
        "{body}"
    );
    assert_eq!(body.lines().count(), 1, "only the failing worker: {body}");

    let metrics = app.metrics().await;
    let sync_restarts = restarts(&metrics, "sync-runs").expect("a series for sync-runs");
    assert!(sync_restarts >= 2, "{metrics}");
    assert_eq!(restarts(&metrics, "event-feed"), Some(0), "{metrics}");
    assert_eq!(restarts(&metrics, "webhook-delivery"), Some(0), "{metrics}");

    // The API still serves, and shutdown stops the worker waiting out its backoff at once.
    app.create_account("A", 0).await;
    tokio::time::timeout(Duration::from_secs(15), app.stop())
        .await
        .expect("the server stopped promptly");
}

/// PostgreSQL only: SQLite is one process's file.
#[tokio::test]
async fn four_processes_started_at_once_on_an_empty_database_all_come_up() {
    let Some(db) = TestDb::empty_postgres().await else {
        return;
    };
    let settings = [("MILLWRIGHT_DATABASE_MAX_CONNECTIONS", "3")];
    let servers: Vec<ServerProcess> = std::thread::scope(|scope| {
        let starting: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| ServerProcess::start(&db.url, &settings)))
            .collect();
        starting
            .into_iter()
            .map(|started| started.join().expect("every process started"))
            .collect()
    });
    for server in &servers {
        let ready = reqwest::get(format!("http://{}/readyz", server.addr))
            .await
            .unwrap();
        assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    }
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    let applied: i64 = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT COUNT(*) AS n FROM seaql_migrations",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "n")
        .unwrap();
    let migrations = migration::Migrator::migrations().len();
    assert_eq!(applied, migrations as i64, "each migration applied once");
    conn.close().await.ok();
}
