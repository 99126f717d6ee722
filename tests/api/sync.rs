//! Sync runs against the demo system: full and incremental counts, deletion detection,
//! remote faults, cancel, schedules, record queries.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use entity::record;
use millwright::{
    catalog::EntityType,
    connectors::{ConnectorError, ReadRequest, RemotePage, RemoteRecord, WriteReply, WriteRequest},
    db::Db,
    ids, records,
};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{TestApp, connect, error_code, setup, test_config, wait_for, wait_until};

pub(crate) const RUN_FIELDS: &str =
    "id status kind trigger recordsAdded recordsUpdated recordsDeleted
    entities { entity added updated deleted unchanged skipped rateLimited } error { code message }";

fn input(customer: &str, scale: u64, simulate: &str) -> Value {
    json!({ "customerId": customer, "systemKey": "demo",
            "credentials": { "api_key": "sync-test-key", "scale": scale, "simulate": simulate } })
}

/// Waits until the run has ended; returns it.
pub(crate) async fn finished(app: &TestApp, key: &str, run_id: &str) -> Value {
    let query = format!("query($id: ID!) {{ syncRun(id: $id) {{ {RUN_FIELDS} }} }}");
    let what = format!("run {run_id} to end");
    wait_for(Duration::from_secs(30), &what, async || {
        let run = app.ok(key, &query, json!({ "id": run_id })).await["syncRun"].clone();
        let ended = matches!(
            run["status"].as_str(),
            Some("SUCCEEDED" | "FAILED" | "CANCELLED")
        );
        ended.then_some(run)
    })
    .await
}

/// Waits until the run is running (it has started reading the remote).
async fn running(app: &TestApp, key: &str, run_id: &str) {
    let what = format!("run {run_id} to start");
    wait_until(Duration::from_secs(10), &what, async || {
        run_progress(app, key, run_id).await["status"] == "RUNNING"
    })
    .await;
}

pub(crate) async fn last_run(app: &TestApp, key: &str, connection: &str) -> Value {
    let query =
        format!("query($id: ID!) {{ connection(id: $id) {{ lastSyncRun {{ {RUN_FIELDS} }} }} }}");
    let data = app.ok(key, &query, json!({ "id": connection })).await;
    let run = data["connection"]["lastSyncRun"].clone();
    finished(app, key, run["id"].as_str().unwrap()).await
}

pub(crate) async fn trigger(app: &TestApp, key: &str, connection: &str, kind: &str) -> Value {
    let query = "mutation($id: ID!, $kind: SyncKind) { triggerSync(connectionId: $id, kind: $kind) { id } }";
    let data = app
        .ok(key, query, json!({ "id": connection, "kind": kind }))
        .await;
    finished(app, key, data["triggerSync"]["id"].as_str().unwrap()).await
}

async fn count_assets(app: &TestApp, key: &str, connection: &str, include_deleted: bool) -> usize {
    let mut total = 0;
    let mut after: Option<String> = None;
    loop {
        let data = app
            .ok(key, "query($c: ID!, $after: String, $d: Boolean) { assets(connectionId: $c, first: 100, after: $after, includeDeleted: $d) {
                nodes { key } pageInfo { hasNextPage endCursor } } }", json!({ "c": connection, "after": after, "d": include_deleted }))
            .await;
        total += data["assets"]["nodes"].as_array().unwrap().len();
        if data["assets"]["pageInfo"]["hasNextPage"] == false {
            return total;
        }
        after = data["assets"]["pageInfo"]["endCursor"]
            .as_str()
            .map(str::to_owned);
    }
}

pub(crate) fn entity<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["entities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["entity"] == name)
        .unwrap()
}

#[tokio::test]
async fn full_then_incremental_runs_have_exact_counts() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let (connection, _) = connect(&app, &key, input(&customer, 1000, "none")).await;
    let first = last_run(&app, &key, &connection).await;
    assert_eq!(
        (
            first["status"].as_str(),
            first["kind"].as_str(),
            first["trigger"].as_str()
        ),
        (Some("SUCCEEDED"), Some("FULL"), Some("CONNECT"))
    );
    assert_eq!(
        first["recordsAdded"], 8000,
        "8 entity types of 1,000 records"
    );
    assert_eq!(entity(&first, "ASSET")["added"], 1000);
    assert_eq!(count_assets(&app, &key, &connection, false).await, 1000);

    let incremental = trigger(&app, &key, &connection, "INCREMENTAL").await;
    assert_eq!(incremental["status"], "SUCCEEDED", "{incremental}");
    let assets = entity(&incremental, "ASSET").clone();
    assert_eq!(
        assets["added"], 2,
        "the demo adds scale/500 records per generation"
    );
    let changed = incremental["recordsUpdated"].as_i64().unwrap()
        + incremental["recordsDeleted"].as_i64().unwrap();
    assert!(
        (20..=300).contains(&changed),
        "about 1 % of 8,000 changed: {incremental}"
    );
    assert_eq!(
        assets["unchanged"], 0,
        "an incremental run reads only what changed"
    );
    let live = 1000 + 2 - assets["deleted"].as_i64().unwrap() as usize;
    assert_eq!(count_assets(&app, &key, &connection, false).await, live);
    assert_eq!(count_assets(&app, &key, &connection, true).await, 1002);

    // A twin connection (same credentials, so the same simulated remote) synced FULL twice
    // reaches the same remote state: the same changes counted, the same records stored.
    let (twin, _) = connect(&app, &key, input(&customer, 1000, "none")).await;
    last_run(&app, &key, &twin).await;
    let full = trigger(&app, &key, &twin, "FULL").await;
    for field in ["recordsAdded", "recordsUpdated", "recordsDeleted"] {
        assert_eq!(
            full[field], incremental[field],
            "{field}: full {full} incremental {incremental}"
        );
    }
    assert_eq!(
        asset_snapshot(&app, &key, &twin).await,
        asset_snapshot(&app, &key, &connection).await
    );
}

/// Every live asset's key and description, by key.
async fn asset_snapshot(app: &TestApp, key: &str, connection: &str) -> Vec<(String, String)> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let data = app
            .ok(key, "query($c: ID!, $after: String) { assets(connectionId: $c, first: 100, after: $after) {
                nodes { key description } pageInfo { hasNextPage endCursor } } }", json!({ "c": connection, "after": after }))
            .await;
        for node in data["assets"]["nodes"].as_array().unwrap() {
            all.push((
                node["key"].as_str().unwrap().to_owned(),
                node["description"].as_str().unwrap().to_owned(),
            ));
        }
        if data["assets"]["pageInfo"]["hasNextPage"] == false {
            all.sort();
            return all;
        }
        after = data["assets"]["pageInfo"]["endCursor"]
            .as_str()
            .map(str::to_owned);
    }
}

#[tokio::test]
async fn full_runs_detect_deletions() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let (connection, _) = connect(&app, &key, input(&customer, 1000, "none")).await;
    last_run(&app, &key, &connection).await;
    let full = trigger(&app, &key, &connection, "FULL").await;
    let deleted = full["recordsDeleted"].as_i64().unwrap();
    assert!(
        deleted > 0,
        "records the remote no longer has are marked deleted: {full}"
    );
    // The deleted records are kept, marked, and shown only with includeDeleted.
    let most = full["entities"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|e| e["deleted"].as_u64())
        .unwrap();
    let (name, gone) = (
        most["entity"].as_str().unwrap(),
        most["deleted"].as_u64().unwrap(),
    );
    assert!(gone > 0, "{full}");
    let (all, marked) = count_records(&app, &key, &connection, name, true).await;
    let (live, none) = count_records(&app, &key, &connection, name, false).await;
    assert_eq!(
        (all - live, marked, none),
        (gone, gone, 0),
        "{name}: {full}"
    );
}

/// The connection's records of `entity`: how many, and how many of them carry `deletedAt`.
async fn count_records(
    app: &TestApp,
    key: &str,
    connection: &str,
    entity: &str,
    include_deleted: bool,
) -> (u64, u64) {
    let (mut total, mut marked) = (0, 0);
    let mut after: Option<String> = None;
    loop {
        let data = app
            .ok(key, &format!("query($c: ID!, $after: String, $d: Boolean) {{ records(connectionId: $c, entity: {entity}, first: 100, after: $after, includeDeleted: $d) {{
                nodes {{ deletedAt }} pageInfo {{ hasNextPage endCursor }} }} }}"), json!({ "c": connection, "after": after, "d": include_deleted }))
            .await;
        let nodes = data["records"]["nodes"].as_array().unwrap();
        total += nodes.len() as u64;
        marked += nodes.iter().filter(|n| !n["deletedAt"].is_null()).count() as u64;
        if data["records"]["pageInfo"]["hasNextPage"] == false {
            return (total, marked);
        }
        after = data["records"]["pageInfo"]["endCursor"]
            .as_str()
            .map(str::to_owned);
    }
}

#[tokio::test]
async fn records_are_served_with_relations_and_scoped() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let (connection, token) = connect(&app, &key, input(&customer, 60, "none")).await;
    last_run(&app, &key, &connection).await;
    let data = app
        .ok(&token, "{ assets(first: 5) { nodes { key name serialNumber siteKey site { key name } location { name } parent { key } }
            pageInfo { hasNextPage } } workOrders(first: 2) { nodes { title status asset { key name } } } }", json!({}))
        .await;
    let asset = &data["assets"]["nodes"][0];
    assert!(asset["name"].as_str().unwrap().starts_with("Asset "));
    assert_eq!(asset["site"]["key"], asset["siteKey"]);
    assert!(asset["location"]["name"].is_string());
    assert_eq!(data["assets"]["pageInfo"]["hasNextPage"], true);
    assert!(data["workOrders"]["nodes"][0]["asset"]["name"].is_string());

    // Records, runs and events are nodes too, for the token and for the account key.
    let data = app.ok(&token, "{ assets(first: 1) { nodes { id key } } viewer { connection { lastSyncRun { id } } } events(first: 1) { nodes { id } } }", json!({})).await;
    let ids = [
        data["assets"]["nodes"][0]["id"].clone(),
        data["viewer"]["connection"]["lastSyncRun"]["id"].clone(),
        data["events"]["nodes"][0]["id"].clone(),
    ];
    for id in &ids {
        for caller in [&token, &key] {
            let found = app
                .ok(
                    caller,
                    "query($id: ID!) { node(id: $id) { id } }",
                    json!({ "id": id }),
                )
                .await;
            assert_eq!(&found["node"]["id"], id);
        }
    }
    let found = app
        .ok(
            &token,
            "query($id: ID!) { node(id: $id) { ... on Asset { name } } }",
            json!({ "id": ids[0] }),
        )
        .await;
    assert!(found["node"]["name"].is_string());
    let body = app
        .gql(&key, "{ assets(first: 1) { nodes { key } } }", json!({}))
        .await;
    assert_eq!(
        error_code(&body),
        "BAD_USER_INPUT",
        "an account key names the connection"
    );
    let (_, other) = app.create_account("Other", 0).await;
    let body = app
        .gql(
            &other,
            "query($c: ID!) { assets(connectionId: $c) { nodes { key } } }",
            json!({ "c": connection }),
        )
        .await;
    assert_eq!(error_code(&body), "NOT_FOUND");
    for entity in [
        "SITE",
        "LOCATION",
        "PART",
        "PURCHASE_ORDER",
        "VENDOR",
        "USER",
    ] {
        let data = app
            .ok(&token, "query($e: EntityType!) { records(entity: $e, first: 1) { nodes { __typename key entity data } } }", json!({ "e": entity }))
            .await;
        assert_eq!(data["records"]["nodes"][0]["entity"], entity);
    }
}

#[tokio::test]
async fn rejected_credentials_fail_the_run_and_stop_schedules() {
    let app = TestApp::spawn_with(|c| c.testing.schedule_minute = Duration::from_secs(1)).await;
    let (key, customer) = setup(&app, 10).await;
    let mut connect_input = input(&customer, 10, "auth_expired");
    connect_input["validate"] = json!(false);
    connect_input["syncIntervalMinutes"] = json!(1);
    let (connection, _) = connect(&app, &key, connect_input).await;
    let run = last_run(&app, &key, &connection).await;
    assert_eq!(
        (run["status"].as_str(), run["error"]["code"].as_str()),
        (Some("FAILED"), Some("AUTH_REQUIRED"))
    );
    let data = app
        .ok(
            &key,
            "query($id: ID!) { connection(id: $id) { status syncRuns { nodes { id } } } }",
            json!({ "id": connection }),
        )
        .await;
    assert_eq!(data["connection"]["status"], "AUTH_REQUIRED");
    // A healthy connection on the same schedule: its scheduled runs show the scheduler's
    // passes, each of which also had the chance to run the rejected one.
    let mut witness_input = input(&customer, 5, "none");
    witness_input["syncIntervalMinutes"] = json!(1);
    let (witness, _) = connect(&app, &key, witness_input).await;
    let passes = "two scheduled runs of the healthy connection";
    wait_until(Duration::from_secs(20), passes, async || {
        let triggers = triggers(&app, &key, &witness).await;
        triggers.iter().filter(|t| *t == "SCHEDULE").count() >= 2
    })
    .await;
    let data = app
        .ok(
            &key,
            "query($id: ID!) { connection(id: $id) { syncRuns { nodes { id } } } }",
            json!({ "id": connection }),
        )
        .await;
    assert_eq!(
        data["connection"]["syncRuns"]["nodes"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "no scheduled runs while AUTH_REQUIRED"
    );
}

#[tokio::test]
async fn an_unreachable_remote_fails_the_run_offline() {
    let app = TestApp::spawn_with(|c| c.sync.retries = 1).await;
    let (key, customer) = setup(&app, 10).await;
    let mut connect_input = input(&customer, 10, "offline");
    connect_input["validate"] = json!(false);
    let (connection, _) = connect(&app, &key, connect_input).await;
    let run = last_run(&app, &key, &connection).await;
    assert_eq!(run["error"]["code"], "OFFLINE");
    let data = app
        .ok(
            &key,
            "query($id: ID!) { connection(id: $id) { status } }",
            json!({ "id": connection }),
        )
        .await;
    assert_eq!(data["connection"]["status"], "OFFLINE");
}

#[tokio::test]
async fn rate_limits_and_flaky_remotes_are_ridden_out() {
    let app = TestApp::spawn_with(|c| c.sync.page_size = 100).await;
    let (key, customer) = setup(&app, 10).await;
    let (flaky, _) = connect(&app, &key, input(&customer, 150, "flaky")).await;
    let (limited, _) = connect(&app, &key, input(&customer, 5, "rate_limited")).await;
    let run = last_run(&app, &key, &flaky).await;
    assert_eq!(
        (run["status"].clone(), run["recordsAdded"].clone()),
        (json!("SUCCEEDED"), json!(1200)),
        "{run}"
    );
    let run = last_run(&app, &key, &limited).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let waited: i64 = run["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["rateLimited"].as_i64().unwrap())
        .sum();
    assert!(waited > 0, "429s were waited out and counted: {run}");
}

/// A server whose syncs are slow (20 pages of 50 a second) and a connection whose first
/// run (40,000 records) has just been queued: (app, account key, connection id).
async fn long_sync() -> (TestApp, String, String) {
    let app = TestApp::spawn_with(|c| {
        c.sync.page_size = 50;
        c.sync.requests_per_second = 20;
    })
    .await;
    let (key, customer) = setup(&app, 10).await;
    let mut connect_input = input(&customer, 5000, "none");
    connect_input["validate"] = json!(false);
    let (connection, _) = connect(&app, &key, connect_input).await;
    (app, key, connection)
}

#[tokio::test]
async fn a_running_sync_can_be_cancelled_and_a_second_trigger_returns_it() {
    let (app, key, connection) = long_sync().await;
    let query = "mutation($id: ID!) { triggerSync(connectionId: $id, kind: FULL) { id trigger } }";
    let again = app.ok(&key, query, json!({ "id": connection })).await;
    assert_eq!(
        again["triggerSync"]["trigger"], "CONNECT",
        "the queued or running run is returned"
    );
    let id = again["triggerSync"]["id"].as_str().unwrap().to_owned();
    running(&app, &key, &id).await;
    app.ok(
        &key,
        "mutation($id: ID!) { cancelSyncRun(id: $id) { id } }",
        json!({ "id": id }),
    )
    .await;
    let run = finished(&app, &key, &id).await;
    assert_eq!(run["status"], "CANCELLED");
    assert!(run["recordsAdded"].as_i64().unwrap() < 40_000);
}

#[tokio::test]
async fn a_disconnect_stops_the_running_sync() {
    let (app, key, connection) = long_sync().await;
    let query = "query($id: ID!) { connection(id: $id) { lastSyncRun { id } } }";
    let data = app.ok(&key, query, json!({ "id": connection })).await;
    let run = data["connection"]["lastSyncRun"]["id"].as_str().unwrap();
    running(&app, &key, run).await;
    app.ok(
        &key,
        "mutation($id: ID!) { disconnect(id: $id) { status } }",
        json!({ "id": connection }),
    )
    .await;
    let run = last_run(&app, &key, &connection).await;
    assert_eq!(run["status"], "CANCELLED", "{run}");
    assert_eq!(run["error"]["code"], "DISCONNECTED", "{run}");
    assert!(run["recordsAdded"].as_i64().unwrap() < 40_000, "{run}");
}

#[tokio::test]
async fn a_queued_run_cancelled_says_so_on_the_run_and_its_event() {
    let app = TestApp::spawn_with(|c| c.process.workers = false).await;
    let (key, customer) = setup(&app, 10).await;
    let (connection, _) = connect(&app, &key, input(&customer, 5, "none")).await;
    let data = app
        .ok(
            &key,
            "query($id: ID!) { connection(id: $id) { lastSyncRun { id status } } }",
            json!({ "id": connection }),
        )
        .await;
    let run = &data["connection"]["lastSyncRun"];
    assert_eq!(run["status"], "QUEUED", "no workers: {run}");
    let cancel = format!("mutation($id: ID!) {{ cancelSyncRun(id: $id) {{ {RUN_FIELDS} }} }}");
    let cancelled =
        app.ok(&key, &cancel, json!({ "id": run["id"] })).await["cancelSyncRun"].clone();
    assert_eq!(cancelled["status"], "CANCELLED");
    assert_eq!(cancelled["error"]["code"], "CANCELLED", "{cancelled}");
    assert_eq!(sync_failed_codes(&app, &key).await, ["CANCELLED"]);
    // A second cancel of the finished run changes nothing.
    let again = app.ok(&key, &cancel, json!({ "id": run["id"] })).await["cancelSyncRun"].clone();
    assert_eq!(again, cancelled);
}

/// A disconnect ends the connection's queued run itself, at once: no worker has to claim it.
#[tokio::test]
async fn a_disconnect_ends_the_queued_run_at_once() {
    let app = TestApp::spawn_with(|c| c.process.workers = false).await;
    let (key, customer) = setup(&app, 10).await;
    let (connection, _) = connect(&app, &key, input(&customer, 5, "none")).await;
    let query =
        format!("query($id: ID!) {{ connection(id: $id) {{ lastSyncRun {{ {RUN_FIELDS} }} }} }}");
    let data = app.ok(&key, &query, json!({ "id": connection })).await;
    assert_eq!(
        data["connection"]["lastSyncRun"]["status"], "QUEUED",
        "no workers: {data}"
    );
    app.ok(
        &key,
        "mutation($id: ID!) { disconnect(id: $id) { status } }",
        json!({ "id": connection }),
    )
    .await;
    let data = app.ok(&key, &query, json!({ "id": connection })).await;
    let run = &data["connection"]["lastSyncRun"];
    assert_eq!(run["status"], "CANCELLED", "{run}");
    assert_eq!(run["error"]["code"], "DISCONNECTED", "{run}");
    assert_eq!(sync_failed_codes(&app, &key).await, ["DISCONNECTED"]);
}

/// The error codes of the account's `sync.failed` events.
async fn sync_failed_codes(app: &TestApp, key: &str) -> Vec<String> {
    let events = app
        .ok(
            key,
            "{ events(first: 10, filter: {types: [SYNC_FAILED]}) { nodes { data } } }",
            json!({}),
        )
        .await;
    events["events"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node["data"]["error"]["code"].as_str().unwrap().to_owned())
        .collect()
}

/// A run waiting out a remote's 429s (here 1 s each, as long as the lease) keeps its lease:
/// no other worker takes it over, and it ends with exact counts in one attempt.
#[tokio::test]
async fn a_run_keeps_its_lease_while_it_waits_for_the_remote() {
    let app = TestApp::spawn_with(|c| {
        c.sync.lease_secs = 1;
        c.sync.workers = 2;
    })
    .await;
    let (key, customer) = setup(&app, 10).await;
    let (connection, _) = connect(&app, &key, input(&customer, 5, "rate_limited")).await;
    let run = last_run(&app, &key, &connection).await;
    assert_eq!(
        (run["status"].clone(), run["recordsAdded"].clone()),
        (json!("SUCCEEDED"), json!(40)),
        "{run}"
    );
    let db = Db::connect(&test_config(&app.db)).await.unwrap();
    let id = ids::decode(ids::Kind::SyncRun, run["id"].as_str().unwrap()).unwrap();
    let stored = entity::sync_run::Entity::find_by_id(id)
        .one(db.conn())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.attempts, 1, "taken over by another worker: {run}");
    db.close().await.unwrap();
}

#[tokio::test]
async fn scheduled_runs_happen_on_time() {
    let app = TestApp::spawn_with(|c| c.testing.schedule_minute = Duration::from_secs(1)).await;
    let (key, customer) = setup(&app, 10).await;
    let mut connect_input = input(&customer, 5, "none");
    connect_input["syncIntervalMinutes"] = json!(1);
    let (connection, _) = connect(&app, &key, connect_input).await;
    let runs = wait_for(
        Duration::from_secs(20),
        "three scheduled runs",
        async || {
            let runs = runs(&app, &key, &connection).await;
            let scheduled = runs.iter().filter(|r| r["trigger"] == "SCHEDULE").count();
            (scheduled >= 3).then_some(runs)
        },
    )
    .await;
    assert_eq!(runs[0]["trigger"], "CONNECT", "{runs:?}");
    // One run per interval (a "minute" of 1 s here), not more, as the server queued them.
    for pair in runs.windows(2) {
        assert!(
            queued_at(&pair[1]) - queued_at(&pair[0]) >= chrono::Duration::milliseconds(900),
            "one scheduled run a second: {runs:?}"
        );
    }
}

fn queued_at(run: &Value) -> DateTime<Utc> {
    run["queuedAt"].as_str().unwrap().parse().unwrap()
}

/// The connection's runs, oldest first: trigger and queuedAt.
async fn runs(app: &TestApp, key: &str, connection: &str) -> Vec<Value> {
    let query = "query($id: ID!) { connection(id: $id) { syncRuns(first: 50) { nodes { trigger queuedAt } } } }";
    let data = app.ok(key, query, json!({ "id": connection })).await;
    let mut runs = data["connection"]["syncRuns"]["nodes"]
        .as_array()
        .unwrap()
        .clone();
    runs.sort_by_key(queued_at);
    runs
}

/// The triggers of the connection's runs, oldest first.
async fn triggers(app: &TestApp, key: &str, connection: &str) -> Vec<String> {
    runs(app, key, connection)
        .await
        .iter()
        .map(|r| r["trigger"].as_str().unwrap().to_owned())
        .collect()
}

/// SQL statements the server has run so far, from `/metrics`.
async fn statements(app: &TestApp) -> u64 {
    app.metrics()
        .await
        .lines()
        .find_map(|line| line.strip_prefix("millwright_db_statements_total "))
        .and_then(|n| n.trim().parse().ok())
        .expect("statement counter in /metrics")
}

/// The fewest statements one query took over a few tries (background polls add noise).
async fn statements_for(app: &TestApp, key: &str, query: &str, variables: Value) -> u64 {
    let mut fewest = u64::MAX;
    for _ in 0..5 {
        let before = statements(app).await;
        app.ok(key, query, variables.clone()).await;
        fewest = fewest.min(statements(app).await - before);
    }
    fewest
}

#[tokio::test]
async fn relations_cost_the_same_number_of_statements_for_10_and_100_rows() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let (connection, token) = connect(&app, &key, input(&customer, 300, "none")).await;
    last_run(&app, &key, &connection).await;
    // The statements are counted on a second server with no background work (its counter
    // would also count the sync, webhook and health pollers' statements), and with a batch
    // window no scheduling delay of a loaded test machine outlasts: the count does not
    // depend on timing.
    let app = app
        .another_with(|c| {
            c.process.workers = false;
            c.http.graphql_batch_window_ms = 100;
        })
        .await;
    let query =
        "query($n: Int) { assets(first: $n) { nodes { name site { name } location { name } } } }";
    let ten = statements_for(&app, &token, query, json!({ "n": 10 })).await;
    let hundred = statements_for(&app, &token, query, json!({ "n": 100 })).await;
    assert_eq!(ten, hundred, "no statement per row");
    assert!(ten <= 6, "{ten} statements");
}

#[tokio::test]
async fn paginating_visits_each_record_once_while_a_sync_runs() {
    // Slow enough that the second full run lasts through the pagination.
    let app = TestApp::spawn_with(|c| c.sync.requests_per_second = 25).await;
    let (key, customer) = setup(&app, 10).await;
    let (connection, token) = connect(&app, &key, input(&customer, 10_000, "none")).await;
    last_run(&app, &key, &connection).await;
    let (before, _) = live_asset_keys(&app, &token).await;
    let data = app
        .ok(
            &key,
            "mutation($id: ID!) { triggerSync(connectionId: $id, kind: FULL) { id } }",
            json!({ "id": connection }),
        )
        .await;
    let run = data["triggerSync"]["id"].as_str().unwrap().to_owned();
    running(&app, &key, &run).await;
    let started = run_progress(&app, &key, &run).await;
    let (during, visits) = live_asset_keys(&app, &token).await;
    let ended = run_progress(&app, &key, &run).await;
    assert_eq!(started["status"], "RUNNING", "{started}");
    assert_eq!(
        ended["status"], "RUNNING",
        "the run wrote pages all along: {ended}"
    );
    assert_ne!(started, ended, "the run wrote pages all along");
    assert_eq!(visits, during.len(), "no record twice");
    finished(&app, &key, &run).await;
    let (after, _) = live_asset_keys(&app, &token).await;
    let missed: Vec<_> = before
        .intersection(&after)
        .filter(|k| !during.contains(*k))
        .collect();
    assert!(
        missed.is_empty(),
        "live before and after, not seen: {missed:?}"
    );
    assert!(during.len() >= 9_000, "{}", during.len());
}

/// A run's status and counts so far.
async fn run_progress(app: &TestApp, key: &str, run: &str) -> Value {
    let query = "query($id: ID!) { syncRun(id: $id) { status recordsAdded recordsUpdated } }";
    app.ok(key, query, json!({ "id": run })).await["syncRun"].clone()
}

/// The connection's live asset keys, paginated 100 at a time; and how many nodes were read.
async fn live_asset_keys(app: &TestApp, token: &str) -> (std::collections::HashSet<String>, usize) {
    let mut seen = std::collections::HashSet::new();
    let mut after: Option<String> = None;
    let mut visits = 0;
    loop {
        let data = app
            .ok(
                token,
                "query($after: String) { assets(first: 100, after: $after) {
                nodes { key } pageInfo { hasNextPage endCursor } } }",
                json!({ "after": after }),
            )
            .await;
        for node in data["assets"]["nodes"].as_array().unwrap() {
            visits += 1;
            seen.insert(node["key"].as_str().unwrap().to_owned());
        }
        if data["assets"]["pageInfo"]["hasNextPage"] == false {
            return (seen, visits);
        }
        after = data["assets"]["pageInfo"]["endCursor"]
            .as_str()
            .map(str::to_owned);
    }
}

#[tokio::test]
async fn a_run_of_a_killed_process_is_taken_over_and_completed_exactly() {
    use crate::harness::{ServerProcess, TestDb};
    let db = TestDb::new().await;
    let settings = [
        ("MILLWRIGHT_SYNC_LEASE_SECS", "2"),
        ("MILLWRIGHT_SYNC_PAGE_SIZE", "50"),
        ("MILLWRIGHT_SYNC_REQUESTS_PER_SECOND", "40"),
    ];
    let server = ServerProcess::start(&db.url, &settings);
    let (key, customer) = server.account_and_customer(5).await;
    let mut connect_input = input(&customer, 400, "none");
    connect_input["validate"] = json!(false);
    let data = server
        .gql(&key, "mutation($i: ConnectInput!) { connect(input: $i) { connection { id lastSyncRun { id } } } }", json!({ "i": connect_input }))
        .await;
    let connection = data["connect"]["connection"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = data["connect"]["connection"]["lastSyncRun"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let progress = "query($id: ID!) { syncRun(id: $id) { status recordsAdded } }";
    wait_until(Duration::from_secs(30), "600 records added", async || {
        let data = server.gql(&key, progress, json!({ "id": run })).await;
        assert_ne!(
            data["syncRun"]["status"], "SUCCEEDED",
            "the run ended before it could be interrupted"
        );
        data["syncRun"]["recordsAdded"].as_i64().unwrap() >= 600
    })
    .await;
    server.kill();

    let server = ServerProcess::start(&db.url, &settings);
    let status = wait_for(Duration::from_secs(60), "the run taken over to end", async || {
        let data = server.gql(&key, "query($id: ID!) { syncRun(id: $id) { status recordsAdded recordsUpdated recordsDeleted } }", json!({ "id": run })).await;
        let status = data["syncRun"].clone();
        let ended = status["status"] != "RUNNING" && status["status"] != "QUEUED";
        ended.then_some(status)
    })
    .await;
    assert_eq!(
        status,
        json!({ "status": "SUCCEEDED", "recordsAdded": 3200, "recordsUpdated": 0, "recordsDeleted": 0 })
    );
    let query = "query($c: ID!, $e: EntityType!) { records(connectionId: $c, entity: $e, first: 100) { pageInfo { hasNextPage } } }";
    for entity in ["SITE", "ASSET", "USER"] {
        let data = server
            .gql(&key, query, json!({ "c": connection, "e": entity }))
            .await;
        assert_eq!(data["records"]["pageInfo"]["hasNextPage"], true);
    }
    let db_conn = sea_orm::Database::connect(&db.url).await.unwrap();
    use sea_orm::{ConnectionTrait, Statement};
    let rows = db_conn
        .query_all_raw(Statement::from_string(
            db_conn.get_database_backend(),
            "SELECT COUNT(*) AS n, COUNT(DISTINCT entity || ':' || key) AS k FROM records",
        ))
        .await
        .unwrap();
    let (n, k): (i64, i64) = (
        rows[0].try_get("", "n").unwrap(),
        rows[0].try_get("", "k").unwrap(),
    );
    assert_eq!((n, k), (3200, 3200), "every record once");
    db_conn.close().await.ok();
}

#[tokio::test]
async fn a_run_that_fails_midway_keeps_its_pages_and_the_next_resumes() {
    let app = TestApp::spawn_with(|c| {
        c.sync.page_size = 30;
        c.sync.retries = 0;
        c.sync.requests_per_second = 1000;
    })
    .await;
    let (key, customer) = setup(&app, 10).await;
    let mut connect_input = input(&customer, 100, "flaky");
    connect_input["validate"] = json!(false);
    let (connection, _) = connect(&app, &key, connect_input).await;
    // One request in ten fails: the tenth is the second page of assets.
    let failed = last_run(&app, &key, &connection).await;
    assert_eq!(
        (failed["status"].as_str(), failed["error"]["code"].as_str()),
        (Some("FAILED"), Some("REMOTE_ERROR")),
        "{failed}"
    );
    assert_eq!(
        entity(&failed, "ASSET")["added"],
        30,
        "the first page of assets was committed"
    );
    assert_eq!(count_assets(&app, &key, &connection, false).await, 30);

    let update = "mutation($id: ID!, $c: JSON!) { updateConnectionCredentials(id: $id, credentials: $c) { status } }";
    app.ok(
        &key,
        update,
        json!({ "id": connection, "c": { "api_key": "sync-test-key", "scale": 100 } }),
    )
    .await;
    let resumed = trigger(&app, &key, &connection, "FULL").await;
    assert_eq!(resumed["status"], "SUCCEEDED", "{resumed}");
    assert_eq!(
        entity(&resumed, "ASSET")["added"],
        70,
        "the next run continued after the committed page"
    );
    assert_eq!(count_assets(&app, &key, &connection, false).await, 100);
}

/// Unifies `{ "name": … }` records; anything without a name is malformed.
struct NamedConnector;

#[async_trait::async_trait]
impl millwright::connectors::Connector for NamedConnector {
    async fn check(&self) -> Result<(), ConnectorError> {
        Ok(())
    }

    async fn read_page(
        &self,
        _entity: EntityType,
        _request: &ReadRequest,
    ) -> Result<RemotePage, ConnectorError> {
        Err(ConnectorError::RemoteFault(
            "pages are given to apply_page".into(),
        ))
    }

    fn unify(&self, _entity: EntityType, remote: &Value) -> Result<Value, String> {
        match remote["name"].as_str() {
            Some(name) => Ok(json!({ "name": name })),
            None => Err("name is required".into()),
        }
    }

    async fn write(&self, _request: &WriteRequest<'_>) -> WriteReply {
        WriteReply::stopped(ConnectorError::Validation("read-only".into()))
    }
}

fn remote(key: &str, data: Value) -> RemoteRecord {
    RemoteRecord {
        key: key.into(),
        created_at: None,
        updated_at: None,
        data,
    }
}

fn named(key: &str, name: &str) -> RemoteRecord {
    remote(key, json!({ "id": key, "name": name }))
}

fn gone(key: &str) -> RemoteRecord {
    remote(key, json!({ "id": key, "deleted": true }))
}

/// Applies one page in its own transaction; (added, updated, deleted, unchanged, skipped).
async fn apply(
    db: &Db,
    connection: Uuid,
    page: Vec<RemoteRecord>,
    pass: Option<Uuid>,
) -> (Vec<String>, Vec<String>, Vec<String>, u64, Vec<String>) {
    let page = records::prepare_page(&NamedConnector, EntityType::Asset, page);
    let txn = db.begin_write().await.unwrap();
    let outcome = records::apply_page(&txn, connection, EntityType::Asset, page, pass)
        .await
        .unwrap();
    txn.commit().await.unwrap();
    let skipped = outcome.skipped.into_iter().map(|(key, _)| key).collect();
    (
        outcome.added,
        outcome.updated,
        outcome.deleted,
        outcome.unchanged,
        skipped,
    )
}

/// A server, an account and a demo connection of `scale` records per entity whose first
/// run has ended, with a database handle of the test's own: (app, account key, connection
/// id as the API gives it, its uuid, the handle).
async fn synced(scale: u64) -> (TestApp, String, String, Uuid, Db) {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let (connection, _) = connect(&app, &key, input(&customer, scale, "none")).await;
    last_run(&app, &key, &connection).await;
    let id = ids::decode(ids::Kind::Connection, &connection).unwrap();
    let db = Db::connect(&test_config(&app.db)).await.unwrap();
    (app, key, connection, id, db)
}

/// A pass left half-done holds a continuation token the remote may no longer accept (tokens
/// expire): the next run starts that pass over instead of failing on it for ever.
#[tokio::test]
async fn a_saved_token_the_remote_refuses_starts_the_pass_over() {
    use sea_orm::sea_query::Expr;
    let (app, key, connection, id, db) = synced(100).await;
    let interrupted = entity::sync_cursor::Entity::update_many()
        .col_expr(entity::sync_cursor::Column::PassDone, Expr::value(false))
        .col_expr(entity::sync_cursor::Column::PassKind, Expr::value("FULL"))
        .col_expr(
            entity::sync_cursor::Column::PassId,
            Expr::value(Uuid::now_v7()),
        )
        .col_expr(
            entity::sync_cursor::Column::PassCursor,
            Expr::value("expired-token"),
        )
        .filter(entity::sync_cursor::Column::ConnectionId.eq(id))
        .filter(entity::sync_cursor::Column::Entity.eq("ASSET"))
        .exec(db.conn())
        .await
        .unwrap();
    assert_eq!(interrupted.rows_affected, 1);
    let run = trigger(&app, &key, &connection, "FULL").await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let assets = entity(&run, "ASSET");
    let read: i64 = ["added", "updated", "unchanged"]
        .iter()
        .map(|n| assets[*n].as_i64().unwrap())
        .sum();
    assert_eq!(
        read,
        count_assets(&app, &key, &connection, false).await as i64,
        "the pass read every live asset from the start: {run}"
    );
    db.close().await.unwrap();
}

/// A page longer than one statement (2,000 rows) is counted per statement.
#[tokio::test]
async fn a_page_longer_than_one_statement_is_counted_exactly() {
    let (_app, _, _, connection, db) = synced(0).await;
    let keys: Vec<String> = (0..2500).map(|n| format!("K{n:04}")).collect();
    let page = || keys.iter().map(|k| named(k, "pump")).collect::<Vec<_>>();
    let (added, updated, deleted, unchanged, _) = apply(&db, connection, page(), None).await;
    assert_eq!(
        (added.len(), updated.len(), deleted.len(), unchanged),
        (2500, 0, 0, 0)
    );
    let pass = Some(Uuid::now_v7());
    let (added, updated, deleted, unchanged, _) = apply(&db, connection, page(), pass).await;
    assert_eq!(
        (added.len(), updated.len(), deleted.len(), unchanged),
        (0, 0, 0, 2500)
    );
    let tombstones = keys.iter().map(|k| gone(k)).collect();
    let (_, _, deleted, unchanged, _) = apply(&db, connection, tombstones, None).await;
    assert_eq!((deleted.len(), unchanged), (2500, 0));
    db.close().await.unwrap();
}

/// Keys and values the database or the write could garble (on PostgreSQL they go through
/// `COPY`): control characters, backslashes, quotes, non-ASCII text, JSON nulls and `\u0000`
/// escapes, empty and very long strings (3 MiB, more than one chunk of the copy), timestamps
/// before 2000 and far ahead, and none. They are stored as the remote sent them, byte for
/// byte, and the same page again changes nothing.
#[tokio::test]
async fn awkward_keys_and_values_are_stored_byte_for_byte() {
    let (_app, _, _, connection, db) = synced(0).await;
    let long = "tab\there, line\nand \\ back ".repeat(120_000);
    let names = [
        ("tab\tkey", "tab\tvalue"),
        ("line\nkey\r\n", "line\nvalue\r\n"),
        ("back\\slash\\N\\.", "back\\slash \\N \\. \\\\"),
        ("quote\"'key", "quote \" and ' value"),
        ("ünïcödé 日本 🚀", "żółć 日本語 🚀 e\u{301}"),
        ("nul escape", "a \u{0} inside JSON"),
        ("empty", ""),
        ("long", long.as_str()),
    ];
    let at = |text: &str| Some(text.parse::<DateTime<Utc>>().unwrap());
    let times = [
        (None, None),
        (
            at("1999-12-31T23:59:59.999999Z"),
            at("2000-01-01T00:00:00Z"),
        ),
        (
            at("1970-01-01T00:00:00.000001Z"),
            at("9999-12-31T23:59:59.999999Z"),
        ),
        (at("2026-12-05T10:11:12.123456Z"), None),
    ];
    let page: Vec<RemoteRecord> = names
        .iter()
        .zip(times.iter().cycle())
        .map(|(&(key, name), &(created_at, updated_at))| RemoteRecord {
            key: key.into(),
            created_at,
            updated_at,
            data: json!({ "id": key, "name": name, "nothing": null,
                          "nested": { "list": [1, 2.5, null, "\t\\\"", -0.0] } }),
        })
        .collect();
    let keys: Vec<String> = names.iter().map(|(key, _)| (*key).to_owned()).collect();
    let outcome = apply(&db, connection, page.clone(), None).await;
    assert_eq!(outcome, (keys.clone(), vec![], vec![], 0, vec![]));

    let backend = db.conn().get_database_backend();
    let sql = "SELECT key, CAST(data AS TEXT) AS data, CAST(remote_data AS TEXT) AS remote \
               FROM records WHERE connection_id = ?";
    let rows = db
        .conn()
        .query_all_raw(millwright::db::statement(backend, sql, [connection.into()]))
        .await
        .unwrap();
    let text: BTreeMap<String, (String, String)> = rows
        .iter()
        .map(|row| {
            let key: String = row.try_get("", "key").unwrap();
            let data = row.try_get("", "data").unwrap();
            (key, (data, row.try_get("", "remote").unwrap()))
        })
        .collect();
    let models: BTreeMap<String, record::Model> = record::Entity::find()
        .filter(record::Column::ConnectionId.eq(connection))
        .all(db.conn())
        .await
        .unwrap()
        .into_iter()
        .map(|model| (model.key.clone(), model))
        .collect();
    assert_eq!(text.len(), page.len());
    for (remote, (_, name)) in page.iter().zip(names) {
        let (data, remote_text) = &text[&remote.key];
        assert_eq!(
            *data,
            json!({ "name": name }).to_string(),
            "{:?}",
            remote.key
        );
        assert_eq!(*remote_text, remote.data.to_string(), "{:?}", remote.key);
        let model = &models[&remote.key];
        assert_eq!(model.remote_data.as_ref(), Some(&remote.data));
        assert_eq!(
            (model.remote_created_at, model.remote_updated_at),
            (remote.created_at, remote.updated_at),
            "{:?}",
            remote.key
        );
    }

    let again = apply(&db, connection, page, None).await;
    assert_eq!(again, (vec![], vec![], vec![], keys.len() as u64, vec![]));
    db.close().await.unwrap();
}

/// Three pages in one transaction: each is counted and stored for itself (on PostgreSQL
/// the rows copied for an earlier page are not read again: they would bring back a record
/// deleted since, and rewrite a changed one with its old version).
#[tokio::test]
async fn pages_in_one_transaction_are_each_counted() {
    let (_app, _, _, connection, db) = synced(0).await;
    let txn = db.begin_write().await.unwrap();
    let apply_in_txn = async |page| {
        let page = records::prepare_page(&NamedConnector, EntityType::Asset, page);
        let outcome = records::apply_page(&txn, connection, EntityType::Asset, page, None)
            .await
            .unwrap();
        (outcome.added, outcome.updated, outcome.deleted)
    };
    let first = apply_in_txn(vec![named("E1", "pump"), named("E2", "valve")]).await;
    let page = vec![gone("E1"), named("E2", "valve v2"), named("E3", "fan")];
    let second = apply_in_txn(page).await;
    let third = apply_in_txn(vec![named("E4", "motor")]).await;
    txn.commit().await.unwrap();
    assert_eq!(first, (strings(&["E1", "E2"]), vec![], vec![]));
    assert_eq!(
        second,
        (strings(&["E3"]), strings(&["E2"]), strings(&["E1"]))
    );
    assert_eq!(third, (strings(&["E4"]), vec![], vec![]));
    let end: Vec<(String, String, bool)> = stored(&db, connection)
        .await
        .into_iter()
        .map(|(key, (name, deleted, ..))| (key, name, deleted))
        .collect();
    let expected = [
        ("E1", "pump", true),
        ("E2", "valve v2", false),
        ("E3", "fan", false),
        ("E4", "motor", false),
    ];
    assert_eq!(end, expected.map(|(k, n, d)| (k.into(), n.into(), d)));
    db.close().await.unwrap();
}

/// A key listed several times in a page, live and deleted in turn: the last word counts.
#[tokio::test]
async fn a_key_repeated_in_a_page_takes_its_last_version() {
    let (_app, _, _, connection, db) = synced(0).await;
    let page = vec![
        named("R1", "first"),
        gone("R1"),
        named("R1", "third"),
        named("R2", "kept"),
        named("R2", "kept"),
        named("R3", "first"),
        gone("R3"),
    ];
    let outcome = apply(&db, connection, page, None).await;
    // R3's tombstone is its last word, and there was no R3 to delete.
    assert_eq!(outcome, (strings(&["R1", "R2"]), vec![], vec![], 0, vec![]));
    let page = vec![named("R1", "fourth"), gone("R2"), named("R1", "fifth")];
    let outcome = apply(&db, connection, page, None).await;
    assert_eq!(
        outcome,
        (vec![], strings(&["R1"]), strings(&["R2"]), 0, vec![])
    );
    let end = stored(&db, connection).await;
    assert_eq!(
        (end["R1"].0.as_str(), end["R1"].1, end["R2"].1),
        ("fifth", false, true)
    );
    assert!(!end.contains_key("R3"));
    db.close().await.unwrap();
}

/// A page the database refuses leaves nothing behind, and the next page on the same
/// pooled connection is counted and stored for itself alone (on PostgreSQL: the rows copied
/// for the failed page are not read by the next one). Refused by the foreign key (after the
/// copy, on PostgreSQL) and, on PostgreSQL, refused during the copy: a NUL character in a
/// key, which PostgreSQL's text refuses as it refused a bound key.
#[tokio::test]
async fn a_refused_page_leaves_nothing_behind_on_its_connection() {
    let (app, _, _, connection, _) = synced(0).await;
    let mut config = test_config(&app.db);
    config.database.max_connections = 1;
    let db = Db::connect(&config).await.unwrap();
    let postgres = db.conn().get_database_backend() == sea_orm::DbBackend::Postgres;
    let try_apply = async |connection: Uuid, page: Vec<RemoteRecord>| {
        let page = records::prepare_page(&NamedConnector, EntityType::Asset, page);
        let txn = db.begin_write().await.unwrap();
        let applied = records::apply_page(&txn, connection, EntityType::Asset, page, None).await;
        if applied.is_ok() {
            txn.commit().await.unwrap();
        }
        applied
    };

    let unknown = Uuid::now_v7();
    let refused = try_apply(unknown, vec![named("B1", "pump"), named("B2", "valve")]).await;
    let error = refused.expect_err("no such connection").detail();
    assert!(error.to_lowercase().contains("foreign key"), "{error}");
    let outcome = apply(&db, connection, vec![named("C1", "fan")], None).await;
    assert_eq!(outcome, (strings(&["C1"]), vec![], vec![], 0, vec![]));

    let page = vec![named("D1", "motor"), named("D\u{0}2", "nul")];
    let applied = try_apply(connection, page).await;
    if postgres {
        let error = applied.expect_err("PostgreSQL text holds no NUL").detail();
        assert!(error.contains("0x00"), "{error}");
    } else {
        assert_eq!(applied.unwrap().added, strings(&["D1", "D\u{0}2"]));
    }
    let outcome = apply(&db, connection, vec![named("C2", "fan")], None).await;
    assert_eq!(outcome, (strings(&["C2"]), vec![], vec![], 0, vec![]));

    let keys: Vec<String> = stored(&db, connection).await.into_keys().collect();
    let expected: &[&str] = if postgres {
        &["C1", "C2"]
    } else {
        &["C1", "C2", "D\u{0}2", "D1"]
    };
    assert_eq!(keys, strings(expected));
    let elsewhere = record::Entity::find()
        .filter(record::Column::ConnectionId.eq(unknown))
        .all(db.conn())
        .await
        .unwrap();
    assert!(elsewhere.is_empty());
    db.close().await.unwrap();
}

fn strings(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|key| (*key).to_owned()).collect()
}

/// Every stored asset of the connection by key: (name, deleted, modified at, seen pass).
async fn stored(
    db: &Db,
    connection: Uuid,
) -> BTreeMap<String, (String, bool, DateTime<Utc>, Option<Uuid>)> {
    record::Entity::find()
        .filter(record::Column::ConnectionId.eq(connection))
        .all(db.conn())
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            let name = r.data["name"].as_str().unwrap().to_owned();
            assert_eq!(r.remote_data.as_ref().unwrap()["name"], r.data["name"]);
            (
                r.key,
                (name, r.deleted_at.is_some(), r.modified_at, r.seen_pass),
            )
        })
        .collect()
}

#[tokio::test]
async fn one_page_of_additions_updates_and_tombstones_is_counted_and_stored_exactly() {
    let (_app, _, _, connection, db) = synced(0).await;
    let strs = |keys: &[&str]| keys.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>();

    let first_pass = Uuid::now_v7();
    let page = vec![
        named("A1", "pump"),
        named("A2", "valve"),
        named("A3", "motor"),
        remote("A4", json!({ "id": "A4" })),
    ];
    let outcome = apply(&db, connection, page, Some(first_pass)).await;
    assert_eq!(
        outcome,
        (strs(&["A1", "A2", "A3"]), vec![], vec![], 0, strs(&["A4"]))
    );
    let before = stored(&db, connection).await;

    // Incremental: an update, an unchanged record, a tombstone of a live record and one of
    // an unknown key, and a new record listed twice (the last version counts).
    let page = vec![
        named("A1", "pump v2"),
        named("A2", "valve"),
        gone("A3"),
        gone("A9"),
        named("A5", "fan"),
        named("A5", "fan v2"),
    ];
    let outcome = apply(&db, connection, page, None).await;
    assert_eq!(
        outcome,
        (strs(&["A5"]), strs(&["A1"]), strs(&["A3"]), 1, vec![])
    );
    let after = stored(&db, connection).await;
    assert_eq!(after.len(), 4, "{after:?}");
    assert_eq!(after["A1"].0, "pump v2");
    assert!(
        after["A1"].2 > before["A1"].2,
        "a rewrite moves modified_at"
    );
    assert_eq!(
        after["A2"], before["A2"],
        "an unchanged record is not rewritten"
    );
    assert_eq!((after["A3"].0.as_str(), after["A3"].1), ("motor", true));
    assert!(
        after["A3"].2 > before["A3"].2,
        "a deletion moves modified_at"
    );
    assert_eq!((after["A5"].0.as_str(), after["A5"].1), ("fan v2", false));

    // A tombstone of a deleted record changes nothing; the record coming back is an update.
    let outcome = apply(&db, connection, vec![gone("A3")], None).await;
    assert_eq!(outcome, (vec![], vec![], vec![], 0, vec![]));
    let outcome = apply(&db, connection, vec![named("A3", "motor")], None).await;
    assert_eq!(outcome, (vec![], strs(&["A3"]), vec![], 0, vec![]));
    assert!(!stored(&db, connection).await["A3"].1);

    // A full pass marks what it saw, changed or not; the rest is deleted at its end.
    let second_pass = Uuid::now_v7();
    let page = vec![named("A1", "pump v2"), named("A2", "valve v3")];
    let outcome = apply(&db, connection, page, Some(second_pass)).await;
    assert_eq!(outcome, (vec![], strs(&["A2"]), vec![], 1, vec![]));
    let seen = stored(&db, connection).await;
    assert_eq!(
        seen["A1"].2, after["A1"].2,
        "unchanged, only marked as seen"
    );
    assert_eq!(seen["A1"].3, Some(second_pass));
    assert_eq!(seen["A2"].3, Some(second_pass));
    let txn = db.begin_write().await.unwrap();
    let mut unseen = records::delete_unseen(&*txn, connection, EntityType::Asset, second_pass)
        .await
        .unwrap();
    txn.commit().await.unwrap();
    unseen.sort();
    assert_eq!(unseen, strs(&["A3", "A5"]));
    let end = stored(&db, connection).await;
    let live: Vec<&str> = end
        .iter()
        .filter(|(_, row)| !row.1)
        .map(|(key, _)| key.as_str())
        .collect();
    assert_eq!(live, ["A1", "A2"]);
    db.close().await.unwrap();
}

/// Work orders stored by the release before unified states (lower-case `status`, free-text
/// `severity`) read as unified states and priorities after the upgrade's migration.
#[tokio::test]
async fn work_orders_stored_before_unified_states_are_migrated_in_place() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let (connection, token) = connect(&app, &key, input(&customer, 40, "none")).await;
    last_run(&app, &key, &connection).await;
    let query = "{ workOrders(first: 100) { nodes { key status remoteStatus priority remotePriority data } } }";
    let before = app.ok(&token, query, json!({})).await["workOrders"]["nodes"].clone();
    assert!(before.as_array().unwrap().len() == 40);
    assert!(
        before
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["status"].is_string() && w["priority"].is_string())
    );

    // The rows as the previous release wrote them, and its migration table.
    let db = sea_orm::Database::connect(&app.db.url).await.unwrap();
    let legacy = match db.get_database_backend() {
        sea_orm::DbBackend::Postgres => {
            "UPDATE records SET data = ((data::jsonb - 'remoteStatus' - 'remotePriority' - 'priority') \
            || jsonb_build_object('status', data->'remoteStatus', 'severity', data->'remotePriority'))::json WHERE entity = 'WORK_ORDER'"
        }
        _ => {
            "UPDATE records SET data = json_set(json_remove(data, '$.remoteStatus', '$.remotePriority', '$.priority'), \
            '$.status', json_extract(data, '$.remoteStatus'), '$.severity', json_extract(data, '$.remotePriority')) WHERE entity = 'WORK_ORDER'"
        }
    };
    use sea_orm::ConnectionTrait;
    db.execute_unprepared(legacy).await.unwrap();
    db.execute_unprepared(
        "DELETE FROM seaql_migrations WHERE version = 'm20261205_000001_work_order_enums'",
    )
    .await
    .unwrap();
    // Only the raw data: this release reads no status it does not know (an error, not a null).
    let raw = "{ workOrders(first: 100) { nodes { key data } } }";
    let old = app.ok(&token, raw, json!({})).await["workOrders"]["nodes"].clone();
    assert!(old[0]["data"]["severity"].is_string(), "{}", old[0]);
    assert!(old[0]["data"].get("priority").is_none(), "{}", old[0]);
    db.close().await.unwrap();

    // The upgraded server migrates at start.
    let upgraded = app.another().await;
    let after = upgraded.ok(&token, query, json!({})).await["workOrders"]["nodes"].clone();
    assert_eq!(after, before);
}
