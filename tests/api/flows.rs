//! Flows over HTTP against the demo system: conditions that fire exactly for the records
//! crossing them, CREATED / UPDATED / DELETED triggers, `changed` and `previous`, webhook
//! endpoints and subscriptions filtered by flow, expressions refused with their position,
//! evaluation errors counted while the sync succeeds, the bulk action, the dry run, and
//! tenant isolation.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::{
    bulk::finished as bulk_finished,
    harness::{Receiver, TestApp, connect, error_code, setup, wait_for},
    sync::{entity, last_run, trigger},
    websocket::{next, running},
};

const CREATE: &str = "mutation($input: FlowInput!) { createFlow(input: $input) {
    id name enabled trigger { entity changes systemKeys connectionIds } condition
    actions { type bulkWrite { entity operation relatedBy where fields { field value } } } } }";
const FLOW: &str = "query($id: ID!) { flow(id: $id) {
    id evaluations matches errors lastError lastErrorAt } }";
const FLOW_EVENTS: &str = "query($flows: [ID!], $after: String) {
    events(first: 100, after: $after, filter: {types: [FLOW_TRIGGERED], flowIds: $flows}) {
        nodes { data connectionId } pageInfo { hasNextPage endCursor } } }";
const WORK_ORDERS: &str = "query($c: ID!, $after: String) {
    workOrders(connectionId: $c, first: 100, after: $after, includeDeleted: true) {
        nodes { key status priority deletedAt } pageInfo { hasNextPage endCursor } } }";

fn demo(customer: &str, scale: u64) -> Value {
    json!({ "customerId": customer, "systemKey": "demo",
            "credentials": { "api_key": "flows-test-key", "scale": scale, "simulate": "none" } })
}

fn flow(name: &str, entity: &str, changes: &[&str], condition: &str) -> Value {
    json!({ "name": name, "trigger": { "entity": entity, "changes": changes },
            "condition": condition, "actions": [{ "type": "EMIT_EVENT" }] })
}

async fn create(app: &TestApp, key: &str, input: Value) -> String {
    let data = app.ok(key, CREATE, json!({ "input": input })).await;
    data["createFlow"]["id"].as_str().unwrap().to_owned()
}

/// Every node of a paginated list `field`, following its pages: `query` takes `$after`.
async fn all_pages(
    app: &TestApp,
    key: &str,
    query: &str,
    mut vars: Value,
    field: &str,
) -> Vec<Value> {
    let mut all = Vec::new();
    loop {
        let data = app.ok(key, query, vars.clone()).await;
        let page = &data[field];
        all.extend(page["nodes"].as_array().unwrap().iter().cloned());
        if page["pageInfo"]["hasNextPage"] != true {
            return all;
        }
        vars["after"] = page["pageInfo"]["endCursor"].clone();
    }
}

/// Every `flow.triggered` event of these flows, oldest first: their data.
async fn flow_events(app: &TestApp, key: &str, flows: &[&str]) -> Vec<Value> {
    all_pages(app, key, FLOW_EVENTS, json!({ "flows": flows }), "events")
        .await
        .into_iter()
        .map(|node| node["data"].clone())
        .collect()
}

fn keys_of(events: &[Value]) -> BTreeSet<String> {
    events
        .iter()
        .map(|e| e["record_key"].as_str().unwrap().to_owned())
        .collect()
}

/// The connection's work orders, deleted ones too: key → (status, priority, deleted).
async fn work_orders(
    app: &TestApp,
    key: &str,
    connection: &str,
) -> BTreeMap<String, (Value, Value, bool)> {
    all_pages(
        app,
        key,
        WORK_ORDERS,
        json!({ "c": connection }),
        "workOrders",
    )
    .await
    .into_iter()
    .map(|node| {
        let key = node["key"].as_str().unwrap().to_owned();
        let gone = !node["deletedAt"].is_null();
        (
            key,
            (node["status"].clone(), node["priority"].clone(), gone),
        )
    })
    .collect()
}

/// Parts whose quantity is a multiple of 10: `100 / (int(record.quantity) % 10)` divides
/// by zero for them.
async fn parts_dividing_by_zero(app: &TestApp, key: &str, connection: &str) -> usize {
    let query =
        "query($c: ID!, $after: String) { parts(connectionId: $c, first: 100, after: $after) {
        nodes { quantity } pageInfo { hasNextPage endCursor } } }";
    all_pages(app, key, query, json!({ "c": connection }), "parts")
        .await
        .iter()
        .filter(|n| n["quantity"].as_f64().unwrap() as i64 % 10 == 0)
        .count()
}

async fn stats(app: &TestApp, key: &str, id: &str) -> Value {
    app.ok(key, FLOW, json!({ "id": id })).await["flow"].clone()
}

#[tokio::test]
async fn flows_fire_exactly_for_the_changes_that_meet_their_conditions() {
    let app = TestApp::spawn_with(|c| c.sync.requests_per_second = 100_000).await;
    let (key, customer) = setup(&app, 10).await;
    // Saved before the connection exists: its first (FULL) sync creates every record.
    let urgent_created = create(
        &app,
        &key,
        flow(
            "urgent created",
            "WORK_ORDER",
            &["CREATED"],
            r#"record.priority == "URGENT""#,
        ),
    )
    .await;
    let on_hold = create(
        &app,
        &key,
        flow(
            "put on hold",
            "WORK_ORDER",
            &["UPDATED"],
            r#"record.status == "ON_HOLD" && previous.status != "ON_HOLD""#,
        ),
    )
    .await;
    // Priorities never change in the demo: an urgent work order that changes otherwise
    // stays in the condition and must not fire again.
    let became_urgent = create(
        &app,
        &key,
        flow(
            "became urgent",
            "WORK_ORDER",
            &["CREATED", "UPDATED"],
            r#"record.priority == "URGENT" && (previous == null || previous.priority != "URGENT")"#,
        ),
    )
    .await;
    let deleted = create(
        &app,
        &key,
        flow("deleted", "WORK_ORDER", &["DELETED"], "true"),
    )
    .await;

    let (connection, _) = connect(&app, &key, demo(&customer, 400)).await;
    let first = last_run(&app, &key, &connection).await;
    assert_eq!(first["status"], "SUCCEEDED", "{first}");
    let before = work_orders(&app, &key, &connection).await;
    let urgent: BTreeSet<String> = before
        .iter()
        .filter(|(_, (_, priority, _))| priority == "URGENT")
        .map(|(k, _)| k.clone())
        .collect();
    assert!(urgent.len() > 50, "a quarter of 400 are urgent");
    assert_eq!(
        keys_of(&flow_events(&app, &key, &[&urgent_created]).await),
        urgent
    );
    assert_eq!(
        keys_of(&flow_events(&app, &key, &[&became_urgent]).await),
        urgent
    );
    assert!(flow_events(&app, &key, &[&on_hold]).await.is_empty());
    let created_events = flow_events(&app, &key, &[&urgent_created]).await;
    let one = &created_events[0];
    assert_eq!(one["change"], "CREATED");
    assert_eq!(one["entity"], "WORK_ORDER");
    assert_eq!(one["flow_name"], "urgent created");
    assert_eq!(one["flow_id"], urgent_created.as_str());
    assert!(one["previous"].is_null());
    assert_eq!(one["record"]["priority"], "URGENT");
    assert!(one["changed"].as_array().unwrap().contains(&json!("title")));

    // One generation later: the demo changes about 1 % of the records.
    let run = trigger(&app, &key, &connection, "INCREMENTAL").await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let after = work_orders(&app, &key, &connection).await;
    let crossed: BTreeSet<String> = after
        .iter()
        .filter(|(k, (status, _, gone))| {
            !gone
                && status == "ON_HOLD"
                && before
                    .get(*k)
                    .is_some_and(|(was, _, was_gone)| !was_gone && was != "ON_HOLD")
        })
        .map(|(k, _)| k.clone())
        .collect();
    assert!(!crossed.is_empty(), "some work orders were put on hold");
    let hold_events = flow_events(&app, &key, &[&on_hold]).await;
    assert_eq!(keys_of(&hold_events), crossed);
    assert_eq!(hold_events.len(), crossed.len(), "each fires once");
    for event in &hold_events {
        let key = event["record_key"].as_str().unwrap();
        assert_eq!(event["change"], "UPDATED");
        assert_eq!(event["record"]["status"], "ON_HOLD");
        assert_eq!(event["previous"]["status"], before[key].0, "{event}");
        let changed = event["changed"].as_array().unwrap();
        assert!(changed.contains(&json!("status")), "{event}");
        assert!(!changed.contains(&json!("priority")), "{event}");
    }
    let added_urgent: BTreeSet<String> = after
        .iter()
        .filter(|(k, (_, priority, _))| priority == "URGENT" && !before.contains_key(*k))
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(
        keys_of(&flow_events(&app, &key, &[&became_urgent]).await),
        &urgent | &added_urgent,
        "urgent work orders that changed did not fire again; new ones did"
    );
    let gone: BTreeSet<String> = after
        .iter()
        .filter(|(k, (_, _, gone))| *gone && before.get(*k).is_some_and(|b| !b.2))
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(
        entity(&run, "WORK_ORDER")["deleted"].as_u64().unwrap() as usize,
        gone.len()
    );
    let deleted_events = flow_events(&app, &key, &[&deleted]).await;
    assert_eq!(keys_of(&deleted_events), gone);
    for event in &deleted_events {
        assert_eq!(event["change"], "DELETED");
        assert_eq!(event["changed"], json!([]));
        assert!(event["record"]["title"].is_string(), "{event}");
    }

    let counts = stats(&app, &key, &on_hold).await;
    assert_eq!(counts["matches"], crossed.len() as u64);
    assert_eq!(counts["errors"], 0);
    let updated = entity(&run, "WORK_ORDER")["updated"].as_i64().unwrap();
    assert_eq!(
        counts["evaluations"], updated,
        "one evaluation per updated work order"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(&format!(
            "millwright_flow_matches_total{{flow=\"{on_hold}\"}} {}",
            crossed.len()
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_endpoint_and_a_subscription_filtered_to_one_flow_get_only_its_events() {
    let app = TestApp::spawn_with(|c| {
        c.webhooks.allow_private_targets = true;
        c.sync.requests_per_second = 100_000;
    })
    .await;
    let receiver = Receiver::start(&[]).await;
    let (key, customer) = setup(&app, 10).await;
    let wanted = create(
        &app,
        &key,
        flow(
            "high",
            "WORK_ORDER",
            &["CREATED"],
            r#"record.priority == "HIGH""#,
        ),
    )
    .await;
    let other = create(
        &app,
        &key,
        flow(
            "low",
            "WORK_ORDER",
            &["CREATED"],
            r#"record.priority == "LOW""#,
        ),
    )
    .await;
    let data = app
        .ok(
            &key,
            "mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) {
                secret endpoint { id flowIds eventTypes } } }",
            json!({ "input": { "url": receiver.url, "eventTypes": ["FLOW_TRIGGERED"],
                               "flowIds": [wanted] } }),
        )
        .await;
    let secret = data["createWebhookEndpoint"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        data["createWebhookEndpoint"]["endpoint"]["flowIds"],
        json!([wanted])
    );
    let mut socket = running(
        &app,
        &key,
        "subscription($flows: [ID!]) { events(filter: {types: [FLOW_TRIGGERED], flowIds: $flows}) {
            data } }",
        json!({ "flows": [wanted] }),
    )
    .await;

    let (connection, _) = connect(&app, &key, demo(&customer, 40)).await;
    assert_eq!(
        last_run(&app, &key, &connection).await["status"],
        "SUCCEEDED"
    );
    let expected = flow_events(&app, &key, &[&wanted]).await;
    assert_eq!(expected.len(), 10, "a quarter of 40 work orders are HIGH");
    assert_eq!(flow_events(&app, &key, &[&other]).await.len(), 10);
    let got = receiver.wait_for(expected.len()).await;
    let verifier = standardwebhooks::Webhook::new(&secret).unwrap();
    for received in &got {
        assert!(verifier.verify(&received.body, &received.headers).is_ok());
    }
    let bodies = receiver.bodies();
    assert!(
        bodies
            .iter()
            .all(|b| b["type"] == "flow.triggered" && b["data"]["flow_id"] == wanted.as_str()),
        "{bodies:?}"
    );
    assert_eq!(
        keys_of(&bodies.iter().map(|b| b["data"].clone()).collect::<Vec<_>>()),
        keys_of(&expected)
    );
    for _ in 0..expected.len() {
        let message = next(&mut socket).await.unwrap();
        let data = &message["payload"]["data"]["events"]["data"];
        assert_eq!(data["flow_id"], wanted.as_str(), "{message}");
    }
    // Nothing else arrives: the other flow's events are filtered out.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(receiver.count(), expected.len());
}

#[tokio::test]
async fn mistakes_are_refused_with_where_they_are() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let refused = async |input: Value| {
        let body = app.gql(&key, CREATE, json!({ "input": input })).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
        body["errors"][0].clone()
    };
    let error = refused(flow(
        "typo",
        "WORK_ORDER",
        &["UPDATED"],
        "record.status == \"OPEN\" &&\n  record.priorty == \"URGENT\"",
    ))
    .await;
    assert_eq!(error["extensions"]["field"], "condition", "{error}");
    assert_eq!(error["extensions"]["line"], 2, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("priorty"),
        "{error}"
    );
    let error = refused(flow(
        "syntax",
        "WORK_ORDER",
        &["UPDATED"],
        "record.status == ",
    ))
    .await;
    assert_eq!(error["extensions"]["line"], 1, "{error}");
    let error = refused(flow(
        "word",
        "WORK_ORDER",
        &["UPDATED"],
        r#"record.priority == "URGNET""#,
    ))
    .await;
    assert!(
        error["message"].as_str().unwrap().contains("URGENT"),
        "{error}"
    );
    refused(flow(
        "type",
        "WORK_ORDER",
        &["UPDATED"],
        "record.title == 5",
    ))
    .await;
    refused(flow("not bool", "WORK_ORDER", &["UPDATED"], "record.title")).await;
    refused(flow(
        "variable",
        "ASSET",
        &["UPDATED"],
        "asset.name == \"x\"",
    ))
    .await;
    refused(flow("no change", "ASSET", &[], "true")).await;
    refused(flow(" ", "ASSET", &["CREATED"], "true")).await;
    let huge = format!("{}true", "true && ".repeat(1000));
    refused(flow("huge", "ASSET", &["CREATED"], &huge)).await;
    let mut no_action = flow("no action", "ASSET", &["CREATED"], "true");
    no_action["actions"] = json!([]);
    refused(no_action).await;
    let mut bad_field = flow("bad field", "ASSET", &["UPDATED"], "true");
    bad_field["actions"] = json!([{ "type": "BULK_WRITE", "bulkWrite": { "entity": "ASSET",
        "operation": "UPDATE", "fields": [{ "field": "status", "value": "\"x\"" }] } }]);
    refused(bad_field).await;
    let mut bad_value = flow("bad value", "ASSET", &["UPDATED"], "true");
    bad_value["actions"] = json!([{ "type": "BULK_WRITE", "bulkWrite": { "entity": "ASSET",
        "operation": "UPDATE", "fields": [{ "field": "isActive", "value": "record.name" }] } }]);
    let error = refused(bad_value).await;
    assert_eq!(
        error["extensions"]["field"], "actions[0].bulkWrite.fields[0].value",
        "{error}"
    );
    // A name is unique in the account.
    create(&app, &key, flow("taken", "ASSET", &["CREATED"], "true")).await;
    let body = app
        .gql(
            &key,
            CREATE,
            json!({ "input": flow("taken", "SITE", &["CREATED"], "true") }),
        )
        .await;
    assert_eq!(error_code(&body), "CONFLICT", "{body}");
    // Connection tokens and other accounts' connections.
    let (connection, token) = connect(&app, &key, demo(&customer, 10)).await;
    let body = app
        .gql(
            &token,
            CREATE,
            json!({ "input": flow("token", "ASSET", &["CREATED"], "true") }),
        )
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    let (other_key, _) = setup(&app, 10).await;
    let mut foreign = flow("foreign", "ASSET", &["CREATED"], "true");
    foreign["trigger"]["connectionIds"] = json!([connection]);
    let body = app
        .gql(&other_key, CREATE, json!({ "input": foreign }))
        .await;
    assert_eq!(error_code(&body), "NOT_FOUND", "{body}");
}

#[tokio::test]
async fn evaluation_errors_are_counted_and_the_sync_still_succeeds() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    // Division by zero for every part whose quantity is a multiple of 10.
    let id = create(
        &app,
        &key,
        flow(
            "divides",
            "PART",
            &["CREATED"],
            "100 / (int(record.quantity) % 10) > 0",
        ),
    )
    .await;
    let (connection, _) = connect(&app, &key, demo(&customer, 200)).await;
    let run = last_run(&app, &key, &connection).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let counts = wait_for(
        std::time::Duration::from_secs(10),
        "the counters",
        async || {
            let counts = stats(&app, &key, &id).await;
            (counts["evaluations"] == 200).then_some(counts)
        },
    )
    .await;
    let zero = parts_dividing_by_zero(&app, &key, &connection).await;
    assert_eq!(counts["errors"], zero as u64, "{counts}");
    assert_eq!(counts["matches"], (200 - zero) as u64, "{counts}");
    assert!(
        counts["lastError"].as_str().unwrap().contains("PRT-"),
        "{counts}"
    );
    assert!(counts["lastErrorAt"].is_string());
}

#[tokio::test]
async fn the_bulk_action_writes_to_the_demo_remote() {
    let app = TestApp::spawn_with(|c| c.sync.requests_per_second = 100_000).await;
    let (key, customer) = setup(&app, 10).await;
    let (connection, _) = connect(&app, &key, demo(&customer, 300)).await;
    assert_eq!(
        last_run(&app, &key, &connection).await["status"],
        "SUCCEEDED"
    );
    let before = work_orders(&app, &key, &connection).await;
    // When an asset changes, complete its open work orders (the work order whose
    // `assetKey` is the asset's key).
    let mut input = flow(
        "close",
        "ASSET",
        &["UPDATED"],
        r#""description" in changed"#,
    );
    input["actions"] = json!([{ "type": "EMIT_EVENT" }, { "type": "BULK_WRITE", "bulkWrite": {
        "entity": "WORK_ORDER", "operation": "UPDATE", "relatedBy": "assetKey",
        "where": r#"target.status == "OPEN""#,
        "fields": [{ "field": "status", "value": r#""COMPLETED""# },
                   { "field": "instructions", "value": r#""Closed: asset " + record.key + " changed""# }] } }]);
    let id = create(&app, &key, input).await;
    let run = trigger(&app, &key, &connection, "INCREMENTAL").await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let events = flow_events(&app, &key, &[&id]).await;
    assert!(!events.is_empty());
    // One operation per flow action and sync page, holding what the page's matches select.
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    for event in &events {
        let asset = event["record_key"].as_str().unwrap();
        let number: u64 = asset.trim_start_matches("AST-").parse().unwrap();
        // Work order n refers to asset n % 300 + 1.
        let open = before
            .iter()
            .filter(|(k, (status, _, gone))| {
                let wo: u64 = k.trim_start_matches("WO-").parse().unwrap();
                !gone && status == "OPEN" && wo % 300 + 1 == number
            })
            .count();
        let operations = event["bulk_operation_ids"].as_array().unwrap();
        assert_eq!(operations.len(), usize::from(open > 0), "{event}");
        for op in operations {
            *expected.entry(op.as_str().unwrap().to_owned()).or_default() += open;
        }
    }
    let mut written = 0;
    for (id, total) in &expected {
        let op = bulk_finished(&app, &key, id).await;
        assert_eq!(op["status"], "SUCCEEDED", "{op}");
        assert_eq!(op["total"], *total as u64, "{op}");
        written += total;
    }
    assert!(written > 0, "some changed asset had an open work order");
    let data = app
        .ok(
            &key,
            "query($c: ID!) { bulkOperations(connectionId: $c, first: 100) { nodes { flowId } } }",
            json!({ "c": connection }),
        )
        .await;
    assert!(
        data["bulkOperations"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["flowId"] == id.as_str())
    );
    // Written through to the store at once.
    let now = work_orders(&app, &key, &connection).await;
    let completed = now
        .iter()
        .filter(|(k, (status, _, _))| status == "COMPLETED" && before[*k].0 == "OPEN")
        .count();
    assert!(completed >= written, "{completed} < {written}");
}

#[tokio::test]
async fn test_flow_reports_matches_and_errors_without_writing() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let (connection, _) = connect(&app, &key, demo(&customer, 100)).await;
    assert_eq!(
        last_run(&app, &key, &connection).await["status"],
        "SUCCEEDED"
    );
    let query =
        "query($input: FlowInput!, $c: ID!) { testFlow(input: $input, connectionId: $c, first: 5) {
        evaluated matched errors truncated matches { key ... on WorkOrder { priority } }
        evaluationErrors { recordKey message } } }";
    let input = flow(
        "dry",
        "WORK_ORDER",
        &["UPDATED"],
        r#"record.priority == "URGENT" && record.title.startsWith("Inspect")"#,
    );
    let data = app
        .ok(&key, query, json!({ "input": input, "c": connection }))
        .await;
    let result = &data["testFlow"];
    assert_eq!(result["evaluated"], 100);
    assert_eq!(result["matched"], 25);
    assert_eq!(result["errors"], 0);
    assert_eq!(result["truncated"], false);
    let matches = result["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 5);
    assert!(matches.iter().all(|m| m["priority"] == "URGENT"));
    let failing = flow(
        "dry",
        "PART",
        &["CREATED"],
        "100 / (int(record.quantity) % 10) > 0",
    );
    let data = app
        .ok(&key, query, json!({ "input": failing, "c": connection }))
        .await;
    let zero = parts_dividing_by_zero(&app, &key, &connection).await;
    assert!(zero > 0);
    assert_eq!(data["testFlow"]["errors"], zero as u64, "{data}");
    assert!(
        data["testFlow"]["evaluationErrors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("ivision"),
        "{data}"
    );
    // Nothing was saved or sent.
    let data = app.ok(&key, "{ flows { nodes { id } } }", json!({})).await;
    assert_eq!(data["flows"]["nodes"], json!([]));
    assert!(flow_events(&app, &key, &[]).await.is_empty());
}

#[tokio::test]
async fn a_flow_never_sees_another_accounts_records() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let (other_key, _) = setup(&app, 10).await;
    let mine = create(&app, &key, flow("all", "WORK_ORDER", &["CREATED"], "true")).await;
    let theirs = create(
        &app,
        &other_key,
        flow("all", "WORK_ORDER", &["CREATED"], "true"),
    )
    .await;
    let (connection, _) = connect(&app, &key, demo(&customer, 20)).await;
    assert_eq!(
        last_run(&app, &key, &connection).await["status"],
        "SUCCEEDED"
    );
    assert_eq!(flow_events(&app, &key, &[&mine]).await.len(), 20);
    assert!(flow_events(&app, &other_key, &[&theirs]).await.is_empty());
    assert!(flow_events(&app, &other_key, &[&mine]).await.is_empty());
    assert_eq!(stats(&app, &other_key, &theirs).await["evaluations"], 0);
    // The other account sees none of it.
    let data = app.ok(&other_key, FLOW, json!({ "id": mine })).await;
    assert!(data["flow"].is_null());
    let body = app
        .gql(
            &other_key,
            "mutation($id: ID!) { deleteFlow(id: $id) }",
            json!({ "id": mine }),
        )
        .await;
    assert_eq!(error_code(&body), "NOT_FOUND", "{body}");
    let body = app
        .gql(
            &other_key,
            "query($input: FlowInput!, $c: ID!) { testFlow(input: $input, connectionId: $c) { evaluated } }",
            json!({ "input": flow("t", "WORK_ORDER", &["CREATED"], "true"), "c": connection }),
        )
        .await;
    assert_eq!(error_code(&body), "NOT_FOUND", "{body}");
    let body = app
        .gql(
            &other_key,
            "mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { secret } }",
            json!({ "input": { "url": "https://example.com/hook", "flowIds": [mine] } }),
        )
        .await;
    assert_eq!(error_code(&body), "NOT_FOUND", "{body}");
    // Updating and deleting one's own.
    let data = app
        .ok(
            &key,
            "mutation($input: UpdateFlowInput!) { updateFlow(input: $input) { name enabled condition evaluations } }",
            json!({ "input": { "id": mine, "name": "renamed", "enabled": false } }),
        )
        .await;
    assert_eq!(data["updateFlow"]["name"], "renamed");
    assert_eq!(data["updateFlow"]["enabled"], false);
    assert_eq!(data["updateFlow"]["evaluations"], 20, "counters stay");
    app.ok(
        &key,
        "mutation($id: ID!) { deleteFlow(id: $id) }",
        json!({ "id": mine }),
    )
    .await;
    assert!(app.ok(&key, FLOW, json!({ "id": mine })).await["flow"].is_null());
}
