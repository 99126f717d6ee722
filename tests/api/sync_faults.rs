//! Sync runs under faults: runs that keep failing end after `MILLWRIGHT_SYNC_MAX_ATTEMPTS`,
//! unreadable credentials end a run at once, a failing run stays cancellable, a stopping
//! server lets go of its runs, and writers of one connection never deadlock on PostgreSQL.

use std::time::{Duration, Instant};

use chrono::Utc;
use entity::{connection, sync_run};
use millwright::ids;
use sea_orm::{ColumnTrait, Database, DatabaseConnection, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    harness::{ServerProcess, TestApp, TestDb, connect, demo_input, setup, wait_for, wait_until},
    sync::trigger,
};

const RUN: &str = "query($id: ID!) { syncRun(id: $id) { id status error { code message } } }";
const CANCEL: &str =
    "mutation($id: ID!) { cancelSyncRun(id: $id) { id status error { code message } } }";

/// A server without workers, an account and a demo connection whose first run is queued:
/// (app, key, connection id, run id).
async fn queued() -> (TestApp, String, String, String) {
    let app = TestApp::spawn_with(|c| c.process.workers = false).await;
    let (key, customer) = setup(&app, 10).await;
    let (connection, _) = connect(&app, &key, demo_input(&customer, "none")).await;
    let query = "query($id: ID!) { connection(id: $id) { lastSyncRun { id status } } }";
    let data = app.ok(&key, query, json!({ "id": connection })).await;
    let run = &data["connection"]["lastSyncRun"];
    assert_eq!(run["status"], "QUEUED", "no workers: {run}");
    let run = run["id"].as_str().unwrap().to_owned();
    (app, key, connection, run)
}

async fn database(app: &TestApp) -> DatabaseConnection {
    Database::connect(&app.db.url).await.unwrap()
}

fn run_uuid(run: &str) -> Uuid {
    ids::decode(ids::Kind::SyncRun, run).unwrap()
}

async fn stored(db: &DatabaseConnection, run: &str) -> sync_run::Model {
    sync_run::Entity::find_by_id(run_uuid(run))
        .one(db)
        .await
        .unwrap()
        .unwrap()
}

/// Makes every attempt of the run fail unexpectedly: its stored counts no longer parse.
async fn break_run(db: &DatabaseConnection, run: &str) {
    sync_run::Entity::update_many()
        .col_expr(
            sync_run::Column::Stats,
            json!("not the counts of a run").into(),
        )
        .filter(sync_run::Column::Id.eq(run_uuid(run)))
        .exec(db)
        .await
        .unwrap();
}

/// Waits until the run has ended; returns it (without its counts, which may not parse).
async fn ended(app: &TestApp, key: &str, run: &str, within: Duration) -> Value {
    let what = format!("run {run} to end");
    wait_for(within, &what, async || {
        let data = app.ok(key, RUN, json!({ "id": run })).await;
        let run = data["syncRun"].clone();
        (!matches!(run["status"].as_str(), Some("QUEUED" | "RUNNING"))).then_some(run)
    })
    .await
}

async fn events(app: &TestApp, key: &str, kind: &str) -> Vec<Value> {
    let query =
        format!("{{ events(first: 50, filter: {{types: [{kind}]}}) {{ nodes {{ data }} }} }}");
    let data = app.ok(key, &query, json!({})).await;
    data["events"]["nodes"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_run_that_keeps_failing_ends_after_its_attempts_and_the_connection_syncs_again() {
    let (app, key, connection, run) = queued().await;
    let db = database(&app).await;
    break_run(&db, &run).await;
    let started = Instant::now();
    // The default 30 s lease: a failed attempt is retried after 1 s, then 2 s, not a lease.
    let _worker = app.another_with(|c| c.sync.max_attempts = 3).await;
    let failed = ended(&app, &key, &run, Duration::from_secs(30)).await;
    assert_eq!(
        (failed["status"].as_str(), failed["error"]["code"].as_str()),
        (Some("FAILED"), Some("MAX_ATTEMPTS")),
        "{failed}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "retried after backoffs, not after expired leases: {:?}",
        started.elapsed()
    );
    assert_eq!(stored(&db, &run).await.attempts, 3);
    let failures = events(&app, &key, "SYNC_FAILED").await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["data"]["error"]["code"], "MAX_ATTEMPTS");

    let next = trigger(&app, &key, &connection, "FULL").await;
    assert_eq!(
        next["status"], "SUCCEEDED",
        "the connection syncs again: {next}"
    );
    db.close().await.ok();
}

#[tokio::test]
async fn credentials_that_do_not_decrypt_end_the_run_at_once_and_ask_for_new_ones() {
    let (app, key, connection, run) = queued().await;
    let db = database(&app).await;
    connection::Entity::update_many()
        .col_expr(connection::Column::Credentials, Some(vec![7u8; 64]).into())
        .filter(connection::Column::Id.eq(ids::decode(ids::Kind::Connection, &connection).unwrap()))
        .exec(&db)
        .await
        .unwrap();
    let _worker = app.another().await;
    let failed = ended(&app, &key, &run, Duration::from_secs(10)).await;
    assert_eq!(
        (failed["status"].as_str(), failed["error"]["code"].as_str()),
        (Some("FAILED"), Some("CREDENTIALS_UNREADABLE")),
        "{failed}"
    );
    assert_eq!(stored(&db, &run).await.attempts, 1, "not retried");
    let query = "query($id: ID!) { connection(id: $id) { status statusReason } }";
    let data = app.ok(&key, query, json!({ "id": connection })).await;
    assert_eq!(data["connection"]["status"], "AUTH_REQUIRED", "{data}");
    let asked = events(&app, &key, "CONNECTION_AUTH_REQUIRED").await;
    assert_eq!(asked.len(), 1, "{asked:?}");

    // New credentials mend it.
    let update = "mutation($id: ID!, $c: JSON!) { updateConnectionCredentials(id: $id, credentials: $c) { status } }";
    let credentials = json!({ "api_key": "demo-secret-key-123", "scale": 10 });
    let data = app
        .ok(&key, update, json!({ "id": connection, "c": credentials }))
        .await;
    assert_eq!(data["updateConnectionCredentials"]["status"], "ONLINE");
    let next = trigger(&app, &key, &connection, "FULL").await;
    assert_eq!(next["status"], "SUCCEEDED", "{next}");
    db.close().await.ok();
}

#[tokio::test]
async fn a_failing_run_is_cancelled_while_it_waits_to_be_retried() {
    let (app, key, _, run) = queued().await;
    let db = database(&app).await;
    break_run(&db, &run).await;
    let _worker = app.another_with(|c| c.sync.max_attempts = 20).await;
    wait_until(
        Duration::from_secs(20),
        "the run to wait for its third attempt",
        async || {
            let now = stored(&db, &run).await;
            now.attempts >= 2 && now.locked_by.is_none()
        },
    )
    .await;
    app.ok(&key, CANCEL, json!({ "id": run })).await;
    let cancelled = ended(&app, &key, &run, Duration::from_secs(5)).await;
    assert_eq!(
        (
            cancelled["status"].as_str(),
            cancelled["error"]["code"].as_str()
        ),
        (Some("CANCELLED"), Some("CANCELLED")),
        "{cancelled}"
    );
    assert!(stored(&db, &run).await.attempts < 20);
    db.close().await.ok();
}

/// Marks the run as claimed by a worker of another process whose lease ends at `until`.
async fn claimed_elsewhere(db: &DatabaseConnection, run: &str, until: chrono::DateTime<Utc>) {
    claimed_elsewhere_after(db, run, until, 1).await;
}

/// [`claimed_elsewhere`], as the run's `attempts`-th attempt.
async fn claimed_elsewhere_after(
    db: &DatabaseConnection,
    run: &str,
    until: chrono::DateTime<Utc>,
    attempts: i32,
) {
    sync_run::Entity::update_many()
        .col_expr(sync_run::Column::Status, "RUNNING".into())
        .col_expr(sync_run::Column::LockedBy, Some("elsewhere-sync-0").into())
        .col_expr(sync_run::Column::LockedUntil, Some(until).into())
        .col_expr(sync_run::Column::Attempts, attempts.into())
        .filter(sync_run::Column::Id.eq(run_uuid(run)))
        .exec(db)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_run_nobody_executes_is_cancelled_at_once_and_a_held_one_when_taken_over() {
    // A run whose worker died (its lease has expired): nobody would see a request to stop.
    let (app, key, _, run) = queued().await;
    let db = database(&app).await;
    claimed_elsewhere(&db, &run, Utc::now() - chrono::Duration::seconds(1)).await;
    let data = app.ok(&key, CANCEL, json!({ "id": run })).await;
    assert_eq!(data["cancelSyncRun"]["status"], "CANCELLED", "{data}");

    // A run another process holds: asked to stop; whoever executes it next stops it.
    let (app, key, _, run) = queued().await;
    let db = database(&app).await;
    claimed_elsewhere(&db, &run, Utc::now() + chrono::Duration::seconds(2)).await;
    let data = app.ok(&key, CANCEL, json!({ "id": run })).await;
    assert_eq!(data["cancelSyncRun"]["status"], "RUNNING", "{data}");
    assert!(stored(&db, &run).await.cancel_requested);
    let _worker = app.another().await;
    let cancelled = ended(&app, &key, &run, Duration::from_secs(10)).await;
    assert_eq!(cancelled["error"]["code"], "CANCELLED", "{cancelled}");
    db.close().await.ok();
}

#[tokio::test]
async fn a_run_whose_process_died_at_every_attempt_is_given_up() {
    let (app, key, connection, run) = queued().await;
    let db = database(&app).await;
    // Its fifth attempt's process died too: the lease has expired.
    claimed_elsewhere_after(&db, &run, Utc::now() - chrono::Duration::seconds(1), 5).await;
    let _worker = app.another().await;
    let failed = ended(&app, &key, &run, Duration::from_secs(10)).await;
    assert_eq!(
        (failed["status"].as_str(), failed["error"]["code"].as_str()),
        (Some("FAILED"), Some("MAX_ATTEMPTS")),
        "{failed}"
    );
    let started = events(&app, &key, "SYNC_STARTED").await;
    assert!(started.is_empty(), "not executed again: {started:?}");
    let next = trigger(&app, &key, &connection, "FULL").await;
    assert_eq!(next["status"], "SUCCEEDED", "{next}");
    db.close().await.ok();
}

#[tokio::test]
async fn a_stopping_server_lets_go_of_its_run_and_another_takes_it_over_at_once() {
    // A 30 s lease, and a run of 8,000 records at 20 pages of 50 a second (8 s).
    let first = TestApp::spawn_with(|c| {
        c.sync.page_size = 50;
        c.sync.requests_per_second = 20;
    })
    .await;
    let (key, customer) = setup(&first, 10).await;
    let input = json!({ "customerId": customer, "systemKey": "demo", "validate": false,
        "credentials": { "api_key": "sync-test-key", "scale": 1000 } });
    let (connection, _) = connect(&first, &key, input).await;
    let db = database(&first).await;
    let query =
        "query($id: ID!) { connection(id: $id) { lastSyncRun { id status recordsAdded } } }";
    let run = wait_for(
        Duration::from_secs(10),
        "the run to be under way",
        async || {
            let data = first.ok(&key, query, json!({ "id": connection })).await;
            let run = data["connection"]["lastSyncRun"].clone();
            let under_way = run["status"] == "RUNNING" && run["recordsAdded"].as_i64() >= Some(500);
            under_way.then(|| run["id"].as_str().unwrap().to_owned())
        },
    )
    .await;
    let holder = stored(&db, &run).await.locked_by.unwrap();
    let second = first.another().await;
    first.stop().await;
    let stopped = Instant::now();
    wait_until(
        Duration::from_secs(10),
        "the second server to take the run over",
        async || {
            let now = stored(&db, &run).await;
            now.locked_by.is_some_and(|worker| worker != holder) || now.status.is_finished()
        },
    )
    .await;
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "well within the 30 s lease"
    );
    let done = ended(&second, &key, &run, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    let data = second
        .ok(
            &key,
            "query($id: ID!) { syncRun(id: $id) { recordsAdded } }",
            json!({ "id": run }),
        )
        .await;
    assert_eq!(data["syncRun"]["recordsAdded"], 8000, "every record once");
    assert_eq!(
        stored(&db, &run).await.attempts,
        2,
        "the first attempt, and the second server's"
    );
    let started = events(&second, &key, "SYNC_STARTED").await;
    assert_eq!(started.len(), 1, "one run, started once: {started:?}");
    db.close().await.ok();
}

/// Posts `query` to the server process; returns the whole response body.
async fn post(
    http: &reqwest::Client,
    addr: &str,
    token: &str,
    query: &str,
    variables: Value,
) -> Value {
    http.post(format!("http://{addr}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON")
}

/// Connections that connect, sync, are checked and disconnect, all at once, over and over,
/// while health checks probe them every second: on PostgreSQL every transaction takes the
/// connection's row before its runs' and the event log's, so none deadlocks (40P01) and no
/// request fails `INTERNAL`.
#[tokio::test]
async fn disconnects_and_checks_racing_finishing_syncs_never_deadlock() {
    let db = TestDb::new().await;
    let settings = [
        ("MILLWRIGHT_SYNC_WORKERS", "4"),
        ("MILLWRIGHT_SYNC_PAGE_SIZE", "10"),
        ("MILLWRIGHT_SYNC_REQUESTS_PER_SECOND", "1000"),
        ("MILLWRIGHT_SYNC_RETRIES", "0"),
        ("MILLWRIGHT_HEALTH_CHECK_INTERVAL_SECS", "1"),
        ("MILLWRIGHT_API_REQUESTS_PER_SECOND", "100000"),
        ("MILLWRIGHT_API_BURST", "100000"),
    ];
    let server = ServerProcess::start(&db.url, &settings);
    let (key, customer) = server.account_and_customer(100).await;
    let http = reqwest::Client::new();
    let (addr, key) = (server.addr.as_str(), key.as_str());
    let connect = "mutation($i: ConnectInput!) { connect(input: $i) { connection { id } } }";
    let check = "mutation($id: ID!) { checkConnection(id: $id) { status } }";
    let sync = "mutation($id: ID!) { triggerSync(connectionId: $id, kind: FULL) { id } }";
    let disconnect = "mutation($id: ID!) { disconnect(id: $id) { status } }";
    let mut answers = Vec::new();
    for _ in 0..10 {
        // Connections of 80 records (8 pages) whose runs succeed, and others whose runs fail
        // at once, changing the connection's status (and its reason, which a check then
        // changes back): both record events while they hold their locks.
        let connects = ["none", "none", "auth_expired", "offline"].map(|simulate| {
            let input = json!({ "customerId": customer, "systemKey": "demo", "validate": false,
                "credentials": { "api_key": "lock-order-key", "scale": 10, "simulate": simulate } });
            post(&http, addr, key, connect, json!({ "i": input }))
        });
        let connected = futures_util::future::join_all(connects).await;
        let ids: Vec<Value> = connected
            .iter()
            .map(|body| {
                let id = &body["data"]["connect"]["connection"]["id"];
                assert!(id.is_string(), "connect failed: {body}");
                json!({ "id": id })
            })
            .collect();
        let busy = ids.iter().map(|id| async {
            let mut seen = Vec::new();
            for _ in 0..4 {
                seen.push(post(&http, addr, key, sync, id.clone()).await);
                seen.push(post(&http, addr, key, check, id.clone()).await);
            }
            seen
        });
        answers.extend(futures_util::future::join_all(busy).await.concat());
        let ends = ids.iter().flat_map(|id| {
            [
                post(&http, addr, key, disconnect, id.clone()),
                post(&http, addr, key, check, id.clone()),
            ]
        });
        answers.extend(futures_util::future::join_all(ends).await);
    }
    let conn = Database::connect(&db.url).await.unwrap();
    wait_until(Duration::from_secs(30), "every run to end", async || {
        let open = sync_run::Entity::find()
            .filter(sync_run::Column::Status.is_in(["QUEUED", "RUNNING"]))
            .all(&conn)
            .await
            .unwrap();
        open.is_empty()
    })
    .await;
    conn.close().await.ok();
    let errors = server.errors();
    assert!(errors.is_empty(), "the server logged errors: {errors:#?}");
    let logs = server.logs.lock().unwrap().join("\n");
    assert!(
        !logs.contains("40P01") && !logs.contains("deadlock"),
        "a deadlock"
    );
    for body in &answers {
        if let Some(errors) = body.get("errors") {
            // A check or a sync of a connection already disconnected is a conflict.
            let code = &errors[0]["extensions"]["code"];
            assert_eq!(code, "CONFLICT", "{body}");
        }
    }
}
