//! Query cost (docs/queries.md): every operation is priced before it runs, a list multiplying
//! what it selects by its page size; an operation over `MILLWRIGHT_MAX_QUERY_COST` is refused
//! with `QUERY_TOO_COMPLEX`, and every result reports `extensions.cost`. Over WebSocket, queries
//! and mutations are held to `MILLWRIGHT_REQUEST_TIMEOUT_SECS` as over HTTP.

use serde_json::{Value, json};

use crate::{
    harness::{TestApp, error_code, setup},
    websocket::{init, next, open, send},
};

/// `customers → connections(first: 100) → customer → …`: with `levels` 3, seven fields
/// deep and 100^4 connections asked for, within the depth and field-count limits.
fn bomb(levels: usize) -> String {
    let mut inner = "id".to_owned();
    for _ in 0..levels {
        inner = format!("connections(first: 100) {{ nodes {{ customer {{ {inner} }} }} }}");
    }
    format!("{{ customers(first: 100) {{ nodes {{ {inner} }} }} }}")
}

fn cost(body: &Value) -> (u64, u64) {
    let cost = &body["extensions"]["cost"];
    (
        cost["requested"]
            .as_u64()
            .unwrap_or_else(|| panic!("no cost in {body}")),
        cost["limit"]
            .as_u64()
            .unwrap_or_else(|| panic!("no limit in {body}")),
    )
}

#[tokio::test]
async fn the_nested_list_bomb_is_refused_with_its_cost() {
    let app = TestApp::spawn().await;
    let (key, _) = setup(&app, 0).await;
    let body = app.gql(&key, &bomb(3), json!({})).await;
    assert_eq!(error_code(&body), "QUERY_TOO_COMPLEX", "{body}");
    assert!(body["data"].is_null(), "{body}");
    let error = &body["errors"][0]["extensions"]["cost"];
    assert_eq!(error["limit"], 10_000, "{body}");
    // 100 customers, each with 100 connections and their customers, three times over.
    let mut per = 0u64;
    for _ in 0..3 {
        per = 100 * (1 + 1 + per);
    }
    let expected = 100 * (1 + per);
    assert_eq!(error["requested"].as_u64(), Some(expected), "{body}");
    assert_eq!(cost(&body), (expected, 10_000));
}

#[tokio::test]
async fn a_legitimate_query_reports_its_cost() {
    let app = TestApp::spawn().await;
    let (key, _) = setup(&app, 0).await;
    let body = app
        .gql(
            &key,
            "{ viewer { account { name } } customers(first: 10) { nodes { id name } pageInfo { hasNextPage } } }",
            json!({}),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    // viewer 1 + account 1 + 10 customers.
    assert_eq!(cost(&body), (12, 10_000));

    // No `first`: the default page of 50; edges and nodes are the same page.
    let body = app
        .gql(
            &key,
            "{ customers { edges { cursor node { id } } nodes { connections { nodes { id } } } } }",
            json!({}),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(cost(&body).0, 50 * (1 + 50));

    // A failing operation reports its cost too; a page past 100 counts as 100.
    let body = app
        .gql(
            &key,
            "{ customers(first: 101) { nodes { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(cost(&body), (100, 10_000));
}

#[tokio::test]
async fn the_limit_is_a_setting_and_pages_from_variables_and_fragments_count() {
    let app = TestApp::spawn_with(|config| config.http.max_query_cost = 1_000).await;
    let (key, _) = setup(&app, 0).await;
    let query = "query($n: Int, $m: Int = 30) { customers(first: $n) { nodes { ...C } } }
        fragment C on Customer { id connections(first: $m) { nodes { id } } }";
    let body = app.gql(&key, query, json!({ "n": 20 })).await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(cost(&body), (20 * (1 + 30), 1_000));

    let body = app.gql(&key, query, json!({ "n": 40, "m": 30 })).await;
    assert_eq!(error_code(&body), "QUERY_TOO_COMPLEX", "{body}");
    assert_eq!(cost(&body), (40 * 31, 1_000));

    // Inline fragments are followed and aliases count separately.
    let body = app
        .gql(
            &key,
            "{ a: customers(first: 10) { nodes { ... on Customer { id } } }
               b: customers(first: 10) { nodes { id } } }",
            json!({}),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(cost(&body).0, 20);
}

#[tokio::test]
async fn a_subscription_over_a_bomb_selection_is_refused() {
    let app = TestApp::spawn().await;
    let (key, _) = setup(&app, 0).await;
    let mut inner = "id".to_owned();
    for _ in 0..4 {
        inner = format!("connections(first: 100) {{ nodes {{ customer {{ {inner} }} }} }}");
    }
    let query = format!("subscription {{ connectionStatus {{ customer {{ {inner} }} }} }}");
    let mut socket = open(&app).await;
    init(&mut socket, &key).await;
    send(
        &mut socket,
        json!({ "id": "s", "type": "subscribe", "payload": { "query": query } }),
    )
    .await;
    let message = next(&mut socket).await.unwrap();
    assert_eq!(message["type"], "error", "{message}");
    assert_eq!(message["id"], "s");
    let error = &message["payload"][0]["extensions"];
    assert_eq!(error["code"], "QUERY_TOO_COMPLEX", "{message}");
    assert!(
        error["cost"]["requested"].as_u64().unwrap() > 10_000,
        "{message}"
    );

    // A query over the socket reports its cost in its `next` payload.
    send(
        &mut socket,
        json!({ "id": "q", "type": "subscribe", "payload": { "query": "{ customers(first: 5) { nodes { id } } }" } }),
    )
    .await;
    let message = next(&mut socket).await.unwrap();
    assert_eq!(message["type"], "next", "{message}");
    assert_eq!(cost(&message["payload"]), (5, 10_000));
}

#[tokio::test]
async fn unpaginated_lists_are_capped() {
    let app = TestApp::spawn().await;
    let (key, _) = setup(&app, 0).await;
    for name in ["two", "three"] {
        app.ok(
            &key,
            "mutation($n: String!) { createApiKey(name: $n) { key } }",
            json!({ "n": name }),
        )
        .await;
    }
    let data = app
        .ok(
            &key,
            "{ viewer { account { apiKeys { name } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data["viewer"]["account"]["apiKeys"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let first = app
        .ok(
            &key,
            "{ viewer { account { apiKeys(first: 2) { id name } } } }",
            json!({}),
        )
        .await;
    let page = first["viewer"]["account"]["apiKeys"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(page.len(), 2);
    let body = app
        .gql(
            &key,
            "query($after: ID) { viewer { account { apiKeys(first: 2, after: $after) { name } } } }",
            json!({ "after": page[1]["id"] }),
        )
        .await;
    assert_eq!(
        body["data"]["viewer"]["account"]["apiKeys"],
        json!([{ "name": "three" }])
    );
    // viewer, account and a page of 2 keys.
    assert_eq!(cost(&body).0, 4);
    let body = app
        .gql(
            &key,
            "{ viewer { account { apiKeys(first: 101) { name } } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
}

/// A remote that accepts connections and never answers.
async fn stalling_remote() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (url, task)
}

#[tokio::test]
async fn a_mutation_over_the_socket_is_held_to_the_request_timeout() {
    let app = TestApp::spawn_with(|config| {
        config.http.request_timeout_secs = 1;
        config.connectors.allow_private_targets = true;
    })
    .await;
    let (key, customer) = setup(&app, 10).await;
    let (url, remote) = stalling_remote().await;
    let mut socket = open(&app).await;
    init(&mut socket, &key).await;
    let input = json!({ "customerId": customer, "systemKey": "maintainx",
                        "credentials": { "api_key": "k", "base_url": url } });
    send(
        &mut socket,
        json!({ "id": "c", "type": "subscribe", "payload": {
            "query": "mutation($input: ConnectInput!) { connect(input: $input) { token } }",
            "variables": { "input": input } } }),
    )
    .await;
    let message = next(&mut socket).await.unwrap();
    assert_eq!(message["id"], "c", "{message}");
    let errors = if message["type"] == "error" {
        &message["payload"]
    } else {
        &message["payload"]["errors"]
    };
    assert_eq!(errors[0]["extensions"]["code"], "TIMEOUT", "{message}");
    // The socket stays usable.
    send(
        &mut socket,
        json!({ "id": "q", "type": "subscribe", "payload": { "query": "{ viewer { account { name } } }" } }),
    )
    .await;
    let message = next(&mut socket).await.unwrap();
    assert_eq!(
        message["payload"]["data"]["viewer"]["account"]["name"], "Acme",
        "{message}"
    );
    remote.abort();
}
