//! Connections, the systems catalog and connection credits.

use std::{collections::HashSet, time::Duration};

use serde_json::{Value, json};

use crate::harness::{ADMIN_TOKEN, TestApp, connect, demo_input, error_code, setup, wait_until};

const CONNECT: &str = "mutation($input: ConnectInput!) {
    connect(input: $input) { token connection { id status statusReason creditCost deployment tokenPrefix
        customer { id name } system { key } webhookEventTypes } }
}";
const DISCONNECT: &str =
    "mutation($id: ID!) { disconnect(id: $id) { id status disconnectedAt creditCost } }";
const CREDITS: &str = "{ viewer { account { credits { total used available } } } }";

async fn credits(app: &TestApp, key: &str) -> Value {
    app.ok(key, CREDITS, json!({})).await["viewer"]["account"]["credits"].clone()
}

async fn ledger(app: &TestApp, key: &str) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let data = app
            .ok(key, "query($after: String) { creditLedger(first: 100, after: $after) {
                nodes { kind amount balanceAfter note connection { id } } pageInfo { hasNextPage endCursor } } }",
                json!({ "after": after }))
            .await;
        let page = &data["creditLedger"];
        entries.extend(page["nodes"].as_array().unwrap().iter().cloned());
        if page["pageInfo"]["hasNextPage"] == false {
            return entries;
        }
        after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
}

/// Rows of a table read straight from the database, as text: every column's value, bytes
/// as (lossy) UTF-8.
pub async fn raw_rows(app: &TestApp, sql: &str) -> Vec<String> {
    use sea_orm::{ConnectionTrait, Statement};
    let db = sea_orm::Database::connect(&app.db.url).await.unwrap();
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap();
    let text = rows
        .iter()
        .map(|row| {
            (0..row.column_names().len())
                .map(|n| column_text(row, n))
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect();
    db.close().await.ok();
    text
}

fn column_text(row: &sea_orm::QueryResult, n: usize) -> String {
    if let Ok(v) = row.try_get_by_index::<Option<String>>(n) {
        return v.unwrap_or_default();
    }
    if let Ok(v) = row.try_get_by_index::<Option<Vec<u8>>>(n) {
        return String::from_utf8_lossy(&v.unwrap_or_default()).into_owned();
    }
    if let Ok(v) = row.try_get_by_index::<Option<Value>>(n) {
        return v.map(|v| v.to_string()).unwrap_or_default();
    }
    if let Ok(v) = row.try_get_by_index::<Option<uuid::Uuid>>(n) {
        return v.map(|v| v.to_string()).unwrap_or_default();
    }
    if let Ok(v) = row.try_get_by_index::<Option<i64>>(n) {
        return v.map(|v| v.to_string()).unwrap_or_default();
    }
    if let Ok(v) = row.try_get_by_index::<Option<i32>>(n) {
        return v.map(|v| v.to_string()).unwrap_or_default();
    }
    if let Ok(v) = row.try_get_by_index::<Option<bool>>(n) {
        return v.map(|v| v.to_string()).unwrap_or_default();
    }
    if let Ok(v) = row.try_get_by_index::<Option<chrono::DateTime<chrono::Utc>>>(n) {
        return v.map(|v| v.to_string()).unwrap_or_default();
    }
    panic!(
        "column {n} of {:?}: no text for its type",
        row.column_names()
    );
}

pub async fn event_types(app: &TestApp) -> Vec<String> {
    use sea_orm::{ConnectionTrait, Statement};
    let db = sea_orm::Database::connect(&app.db.url).await.unwrap();
    let sql = "SELECT event_type FROM events ORDER BY position";
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap();
    let types = rows
        .iter()
        .map(|r| r.try_get::<String>("", "event_type").unwrap())
        .collect();
    db.close().await.ok();
    types
}

#[tokio::test]
async fn catalog_lists_demo_with_costs_and_fields() {
    let app = TestApp::spawn().await;
    let (key, _) = setup(&app, 0).await;
    let data = app
        .ok(&key, "{ systems(category: CMMS) { key tier category deployments cloud: creditCost(deployment: CLOUD)
            onPrem: creditCost(deployment: ON_PREMISES) entities writableEntities credentialFields { name secret required } }
            erp: systems(category: ERP) { key } system(key: \"demo\") { name } missing: system(key: \"sap\") { name } }", json!({}))
        .await;
    let demo = &data["systems"][0];
    assert_eq!(demo["key"], "demo");
    assert_eq!(
        (
            demo["tier"].clone(),
            demo["cloud"].clone(),
            demo["onPrem"].clone()
        ),
        (json!(1), json!(1), json!(2))
    );
    assert_eq!(demo["deployments"], json!(["CLOUD", "ON_PREMISES"]));
    assert_eq!(demo["writableEntities"], json!(["ASSET", "WORK_ORDER"]));
    assert_eq!(
        demo["credentialFields"][0],
        json!({ "name": "api_key", "secret": true, "required": true })
    );
    assert_eq!(
        data["erp"],
        json!([{ "key": "sap_s4hana" }, { "key": "sap_ecc" }])
    );
    assert_eq!(data["missing"], Value::Null);

    // The real systems, their tiers and what a connection to each costs.
    let data = app
        .ok(
            &key,
            "{ systems { key tier category deployments entities
            cloud: creditCost(deployment: CLOUD) onPrem: creditCost(deployment: ON_PREMISES)
            credentialFields { name secret required } } }",
            json!({}),
        )
        .await;
    let system = |key: &str| {
        data["systems"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == key)
            .unwrap_or_else(|| panic!("{key} is in the catalog"))
            .clone()
    };
    let maintainx = system("maintainx");
    assert_eq!(
        (maintainx["tier"].clone(), maintainx["cloud"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(maintainx["deployments"], json!(["CLOUD"]));
    assert!(
        !maintainx["entities"]
            .as_array()
            .unwrap()
            .contains(&json!("SITE"))
    );
    let maximo = system("ibm_maximo");
    assert_eq!(
        (
            maximo["category"].clone(),
            maximo["cloud"].clone(),
            maximo["onPrem"].clone()
        ),
        (json!("EAM"), json!(4), json!(8))
    );
    assert_eq!(maximo["entities"].as_array().unwrap().len(), 8);
    let s4 = system("sap_s4hana");
    assert_eq!(
        (s4["cloud"].clone(), s4["onPrem"].clone()),
        (json!(4), json!(8))
    );
    let ecc = system("sap_ecc");
    assert_eq!(ecc["deployments"], json!(["ON_PREMISES"]));
    assert_eq!(ecc["onPrem"], 8);
    let secret = |system: &Value, field: &str| {
        system["credentialFields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == field)
            .unwrap_or_else(|| panic!("{field}"))["secret"]
            .clone()
    };
    for (system, field) in [
        (&maintainx, "api_key"),
        (&maximo, "api_key"),
        (&s4, "password"),
        (&s4, "client_secret"),
        (&ecc, "password"),
    ] {
        assert_eq!(secret(system, field), true, "{field} is secret");
    }
    assert_eq!(secret(&ecc, "services"), false);
}

#[tokio::test]
async fn connect_consumes_credits_and_disconnect_returns_them_once() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let mut input = demo_input(&customer, "none");
    input["deployment"] = json!("ON_PREMISES");
    input["label"] = json!("Main site");
    let data = app.ok(&key, CONNECT, json!({ "input": input })).await;
    let connection = &data["connect"]["connection"];
    let token = data["connect"]["token"].as_str().unwrap();
    assert!(
        token.starts_with("mwc_") && token.starts_with(connection["tokenPrefix"].as_str().unwrap())
    );
    assert_eq!(connection["status"], "ONLINE");
    assert_eq!(connection["creditCost"], 2);
    assert_eq!(connection["customer"]["id"], customer.as_str());
    assert_eq!(
        connection["webhookEventTypes"].as_array().unwrap().len(),
        15,
        "all event types by default"
    );
    assert_eq!(
        credits(&app, &key).await,
        json!({ "total": 10, "used": 2, "available": 8 })
    );
    let id = connection["id"].as_str().unwrap();
    let in_use = app
        .ok(
            &key,
            "query($id: ID!) { customer(id: $id) { creditsInUse connections { nodes { id } } } }",
            json!({ "id": customer }),
        )
        .await;
    assert_eq!(in_use["customer"]["creditsInUse"], 2);

    // A second instance of the same system is an independent connection.
    let (second, second_token) = connect(&app, &key, demo_input(&customer, "none")).await;
    assert_ne!(second, id);
    assert_ne!(second_token, token);
    assert_eq!(credits(&app, &key).await["used"], 3);

    let first = app.ok(&key, DISCONNECT, json!({ "id": id })).await;
    assert_eq!(first["disconnect"]["status"], "DISCONNECTED");
    let again = app.ok(&key, DISCONNECT, json!({ "id": id })).await;
    assert_eq!(
        again["disconnect"]["disconnectedAt"],
        first["disconnect"]["disconnectedAt"]
    );
    assert_eq!(
        credits(&app, &key).await,
        json!({ "total": 10, "used": 1, "available": 9 })
    );

    let entries = ledger(&app, &key).await;
    let kinds: Vec<_> = entries
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["amount"].as_i64().unwrap(),
                e["balanceAfter"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("GRANT", 10, 10),
            ("CONNECT", -2, 8),
            ("CONNECT", -1, 7),
            ("DISCONNECT", 2, 9)
        ]
    );
    assert_eq!(entries[1]["connection"]["id"], id);

    // The disconnected connection stays readable, its token no longer works.
    let read = app
        .ok(
            &key,
            "query($id: ID!) { connection(id: $id) { status creditCost } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(read["connection"]["status"], "DISCONNECTED");
    let (status, body) = app
        .post(
            Some(token),
            json!({ "query": "{ viewer { connection { id } } }" }),
        )
        .await;
    assert_eq!((status, error_code(&body)), (401, "UNAUTHENTICATED"));
    let erased = "SELECT id FROM connections WHERE status = 'DISCONNECTED' AND token_hash IS NULL AND credentials IS NULL";
    let stored = raw_rows(&app, erased).await;
    assert_eq!(
        stored.len(),
        1,
        "token and credentials erased on disconnect"
    );

    let types = event_types(&app).await;
    for expected in [
        "connection.created",
        "credits.changed",
        "connection.disconnected",
    ] {
        assert!(
            types.iter().any(|t| t == expected),
            "{expected} in {types:?}"
        );
    }
}

#[tokio::test]
async fn bad_connect_input_is_rejected_naming_the_field() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let cases = [
        (
            json!({ "customerId": customer, "systemKey": "demo", "credentials": {} }),
            "api_key",
        ),
        (
            json!({ "customerId": customer, "systemKey": "demo", "credentials": { "api_key": "k", "token": "x" } }),
            "token",
        ),
        (
            json!({ "customerId": customer, "systemKey": "demo", "credentials": { "api_key": "k", "scale": "many" } }),
            "scale",
        ),
        (
            json!({ "customerId": customer, "systemKey": "demo", "credentials": { "api_key": "k", "scale": 2_000_000 } }),
            "scale",
        ),
        (
            json!({ "customerId": customer, "systemKey": "demo", "credentials": { "api_key": "k", "simulate": "chaos" } }),
            "simulate",
        ),
        (
            json!({ "customerId": customer, "systemKey": "demo", "credentials": "k" }),
            "credentials",
        ),
        (
            json!({ "customerId": customer, "systemKey": "sap-ecc", "credentials": { "api_key": "k" } }),
            "systemKey",
        ),
        (
            json!({ "customerId": customer, "systemKey": "demo", "credentials": { "api_key": "k" }, "syncIntervalMinutes": 0 }),
            "syncIntervalMinutes",
        ),
        (
            json!({ "customerId": customer, "systemKey": "demo", "credentials": { "api_key": "k" }, "label": "x".repeat(300) }),
            "label",
        ),
        (
            json!({ "customerId": customer, "systemKey": "demo", "credentials": { "api_key": "k" }, "metadata": { "blob": "x".repeat(20_000) } }),
            "metadata",
        ),
        (
            json!({ "customerId": "cus_nope", "systemKey": "demo", "credentials": { "api_key": "k" } }),
            "customer",
        ),
        (
            json!({ "customerId": customer, "systemKey": "demo", "deployment": "MOON", "credentials": { "api_key": "k" } }),
            "MOON",
        ),
    ];
    for (input, field) in cases {
        let body = app.gql(&key, CONNECT, json!({ "input": input })).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{input}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(field),
            "{field}: {body}"
        );
    }
    let (_, other_key) = app.create_account("Other", 10).await;
    let body = app
        .gql(
            &other_key,
            CONNECT,
            json!({ "input": demo_input(&customer, "none") }),
        )
        .await;
    assert_eq!(error_code(&body), "NOT_FOUND", "another account's customer");
    assert_eq!(credits(&app, &key).await["used"], 0);
    assert!(
        raw_rows(&app, "SELECT id FROM connections")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_failed_probe_consumes_nothing_and_leaves_no_row() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    for simulate in ["offline", "auth_expired"] {
        let body = app
            .gql(
                &key,
                CONNECT,
                json!({ "input": demo_input(&customer, simulate) }),
            )
            .await;
        assert_eq!(error_code(&body), "CONNECTION_FAILED", "{simulate}");
    }
    // Transient answers are retried by the probe.
    connect(&app, &key, demo_input(&customer, "rate_limited")).await;
    connect(&app, &key, demo_input(&customer, "flaky")).await;
    assert_eq!(credits(&app, &key).await["used"], 2);
    assert_eq!(raw_rows(&app, "SELECT id FROM connections").await.len(), 2);
    assert_eq!(
        ledger(&app, &key).await.len(),
        3,
        "the grant and two connects"
    );
}

#[tokio::test]
async fn insufficient_credits_create_nothing() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 1).await;
    let mut input = demo_input(&customer, "none");
    input["deployment"] = json!("ON_PREMISES");
    let body = app.gql(&key, CONNECT, json!({ "input": input })).await;
    assert_eq!(error_code(&body), "INSUFFICIENT_CREDITS");
    assert!(
        raw_rows(&app, "SELECT id FROM connections")
            .await
            .is_empty()
    );
    connect(&app, &key, demo_input(&customer, "none")).await;
    let body = app
        .gql(
            &key,
            CONNECT,
            json!({ "input": demo_input(&customer, "none") }),
        )
        .await;
    assert_eq!(error_code(&body), "INSUFFICIENT_CREDITS");
    assert_eq!(
        credits(&app, &key).await,
        json!({ "total": 1, "used": 1, "available": 0 })
    );
}

#[tokio::test]
async fn concurrent_connects_never_overspend_the_pool() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 37).await;
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (http, url, key) = (app.http.clone(), app.url("/graphql"), key.clone());
            let mut input = demo_input(&customer, "none");
            input["validate"] = json!(false);
            tokio::spawn(async move {
                let body: Value = http
                    .post(url)
                    .bearer_auth(key)
                    .json(&json!({ "query": CONNECT, "variables": { "input": input } }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                body
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for task in tasks {
        let body = task.await.unwrap();
        match body.get("errors") {
            None => ok += 1,
            Some(_) => {
                assert_eq!(error_code(&body), "INSUFFICIENT_CREDITS", "{body}");
                refused += 1;
            }
        }
    }
    assert_eq!((ok, refused), (37, 163));
    assert_eq!(
        credits(&app, &key).await,
        json!({ "total": 37, "used": 37, "available": 0 })
    );
    let entries = ledger(&app, &key).await;
    assert_eq!(
        entries
            .iter()
            .map(|e| e["amount"].as_i64().unwrap())
            .sum::<i64>(),
        0,
        "the ledger sums to the pool"
    );
    assert_eq!(
        entries.iter().filter(|e| e["kind"] == "CONNECT").count(),
        37
    );
    assert_eq!(entries.last().unwrap()["balanceAfter"], 0);
}

#[tokio::test]
async fn concurrent_double_disconnects_refund_exactly_once() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 20).await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        let mut input = demo_input(&customer, "none");
        input["validate"] = json!(false);
        ids.push(connect(&app, &key, input).await.0);
    }
    let tasks: Vec<_> = ids
        .iter()
        .flat_map(|id| [id.clone(), id.clone()])
        .map(|id| {
            let (http, url, key) = (app.http.clone(), app.url("/graphql"), key.clone());
            tokio::spawn(async move {
                let body: Value = http
                    .post(url)
                    .bearer_auth(key)
                    .json(&json!({ "query": DISCONNECT, "variables": { "id": id } }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                body
            })
        })
        .collect();
    for task in tasks {
        let body = task.await.unwrap();
        assert_eq!(
            body["data"]["disconnect"]["status"], "DISCONNECTED",
            "{body}"
        );
    }
    assert_eq!(
        credits(&app, &key).await,
        json!({ "total": 20, "used": 0, "available": 20 })
    );
    let entries = ledger(&app, &key).await;
    assert_eq!(
        entries.iter().filter(|e| e["kind"] == "DISCONNECT").count(),
        10
    );
    assert_eq!(
        entries
            .iter()
            .map(|e| e["amount"].as_i64().unwrap())
            .sum::<i64>(),
        20
    );
}

#[tokio::test]
async fn connection_tokens_see_only_their_connection() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let (id, token) = connect(&app, &key, demo_input(&customer, "none")).await;
    let (other, _) = connect(&app, &key, demo_input(&customer, "none")).await;

    let data = app
        .ok(
            &token,
            "query($other: ID!) { viewer { connection { id status } account { name } }
        connections { nodes { id } } mine: connection(id: $other) { id } node(id: $other) { id } }",
            json!({ "other": other }),
        )
        .await;
    assert_eq!(data["viewer"]["connection"]["id"], id.as_str());
    assert_eq!(data["connections"]["nodes"], json!([{ "id": id }]));
    assert_eq!(
        (data["mine"].clone(), data["node"].clone()),
        (Value::Null, Value::Null)
    );

    for query in [
        "{ customers { nodes { id } } }",
        "{ creditLedger { nodes { id } } }",
        "{ viewer { account { apiKeys { id } } } }",
        "mutation { createCustomer(input: {name: \"x\"}) { id } }",
        "mutation { createApiKey(name: \"x\") { key } }",
    ] {
        let body = app.gql(&token, query, json!({})).await;
        assert_eq!(error_code(&body), "FORBIDDEN", "{query}");
    }
    let body = app
        .gql(
            &token,
            CONNECT,
            json!({ "input": demo_input(&customer, "none") }),
        )
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN");
    let body = app.gql(&token, DISCONNECT, json!({ "id": id })).await;
    assert_eq!(error_code(&body), "FORBIDDEN");

    // Another account cannot see or touch the connection.
    let (_, other_key) = app.create_account("Other", 5).await;
    let data = app
        .ok(
            &other_key,
            "query($id: ID!) { connection(id: $id) { id } connections { nodes { id } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        data,
        json!({ "connection": null, "connections": { "nodes": [] } })
    );
    let body = app.gql(&other_key, DISCONNECT, json!({ "id": id })).await;
    assert_eq!(error_code(&body), "NOT_FOUND");
}

#[tokio::test]
async fn rotating_the_token_stops_the_old_one_at_once() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let (id, old) = connect(&app, &key, demo_input(&customer, "none")).await;
    app.ok(&old, "{ viewer { connection { id } } }", json!({}))
        .await;
    let data = app.ok(&key, "mutation($id: ID!) { rotateConnectionToken(id: $id) { token connection { tokenPrefix } } }", json!({ "id": id })).await;
    let new = data["rotateConnectionToken"]["token"].as_str().unwrap();
    let (status, _) = app
        .post(
            Some(&old),
            json!({ "query": "{ viewer { connection { id } } }" }),
        )
        .await;
    assert_eq!(status, 401);
    let data = app
        .ok(new, "{ viewer { connection { id } } }", json!({}))
        .await;
    assert_eq!(data["viewer"]["connection"]["id"], id.as_str());
}

#[tokio::test]
async fn status_changes_through_checks_and_new_credentials() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let mut input = demo_input(&customer, "auth_expired");
    input["validate"] = json!(false);
    let data = app.ok(&key, CONNECT, json!({ "input": input })).await;
    let id = data["connect"]["connection"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(data["connect"]["connection"]["status"], "PENDING");

    let check =
        "mutation($id: ID!) { checkConnection(id: $id) { status statusReason lastCheckedAt } }";
    let data = app.ok(&key, check, json!({ "id": id })).await;
    assert_eq!(data["checkConnection"]["status"], "AUTH_REQUIRED");
    assert!(
        data["checkConnection"]["statusReason"]
            .as_str()
            .unwrap()
            .contains("401")
    );

    let update = "mutation($id: ID!, $c: JSON!) { updateConnectionCredentials(id: $id, credentials: $c) { status statusReason } }";
    let body = app
        .gql(
            &key,
            update,
            json!({ "id": id, "c": { "api_key": "k", "simulate": "offline" } }),
        )
        .await;
    assert_eq!(error_code(&body), "CONNECTION_FAILED");
    let body = app
        .gql(&key, update, json!({ "id": id, "c": { "api_key": "" } }))
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    let data = app
        .ok(
            &key,
            update,
            json!({ "id": id, "c": { "api_key": "new-key", "scale": 5 } }),
        )
        .await;
    assert_eq!(
        data["updateConnectionCredentials"],
        json!({ "status": "ONLINE", "statusReason": null })
    );

    let types = event_types(&app).await;
    let changes: Vec<_> = types
        .iter()
        .filter(|t| t.starts_with("connection."))
        .collect();
    assert_eq!(
        changes,
        [
            "connection.created",
            "connection.status_changed",
            "connection.auth_required",
            "connection.status_changed"
        ]
    );

    let update = "mutation($input: UpdateConnectionInput!) { updateConnection(input: $input) { label syncIntervalMinutes webhookEventTypes metadata } }";
    let data = app
        .ok(
            &key,
            update,
            json!({ "input": { "id": id, "label": "Plant 2", "syncIntervalMinutes": 60,
        "webhookEventTypes": ["SYNC_COMPLETED", "SYNC_FAILED"], "metadata": { "region": "eu" } } }),
        )
        .await;
    assert_eq!(
        data["updateConnection"],
        json!({ "label": "Plant 2", "syncIntervalMinutes": 60,
        "webhookEventTypes": ["SYNC_COMPLETED", "SYNC_FAILED"], "metadata": { "region": "eu" } })
    );
    let data = app
        .ok(
            &key,
            update,
            json!({ "input": { "id": id, "syncIntervalMinutes": null } }),
        )
        .await;
    assert_eq!(data["updateConnection"]["syncIntervalMinutes"], Value::Null);
    assert_eq!(data["updateConnection"]["label"], "Plant 2");
}

#[tokio::test]
async fn the_health_check_moves_statuses() {
    let app = TestApp::spawn_with(|c| c.connectors.health_check_interval_secs = 1).await;
    let (key, customer) = setup(&app, 10).await;
    let mut ids = HashSet::new();
    for simulate in ["none", "offline", "auth_expired"] {
        let mut input = demo_input(&customer, simulate);
        input["validate"] = json!(false);
        ids.insert((connect(&app, &key, input).await.0, simulate));
    }
    let expected = |simulate: &str| match simulate {
        "none" => "ONLINE",
        "offline" => "OFFLINE",
        _ => "AUTH_REQUIRED",
    };
    let statuses = "the health check to settle every status";
    wait_until(Duration::from_secs(10), statuses, async || {
        for (id, simulate) in &ids {
            let data = app
                .ok(
                    &key,
                    "query($id: ID!) { connection(id: $id) { status } }",
                    json!({ "id": id }),
                )
                .await;
            if data["connection"]["status"] != expected(simulate) {
                return false;
            }
        }
        true
    })
    .await;
}

#[tokio::test]
async fn customers_with_live_connections_cannot_be_deleted() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let (id, _) = connect(&app, &key, demo_input(&customer, "none")).await;
    let delete = "mutation($id: ID!) { deleteCustomer(id: $id) }";
    let body = app.gql(&key, delete, json!({ "id": customer })).await;
    assert_eq!(error_code(&body), "CONFLICT");
    app.ok(&key, DISCONNECT, json!({ "id": id })).await;
    app.ok(&key, delete, json!({ "id": customer })).await;
    assert_eq!(ledger(&app, &key).await.len(), 3, "history stays");
}

#[tokio::test]
async fn secrets_never_appear_in_plain_text_in_the_database() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let (_, token) = connect(&app, &key, demo_input(&customer, "none")).await;
    let (id, _) = connect(&app, &key, demo_input(&customer, "none")).await;
    let update = "mutation($id: ID!, $c: JSON!) { updateConnectionCredentials(id: $id, credentials: $c) { status } }";
    app.ok(
        &key,
        update,
        json!({ "id": id, "c": { "api_key": "rotated-secret-456" } }),
    )
    .await;
    let token_secret = &token["mwc_".len()..];
    // The scan sees row contents: the customer's name is stored in plain text.
    let customers = raw_rows(&app, "SELECT * FROM customers").await;
    assert!(
        customers.iter().any(|row| row.contains("North Plant")),
        "{customers:?}"
    );
    for table in [
        "connections",
        "events",
        "credit_ledger",
        "api_keys",
        "accounts",
        "customers",
    ] {
        for row in raw_rows(&app, &format!("SELECT * FROM {table}")).await {
            for secret in [
                "demo-secret-key-123",
                "rotated-secret-456",
                token_secret,
                &key["mwk_".len()..],
            ] {
                assert!(
                    !row.contains(secret),
                    "{table} holds a secret in plain text: {row}"
                );
            }
        }
    }
}

#[tokio::test]
async fn grants_are_booked_with_their_note() {
    let app = TestApp::spawn().await;
    let (account_id, key) = app.create_account("Acme", 0).await;
    let grant = "mutation($id: ID!) { grantCredits(accountId: $id, amount: 7, note: \"pilot\") { total available } }";
    app.ok(ADMIN_TOKEN, grant, json!({ "id": account_id }))
        .await;
    let entries = ledger(&app, &key).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (
            entries[0]["kind"].clone(),
            entries[0]["amount"].clone(),
            entries[0]["note"].clone()
        ),
        (json!("GRANT"), json!(7), json!("pilot"))
    );
    assert!(
        event_types(&app)
            .await
            .contains(&"credits.changed".to_owned())
    );
}

/// A note is stored exactly as given, whatever it holds (on PostgreSQL the movement's values
/// are written into its statement as literals), and a grant past the pool's limit is refused
/// with nothing booked.
#[tokio::test]
async fn a_grant_keeps_any_note_exactly_and_the_pool_its_limit() {
    let app = TestApp::spawn().await;
    let (account_id, key) = app.create_account("Acme", 0).await;
    let grant = "mutation($id: ID!, $n: Int!, $note: String) { grantCredits(accountId: $id, amount: $n, note: $note) { total available } }";
    let notes = [
        "it's a 'quoted' \\ note; DROP TABLE accounts; --",
        "$$ dollar $tag$ quotes $$ and E'\\x00' and \\' and \"double\"",
        "ünïcödé 雪 🚀 and a\ttab\nand a newline",
    ];
    for note in notes {
        app.ok(
            ADMIN_TOKEN,
            grant,
            json!({ "id": account_id, "n": 1, "note": note }),
        )
        .await;
    }
    let big = app
        .gql(
            ADMIN_TOKEN,
            grant,
            json!({ "id": account_id, "n": i32::MAX, "note": "too many" }),
        )
        .await;
    assert_eq!(error_code(&big), "BAD_USER_INPUT", "{big}");
    let entries = ledger(&app, &key).await;
    let booked: Vec<&str> = entries
        .iter()
        .map(|entry| entry["note"].as_str().unwrap())
        .collect();
    assert_eq!(booked.len(), notes.len(), "{entries:?}");
    for note in notes {
        assert!(booked.contains(&note), "{note:?} not in {booked:?}");
    }
    let balance = app
        .ok(
            &key,
            "{ viewer { account { credits { total used available } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        balance["viewer"]["account"]["credits"],
        json!({ "total": 3, "used": 0, "available": 3 })
    );
}

/// A check (health check, `checkConnection`) whose write waits on a disconnect in progress
/// sees the disconnect once it commits: the connection stays DISCONNECTED, and a second
/// disconnect refunds nothing.
#[tokio::test]
async fn a_check_racing_a_disconnect_does_not_bring_the_connection_back() {
    use millwright::{connections, db::Db, ids};
    use sea_orm::{ConnectionTrait, EntityTrait, Statement};
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let (id, _) = connect(&app, &key, demo_input(&customer, "none")).await;
    let id = ids::decode(ids::Kind::Connection, &id).unwrap();
    let db = Db::connect(&crate::harness::test_config(&app.db))
        .await
        .unwrap();
    let row = entity::connection::Entity::find_by_id(id)
        .one(db.conn())
        .await
        .unwrap()
        .unwrap();
    let scope = connections::Scope::account(row.account_id);
    // Another process's disconnect, caught between its UPDATE and its COMMIT.
    let other = Db::connect(&crate::harness::test_config(&app.db))
        .await
        .unwrap();
    let txn = other.begin_write().await.unwrap();
    let backend = txn.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Postgres => {
            "UPDATE connections SET status = 'DISCONNECTED', token_hash = NULL WHERE id = $1"
        }
        _ => "UPDATE connections SET status = 'DISCONNECTED', token_hash = NULL WHERE id = ?",
    };
    txn.execute_raw(Statement::from_sql_and_values(backend, sql, [id.into()]))
        .await
        .unwrap();
    let checking = {
        let db = db.clone();
        tokio::spawn(async move { connections::record_check(&db, scope, id, Ok(())).await })
    };
    let rotating = {
        let db = db.clone();
        tokio::spawn(async move { connections::rotate_token(&db, scope.account_id, id).await })
    };
    // Time for the check and the rotation to reach the row the open transaction holds, so
    // they wait on it; nothing outside the database shows that they do, and were they
    // later, the test would pass all the same, only proving less.
    tokio::time::sleep(Duration::from_millis(300)).await;
    txn.commit().await.unwrap();
    let checked = checking.await.unwrap().unwrap();
    assert_eq!(checked.status, connections::ConnectionStatus::Disconnected);
    let rotated = rotating.await.unwrap();
    assert!(
        rotated.is_err(),
        "no new token for a disconnected connection"
    );
    let row = entity::connection::Entity::find_by_id(id)
        .one(db.conn())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.status, row.token_hash),
        (connections::ConnectionStatus::Disconnected, None)
    );
    other.close().await.unwrap();
    db.close().await.unwrap();
}

/// A customer deleted while a connect for it runs: one of the two wins, the other gets
/// CONFLICT or NOT_FOUND (never INTERNAL), and the credits match what is connected.
#[tokio::test]
async fn connect_and_delete_customer_racing_end_cleanly() {
    let app = TestApp::spawn().await;
    let (key, _) = setup(&app, 100).await;
    let mut connected = 0;
    for round in 0..20 {
        let customer = app
            .create_customer(&key, &format!("Plant {round}"), None)
            .await;
        let customer = customer["id"].as_str().unwrap().to_owned();
        let mut input = demo_input(&customer, "none");
        input["validate"] = json!(false);
        let connect = app.gql(&key, CONNECT, json!({ "input": input }));
        let delete = app.gql(
            &key,
            "mutation($id: ID!) { deleteCustomer(id: $id) }",
            json!({ "id": customer }),
        );
        let (connect, delete) = tokio::join!(connect, delete);
        for body in [&connect, &delete] {
            if !body["errors"].is_null() {
                assert!(
                    ["CONFLICT", "NOT_FOUND"].contains(&error_code(body)),
                    "{body}"
                );
            }
        }
        if connect["errors"].is_null() {
            connected += 1;
            assert!(
                !delete["errors"].is_null(),
                "a customer with a live connection stays"
            );
        }
    }
    let balance = credits(&app, &key).await;
    assert_eq!(balance["used"], connected, "{balance}");
}
