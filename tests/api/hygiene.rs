//! GraphQL and HTTP hygiene: bad bodies, limits, error codes, introspection, health, metrics.

use serde_json::{Value, json};

use crate::harness::{TestApp, error_code};

async fn raw_post(app: &TestApp, body: &'static str) -> (u16, Value) {
    let response = app
        .http
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn bodies_that_are_not_graphql_requests_get_400() {
    let app = TestApp::spawn().await;
    for body in [
        "not json",
        "{",
        "",
        "[]",
        "{\"query\": 5}",
        "{\"foo\": 1}",
        "null",
        "\"query\"",
        "[1, 2]",
    ] {
        let (status, json) = raw_post(&app, body).await;
        assert_eq!(status, 400, "body {body:?}");
        assert_eq!(error_code(&json), "BAD_USER_INPUT", "body {body:?}");
    }
}

#[tokio::test]
async fn syntax_and_validation_errors_are_bad_user_input() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    for query in [
        "{ viewer { ",
        "{ nope }",
        "{ viewer { account { secret } } }",
        "query($x: Int!) { viewer { account { id } } }",
    ] {
        let body = app.gql(&key, query, json!({})).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "query {query:?}");
    }
}

#[tokio::test]
async fn batches_work_and_are_capped() {
    let app = TestApp::spawn_with(|c| c.http.max_batch_size = 3).await;
    let (_, key) = app.create_account("A", 0).await;
    let one = json!({ "query": "{ viewer { account { name } } }" });
    let (status, body) = app.post(Some(&key), json!([one, one])).await;
    assert_eq!(status, 200);
    assert_eq!(body[1]["data"]["viewer"]["account"]["name"], "A");
    let (status, body) = app.post(Some(&key), json!([one, one, one, one])).await;
    assert_eq!((status, error_code(&body)), (400, "BAD_USER_INPUT"));
}

#[tokio::test]
async fn deep_queries_and_alias_bombs_are_too_complex() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    let deep = format!(
        "{{ __schema {{ types {{ {}name{} }} }} }}",
        "ofType { ".repeat(30),
        " }".repeat(30)
    );
    let body = app.gql(&key, &deep, json!({})).await;
    assert_eq!(error_code(&body), "QUERY_TOO_COMPLEX");

    let aliases: String = (0..2000)
        .map(|i| format!("a{i}: viewer {{ account {{ name }} }} "))
        .collect();
    let body = app.gql(&key, &format!("{{ {aliases} }}"), json!({})).await;
    assert_eq!(error_code(&body), "QUERY_TOO_COMPLEX");
    assert!(body["data"].is_null());

    let fragments: String = (0..50)
        .map(|i| format!("fragment F{i} on Query {{ ...F{} }} ", i + 1))
        .collect();
    let body = app
        .gql(
            &key,
            &format!(
                "{{ ...F0 }} {fragments} fragment F50 on Query {{ viewer {{ account {{ id }} }} }}"
            ),
            json!({}),
        )
        .await;
    assert!(
        matches!(error_code(&body), "QUERY_TOO_COMPLEX" | "BAD_USER_INPUT"),
        "{body}"
    );
}

#[tokio::test]
async fn graphiql_introspection_still_works() {
    let app = TestApp::spawn().await;
    let page = app.http.get(app.url("/graphql")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("graphiql"));
    let (status, body) = app.post(None, json!({ "query": INTROSPECTION })).await;
    assert_eq!(status, 200);
    assert!(body.get("errors").is_none(), "{body}");
    let types = body["data"]["__schema"]["types"].as_array().unwrap();
    assert!(types.iter().any(|t| t["name"] == "Customer"));
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let app = TestApp::spawn_with(|c| c.http.body_limit_bytes = 64 * 1024).await;
    let query = format!(
        "{{ viewer {{ account {{ name }} }} }} # {}",
        "x".repeat(100 * 1024)
    );
    let body = json!({ "query": query });
    let response = app
        .http
        .post(app.url("/graphql"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn health_readiness_metrics_and_request_ids() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(ready.headers().contains_key("x-request-id"));

    app.ok(
        &key,
        "query DashboardCustomers { customers { nodes { id } } }",
        json!({}),
    )
    .await;
    let body = app
        .gql(
            &key,
            "query Broken { customers(first: 500) { nodes { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            r#"millwright_graphql_requests_total{operation="DashboardCustomers",outcome="ok"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"millwright_graphql_requests_total{operation="Broken",outcome="error"} 1"#)
    );
    assert!(metrics.contains(
        r#"millwright_graphql_request_duration_seconds_count{operation="DashboardCustomers"} 1"#
    ));
    assert!(metrics.contains(r#"millwright_http_requests_total{route="/graphql",status="200"}"#));
}

#[tokio::test]
async fn graceful_shutdown_stops_the_server() {
    let app = TestApp::spawn().await;
    let addr = app.addr;
    app.stop().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

const INTROSPECTION: &str = r#"query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name
    ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }
}"#;

/// A declared variable that is missing or of the wrong type is the caller's mistake, found
/// where the variable is used: `BAD_USER_INPUT` with the library's message, not `INTERNAL`.
#[tokio::test]
async fn missing_or_mistyped_variables_are_bad_input() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("Acme", 0).await;
    let query = "query($n: Int!) { customers(first: $n) { nodes { id } } }";
    // (A `null` for the `Int!` reaches the optional argument as null: async-graphql checks a
    // variable only where it is used, against the argument's type; see docs/edge.md.)
    for variables in [json!({}), json!({"n": "many"})] {
        let (status, body) = app
            .post(Some(&key), json!({"query": query, "variables": variables}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{variables}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert_ne!(message, "internal error", "{variables}: {body}");
    }
}

/// NUL and the other control characters (but tab, line feed, carriage return) are refused in
/// every text input, as variables or as literals, on either database, before anything is
/// stored; the refusal names where the character is.
#[tokio::test]
async fn control_characters_in_any_text_are_bad_input() {
    use crate::harness::{connect, demo_input, setup};
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let (connection, _) = connect(&app, &key, demo_input(&customer, "none")).await;
    let create = "mutation($input: CreateCustomerInput!) { createCustomer(input: $input) { id } }";
    let refused = [
        (create, json!({ "input": { "name": "North\u{0}Plant" } })),
        (
            create,
            json!({ "input": { "name": "ok", "externalId": "x\u{1b}[2J" } }),
        ),
        (
            create,
            json!({ "input": { "name": "C1 \u{85} next line" } }),
        ),
        (
            "mutation { createCustomer(input: { name: \"a\\u0000b\" }) { id } }",
            json!({}),
        ),
        (
            "query($s: String) { customers(search: $s) { nodes { id } } }",
            json!({ "s": "\u{0}" }),
        ),
        ("{ system(key: \"sap\\u0000\") { key } }", json!({})),
        (
            "mutation($input: UpdateConnectionInput!) { updateConnection(input: $input) { id } }",
            json!({ "input": { "id": connection, "metadata": { "plant": "a\u{0}b" } } }),
        ),
        (
            "mutation($input: UpdateConnectionInput!) { updateConnection(input: $input) { id } }",
            json!({ "input": { "id": connection, "metadata": { "k\u{0}": 1 } } }),
        ),
        (
            "mutation($input: UpdateConnectionInput!) { updateConnection(input: $input) { id } }",
            json!({ "input": { "id": connection, "label": "\u{7f}" } }),
        ),
        (
            "mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { secret } }",
            json!({ "input": { "url": "https://example.com/hook", "description": "bell\u{7}" } }),
        ),
    ];
    for (query, variables) in refused {
        let body = app.gql(&key, query, variables.clone()).await;
        assert_eq!(
            error_code(&body),
            "BAD_USER_INPUT",
            "{query} {variables}: {body}"
        );
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("control character U+"), "{message}");
    }
    // Nothing was stored; tab, line feed and carriage return are text like any other.
    let update =
        "mutation($input: UpdateConnectionInput!) { updateConnection(input: $input) { metadata } }";
    let note = json!({ "note": "two\nlines\tand\r tab" });
    let data = app
        .ok(
            &key,
            update,
            json!({ "input": { "id": connection, "metadata": note } }),
        )
        .await;
    assert_eq!(data["updateConnection"]["metadata"], note);
    let data = app
        .ok(
            &key,
            "query($id: ID!) { customers { nodes { name } } connection(id: $id) { label } webhookEndpoints { nodes { id } } }",
            json!({ "id": connection }),
        )
        .await;
    assert_eq!(
        data,
        json!({ "customers": { "nodes": [{ "name": "North Plant" }] },
                "connection": { "label": null }, "webhookEndpoints": { "nodes": [] } })
    );
}

/// List arguments have a cap (100 entries); event types given twice count once.
#[tokio::test]
async fn list_arguments_are_capped_and_deduplicated() {
    use crate::harness::{connect, demo_input, setup};
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let (connection, _) = connect(&app, &key, demo_input(&customer, "none")).await;
    let many: Vec<&str> = std::iter::repeat_n("CONNECTION_CREATED", 101).collect();
    let refused = [
        (
            "query($t: [EventType!]) { events(filter: { types: $t }) { nodes { id } } }",
            json!({ "t": many }),
        ),
        (
            "mutation($id: ID!, $t: [EventType!]) { updateConnection(input: { id: $id, webhookEventTypes: $t }) { id } }",
            json!({ "id": connection, "t": many }),
        ),
        (
            "mutation($t: [EventType!]) { createWebhookEndpoint(input: { url: \"https://example.com/h\", eventTypes: $t }) { secret } }",
            json!({ "t": many }),
        ),
    ];
    for (query, variables) in refused {
        let body = app.gql(&key, query, variables).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{query}: {body}");
    }
    let hundred: Vec<&str> = many[..100].to_vec();
    let data = app
        .ok(
            &key,
            "query($t: [EventType!]) { events(filter: { types: $t }) { nodes { type } } }",
            json!({ "t": hundred }),
        )
        .await;
    assert_eq!(
        data["events"]["nodes"],
        json!([{ "type": "CONNECTION_CREATED" }])
    );
    let data = app
        .ok(
            &key,
            "mutation($id: ID!, $t: [EventType!]) { updateConnection(input: { id: $id, webhookEventTypes: $t }) { webhookEventTypes } }",
            json!({ "id": connection, "t": ["SYNC_FAILED", "SYNC_COMPLETED", "SYNC_FAILED"] }),
        )
        .await;
    assert_eq!(
        data["updateConnection"]["webhookEventTypes"],
        json!(["SYNC_COMPLETED", "SYNC_FAILED"])
    );
}
