//! The server under faults an operator meets: a background worker that keeps failing, and
//! several processes starting at once on an empty database.

use std::time::Duration;

use migration::MigratorTrait;
use sea_orm::{ConnectionTrait, Statement};

use serde_json::json;

use crate::harness::{ServerProcess, TestApp, TestDb, connect, demo_input, setup, wait_for};

/// The value of `millwright_worker_restarts_total` for `worker` on a `/metrics` page.
fn restarts(metrics: &str, worker: &str) -> Option<u64> {
    let series = format!("millwright_worker_restarts_total{{worker=\"{worker}\"}}");
    crate::harness::metric_value(metrics, &series)
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

/// The migrations this release added, newest first: a database of the previous release is
/// one without them.
const THIS_RELEASE: [&str; 6] = [
    "m20261206_000050_webhook_workers",
    "m20261206_000040_credit_movement_function",
    "m20261206_000030_deferred_connection_account_fk",
    "m20261206_000020_credit_pool_check",
    "m20261206_000010_event_log_order",
    "m20261205_000060_flows",
];

/// The last sync run of `connection` once it has ended: its status.
async fn ended_run(app: &TestApp, key: &str, connection: &str) -> String {
    let query = "query($id: ID!) { connection(id: $id) { lastSyncRun { id status } } }";
    wait_for(Duration::from_secs(30), "the sync run to end", async || {
        let data = app.ok(key, query, json!({ "id": connection })).await;
        let status = data["connection"]["lastSyncRun"]["status"]
            .as_str()?
            .to_owned();
        (status != "QUEUED" && status != "RUNNING").then_some(status)
    })
    .await
}

/// A database the previous release wrote (customers, a synced demo connection, its records,
/// runs and events, a disconnected connection) keeps working once this release migrates it:
/// its rows are carried forward, the connection syncs again, credits stay exact, and the
/// new workers (cleanup, retention) run over the old rows.
#[tokio::test]
async fn a_database_of_the_previous_release_is_carried_forward() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let (live, _) = connect(&app, &key, demo_input(&customer, "none")).await;
    let (gone, _) = connect(&app, &key, demo_input(&customer, "none")).await;
    assert_eq!(ended_run(&app, &key, &live).await, "SUCCEEDED");
    assert_eq!(ended_run(&app, &key, &gone).await, "SUCCEEDED");
    let disconnect = "mutation($id: ID!) { disconnect(id: $id) { status } }";
    app.ok(&key, disconnect, json!({ "id": gone })).await;
    let read = "query($c: ID!) { viewer { account { credits { total used available } } }
        customers(first: 10) { nodes { id name } }
        assets(connectionId: $c, first: 100) { nodes { key } } }";
    let on = json!({ "c": live });
    let before = app.ok(&key, read, on.clone()).await;
    assert!(!before["assets"]["nodes"].as_array().unwrap().is_empty());
    // A client's place in the event log, as the previous release gave it.
    let events = "query($after: String) { events(first: 100, after: $after) {
        edges { cursor node { id type } } } }";
    let old = app.ok(&key, events, json!({ "after": null })).await["events"]["edges"].clone();
    let old = old.as_array().unwrap().clone();
    assert!(old.len() > 2);
    // The previous release's cursors named a position only (`e1:`).
    let cursor = millwright::events::decode_cursor(old[1]["cursor"].as_str().unwrap()).unwrap();
    let cursor_position = cursor.position;
    let cursor = millwright::events::encode_cursor(millwright::events::LogPosition {
        txid: 0,
        position: cursor_position,
    });

    // The database as the previous release left it: this release's migrations reverted.
    let db = app.into_db().await;
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    migration::Migrator::down(&conn, Some(THIS_RELEASE.len() as u32))
        .await
        .unwrap();
    for version in THIS_RELEASE {
        let applied = conn
            .query_one_raw(Statement::from_string(
                conn.get_database_backend(),
                format!("SELECT version FROM seaql_migrations WHERE version = '{version}'"),
            ))
            .await
            .unwrap();
        assert!(applied.is_none(), "{version} was reverted");
    }
    conn.close().await.unwrap();

    // This release starts on it and migrates it.
    let upgraded = TestApp::on(db).await;
    assert_eq!(upgraded.ok(&key, read, on.clone()).await, before);
    // The old cursor still reads on: the old events after it, then the new ones.
    let grant = "mutation($id: ID!) { grantCredits(accountId: $id, amount: 1) { total } }";
    let account = upgraded
        .ok(&key, "{ viewer { account { id } } }", json!({}))
        .await;
    let account = account["viewer"]["account"]["id"].clone();
    upgraded
        .ok(crate::harness::ADMIN_TOKEN, grant, json!({ "id": account }))
        .await;
    let after =
        upgraded.ok(&key, events, json!({ "after": cursor })).await["events"]["edges"].clone();
    let after = after.as_array().unwrap();
    let ids = |edges: &[serde_json::Value]| -> Vec<serde_json::Value> {
        edges.iter().map(|e| e["node"]["id"].clone()).collect()
    };
    // The previous release read in position order (its positions followed the commits); the
    // events this test stored for it were written by this release, whose positions do not,
    // so what follows the cursor is taken by position.
    let at = |edge: &serde_json::Value| {
        millwright::events::decode_cursor(edge["cursor"].as_str().unwrap())
            .unwrap()
            .position
    };
    let mut expected: Vec<serde_json::Value> = old
        .iter()
        .filter(|e| at(e) > cursor_position)
        .cloned()
        .collect();
    expected.sort_by_key(at);
    assert_eq!(ids(&after[..expected.len()]), ids(&expected));
    assert_eq!(
        after.len(),
        expected.len() + 1,
        "the grant's event comes last"
    );
    assert_eq!(after.last().unwrap()["node"]["type"], "CREDITS_CHANGED");
    // A connection that sent every event type of the previous release sends the new ones.
    let types = "query($c: ID!) { connection(id: $c) { webhookEventTypes } }";
    let types =
        upgraded.ok(&key, types, on.clone()).await["connection"]["webhookEventTypes"].clone();
    assert!(
        types.as_array().unwrap().contains(&json!("FLOW_TRIGGERED")),
        "{types}"
    );
    let sync = "mutation($id: ID!) { triggerSync(connectionId: $id, kind: FULL) { id } }";
    upgraded.ok(&key, sync, json!({ "id": live })).await;
    assert_eq!(ended_run(&upgraded, &key, &live).await, "SUCCEEDED");
    upgraded.ok(&key, disconnect, json!({ "id": live })).await;
    let credits = upgraded.ok(&key, read, on).await["viewer"]["account"]["credits"].clone();
    assert_eq!(credits, json!({ "total": 11, "used": 0, "available": 11 }));
}
