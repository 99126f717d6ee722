//! Sync runs under faults: writers of one connection never deadlock on PostgreSQL.

use std::time::Duration;

use entity::sync_run;
use sea_orm::{ColumnTrait, Database, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use crate::harness::{ADMIN_TOKEN, ServerProcess, TestDb, wait_until};

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
    let data = server
        .gql(
            ADMIN_TOKEN,
            "mutation { createAccount(input: {name: \"A\", credits: 100}) { apiKey } }",
            json!({}),
        )
        .await;
    let key = data["createAccount"]["apiKey"].as_str().unwrap().to_owned();
    let data = server
        .gql(
            &key,
            "mutation { createCustomer(input: {name: \"C\"}) { id } }",
            json!({}),
        )
        .await;
    let customer = data["createCustomer"]["id"].as_str().unwrap().to_owned();
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
