//! The demo system's simulated remote lives in the database: what it was written and how far
//! it has moved on survive a restart, every process on the database sees the same remote,
//! and a connect that fails leaves nothing of it behind.

use std::time::Duration;

use millwright::{
    catalog::{self, EntityType},
    connectors::{self, Connector, ReadRequest, WriteOperation, http::Outbound},
    db::Db,
    ids,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    connections::raw_rows,
    harness::{ServerProcess, TestApp, TestDb, connect, error_code, setup, test_config, wait_for},
    sync::last_run,
};

const CREDENTIALS: &str = r#"{ "api_key": "remote-test-key", "scale": 10 }"#;
const SETTINGS: &[(&str, &str)] = &[("MILLWRIGHT_SYNC_REQUESTS_PER_SECOND", "1000")];

fn credentials() -> Value {
    serde_json::from_str(CREDENTIALS).unwrap()
}

/// The connector another process would build for the demo connection `id`.
fn demo(db: &Db, id: Uuid) -> Box<dyn Connector> {
    connectors::connect(
        &catalog::DEMO,
        id,
        credentials().as_object().unwrap(),
        &Outbound::new(false),
        db,
    )
}

async fn write(
    connector: &dyn Connector,
    operation: WriteOperation,
    records: &[Value],
) -> Vec<String> {
    connector
        .write_batch(EntityType::Asset, operation, records)
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

/// An account, a customer and a demo connection (not probed) on `server`, whose first run has
/// ended: (API key, connection id as the API gives it).
async fn connected(server: &ServerProcess) -> (String, String) {
    let (key, customer) = server.account_and_customer(5).await;
    let input = json!({ "customerId": customer, "systemKey": "demo",
                        "credentials": credentials(), "validate": false });
    let data = server
        .gql(&key, "mutation($i: ConnectInput!) { connect(input: $i) { connection { id lastSyncRun { id } } } }", json!({ "i": input }))
        .await;
    let connection = data["connect"]["connection"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = data["connect"]["connection"]["lastSyncRun"]["id"]
        .as_str()
        .unwrap();
    assert_eq!(ended(server, &key, run).await["status"], "SUCCEEDED");
    (key, connection)
}

async fn ended(server: &ServerProcess, key: &str, run: &str) -> Value {
    let query = "query($id: ID!) { syncRun(id: $id) { status recordsAdded recordsUpdated recordsDeleted } }";
    wait_for(Duration::from_secs(30), "the run to end", async || {
        let run = server.gql(key, query, json!({ "id": run })).await["syncRun"].clone();
        (run["status"] != "QUEUED" && run["status"] != "RUNNING").then_some(run)
    })
    .await
}

async fn sync(server: &ServerProcess, key: &str, connection: &str, kind: &str) -> Value {
    let query = "mutation($id: ID!, $kind: SyncKind) { triggerSync(connectionId: $id, kind: $kind) { id } }";
    let data = server
        .gql(key, query, json!({ "id": connection, "kind": kind }))
        .await;
    let run = ended(server, key, data["triggerSync"]["id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    run
}

/// The connection's live assets: key and name.
async fn assets(server: &ServerProcess, key: &str, connection: &str) -> Vec<(String, String)> {
    let query = "query($c: ID!) { assets(connectionId: $c, first: 100) { nodes { key name } } }";
    let data = server.gql(key, query, json!({ "c": connection })).await;
    data["assets"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let text = |f: &str| a[f].as_str().unwrap().to_owned();
            (text("key"), text("name"))
        })
        .collect()
}

/// The server process and this test process each reach the same simulated remote, and a
/// server started after a crash finds it where it was: its generation, the records written
/// to it, and the numbering of the records created in it.
#[tokio::test]
async fn the_demo_remote_is_shared_by_processes_and_survives_a_restart() {
    let test_db = TestDb::new().await;
    let server = ServerProcess::start(&test_db.url, SETTINGS);
    let (key, connection) = connected(&server).await;
    let changed = sync(&server, &key, &connection, "INCREMENTAL").await;
    assert!(
        changed["recordsAdded"].as_i64().unwrap() >= 1,
        "the second session's generation: {changed}"
    );

    // This process sees the generation the server's sessions moved to.
    let db = Db::connect(&test_config(&test_db)).await.unwrap();
    let id = ids::decode(ids::Kind::Connection, &connection).unwrap();
    let remote = demo(&db, id);
    let request = ReadRequest {
        page_size: 100,
        ..Default::default()
    };
    let page = remote.read_page(EntityType::Asset, &request).await.unwrap();
    assert_eq!(page.high_water_mark.as_deref(), Some("g1.w0"));

    let created = write(
        remote.as_ref(),
        WriteOperation::Create,
        &[json!({"name": "Pump one"}), json!({"name": "Pump two"})],
    )
    .await;
    assert_eq!(created, ["AST-W000001", "AST-W000002"]);
    write(
        remote.as_ref(),
        WriteOperation::Update,
        &[json!({"key": "AST-000003", "name": "Renamed"})],
    )
    .await;
    write(
        remote.as_ref(),
        WriteOperation::Delete,
        &[json!({"key": "AST-000004"})],
    )
    .await;
    drop(remote);
    db.close().await.unwrap();

    server.kill();
    let server = ServerProcess::start(&test_db.url, SETTINGS);
    sync(&server, &key, &connection, "FULL").await;
    let assets = assets(&server, &key, &connection).await;
    let named = |k: &str| {
        assets
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, name)| name.as_str())
    };
    assert_eq!(named("AST-W000001"), Some("Pump one"), "{assets:?}");
    assert_eq!(named("AST-W000002"), Some("Pump two"), "{assets:?}");
    assert_eq!(named("AST-000003"), Some("Renamed"), "{assets:?}");
    assert_eq!(named("AST-000004"), None, "deleted: {assets:?}");
    assert_eq!(named("AST-000005"), Some("Asset 5"), "{assets:?}");

    // Numbers go on from the last write, whichever process writes next.
    let db = Db::connect(&test_config(&test_db)).await.unwrap();
    let created = write(
        demo(&db, id).as_ref(),
        WriteOperation::Create,
        &[json!({"name": "Pump three"})],
    )
    .await;
    assert_eq!(created, ["AST-W000005"], "four writes came before");
    db.close().await.unwrap();
}

/// Writers in several processes (each its own pool) at once: every created record gets a
/// number of its own, and no number is skipped.
#[tokio::test]
async fn concurrent_writers_in_several_processes_number_records_uniquely() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let input = json!({ "customerId": customer, "systemKey": "demo", "credentials": credentials(), "validate": false });
    let (connection, _) = connect(&app, &key, input).await;
    let id = ids::decode(ids::Kind::Connection, &connection).unwrap();
    let mut processes = Vec::new();
    for _ in 0..2 {
        processes.push(Db::connect(&test_config(&app.db)).await.unwrap());
    }
    let batch: Vec<Value> = (0..10)
        .map(|n| json!({ "name": format!("Pump {n}") }))
        .collect();
    let writers: Vec<_> = (0..6).map(|n| demo(&processes[n % 2], id)).collect();
    let outcomes = futures_util::future::join_all(
        writers
            .iter()
            .map(|w| w.write_batch(EntityType::Asset, WriteOperation::Create, &batch)),
    )
    .await;
    let mut keys: Vec<String> = outcomes
        .into_iter()
        .flat_map(Result::unwrap)
        .map(Result::unwrap)
        .collect();
    keys.sort();
    let expected: Vec<String> = (1..=60).map(|n| format!("AST-W{n:06}")).collect();
    assert_eq!(keys, expected);
    for db in processes {
        db.close().await.unwrap();
    }
}

/// A connect whose probe reached the remote but which then failed leaves no state, and a
/// disconnect takes the remote's state with it.
#[tokio::test]
async fn failed_connects_leave_no_state_and_a_disconnect_clears_it() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 1).await;
    const CONNECT: &str =
        "mutation($input: ConnectInput!) { connect(input: $input) { connection { id } } }";
    // Its probe is answered (the first request of a rate-limited remote passes), then the
    // connection costs more than the account holds.
    let costly = json!({ "customerId": customer, "systemKey": "demo", "deployment": "ON_PREMISES",
        "credentials": { "api_key": "k", "scale": 10, "simulate": "rate_limited" } });
    let body = app.gql(&key, CONNECT, json!({ "input": costly })).await;
    assert_eq!(error_code(&body), "INSUFFICIENT_CREDITS", "{body}");
    assert!(
        raw_rows(&app, "SELECT connection_id FROM demo_remotes")
            .await
            .is_empty()
    );

    let input =
        json!({ "customerId": customer, "systemKey": "demo", "credentials": credentials() });
    let (connection, _) = connect(&app, &key, input).await;
    last_run(&app, &key, &connection).await;
    let db = Db::connect(&test_config(&app.db)).await.unwrap();
    let id = ids::decode(ids::Kind::Connection, &connection).unwrap();
    write(
        demo(&db, id).as_ref(),
        WriteOperation::Create,
        &[json!({"name": "Pump"})],
    )
    .await;
    let rows = raw_rows(&app, "SELECT sessions, writes FROM demo_remotes").await;
    assert_eq!(rows, ["1 | 1"]);
    assert_eq!(
        raw_rows(&app, "SELECT key FROM demo_remote_records").await,
        ["AST-W000001"]
    );

    app.ok(
        &key,
        "mutation($id: ID!) { disconnect(id: $id) { id } }",
        json!({ "id": connection }),
    )
    .await;
    assert!(
        raw_rows(&app, "SELECT connection_id FROM demo_remotes")
            .await
            .is_empty()
    );
    assert!(
        raw_rows(&app, "SELECT key FROM demo_remote_records")
            .await
            .is_empty()
    );
    // A write that arrives after the disconnect is refused and stores nothing.
    let late = demo(&db, id)
        .write_batch(
            EntityType::Asset,
            WriteOperation::Create,
            &[json!({"name": "Late"})],
        )
        .await;
    assert!(late.is_err(), "{late:?}");
    assert!(
        raw_rows(&app, "SELECT connection_id FROM demo_remotes")
            .await
            .is_empty()
    );
    db.close().await.unwrap();
}
