//! Property tests through the real GraphQL layer: ids, cursors, page sizes, filters and text
//! inputs of any shape (unicode, control characters, huge numbers, foreign ids, base64 of
//! anything) get an answer in which every error has a code, never `INTERNAL`, never a 5xx,
//! on either database. proptest shrinks a failure to its smallest input.

use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use serde_json::{Value, json};

use crate::harness::{TestApp, connect, demo_input, setup};

/// The codes a refusal may carry; `INTERNAL` is not among them.
const CODES: &[&str] = &[
    "BAD_USER_INPUT",
    "NOT_FOUND",
    "FORBIDDEN",
    "CONFLICT",
    "UNAUTHENTICATED",
    "INSUFFICIENT_CREDITS",
    "CONNECTION_FAILED",
    "QUERY_TOO_COMPLEX",
    "RATE_LIMITED",
];

/// Cases per property; `PROPTEST_CASES` overrides it for a longer hunt.
fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Text of every kind: arbitrary unicode (control characters included), id-like, cursor-like
/// (base64 of arbitrary bytes and of position-like text), long, empty.
fn text() -> impl Strategy<Value = String> {
    use base64::Engine;
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9_ -]{0,30}",
        "(acc|key|cus|con|crd|evt|run|rec|whe|whd|xyz)_[0-9a-fA-F]{0,40}",
        prop::collection::vec(any::<u8>(), 0..64).prop_map(b64),
        ("(evt|cus|con|rec|run|crd|whe|whd)?", any::<i64>())
            .prop_map(move |(p, n)| b64(format!("{p}{n}").into_bytes())),
        (1usize..20_000).prop_map(|n| "x".repeat(n)),
        Just(String::new()),
    ]
}

/// JSON of any shape, for `JSON` inputs (metadata, credentials).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(text(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A page size argument: any `Int`, and sometimes a value that is not one.
fn page_size() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i32>().prop_map(Value::from),
        (-5i32..150).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        text().prop_map(Value::from),
    ]
}

/// Sends one operation and checks the answer.
async fn answer_has_codes(
    app: &TestApp,
    token: &str,
    query: &str,
    variables: Value,
) -> Result<(), TestCaseError> {
    let (status, body) = app
        .post(
            Some(token),
            json!({ "query": query, "variables": variables }),
        )
        .await;
    prop_assert!(status < 500, "HTTP {status}: {body}");
    if let Some(errors) = body.get("errors") {
        for error in errors.as_array().into_iter().flatten() {
            let code = error["extensions"]["code"].as_str().unwrap_or("(none)");
            prop_assert!(CODES.contains(&code), "code {code} in {body}");
        }
    } else {
        prop_assert!(
            body.get("data").is_some(),
            "neither data nor errors: {body}"
        );
    }
    Ok(())
}

/// Runs `property` over `strategy` with the async server from a synchronous proptest runner.
fn check<S: Strategy>(
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> Result<(), String>
where
    S::Value: std::fmt::Debug,
{
    runner()
        .run(&strategy, property)
        .map_err(|failure| failure.to_string())
}

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_id_cursor_page_size_or_filter_gets_a_coded_answer() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 100).await;
    let (connection, token) = connect(&app, &key, demo_input(&customer, "none")).await;
    let queries = [
        "query($id: ID!) { node(id: $id) { id } }",
        "query($id: ID!) { connection(id: $id) { id } customer(id: $id) { id } syncRun(id: $id) { id } }",
        "query($id: ID!) { webhookEndpoint(id: $id) { id } }",
        "mutation($id: ID!) { disconnect(id: $id) { id } }",
        "mutation($id: ID!) { cancelSyncRun(id: $id) { id } }",
        "mutation($id: ID!) { redeliverWebhook(deliveryId: $id) { id } }",
        "query($id: ID) { assets(connectionId: $id) { nodes { id } } }",
        "query($id: ID) { events(filter: { customerId: $id }) { nodes { id } } }",
        "query($id: ID) { events(filter: { connectionId: $id }) { nodes { id } } }",
    ];
    let ids = (0..queries.len(), text(), any::<bool>());
    let result = check(ids, |(which, id, as_connection)| {
        let caller = if as_connection { &token } else { &key };
        block_on(answer_has_codes(
            &app,
            caller,
            queries[which],
            json!({ "id": id }),
        ))
    });
    result.unwrap();

    let paged = [
        "query($after: String, $first: Int) { customers(first: $first, after: $after) { nodes { id } } }",
        "query($after: String, $first: Int) { connections(last: $first, before: $after) { nodes { id } } }",
        "query($after: String, $first: Int) { creditLedger(first: $first, after: $after) { nodes { id } } }",
        "query($after: String, $first: Int) { events(first: $first, after: $after) { nodes { id } } }",
        "query($after: String, $first: Int) { webhookEndpoints(first: $first, after: $after) { nodes { id } } }",
    ];
    let cursors = (0..paged.len(), text(), page_size());
    let result = check(cursors, |(which, after, first)| {
        let variables = json!({ "after": after, "first": first });
        block_on(answer_has_codes(&app, &key, paged[which], variables))
    });
    result.unwrap();

    let records = (text(), page_size(), text(), any::<bool>(), any::<bool>());
    let result = check(records, |(after, first, modified, deleted, own)| {
        let id = if own {
            connection.clone()
        } else {
            after.clone()
        };
        let variables = json!({ "id": id, "after": after, "first": first,
                                "modified": modified, "deleted": deleted });
        let query =
            "query($id: ID, $after: String, $first: Int, $modified: DateTime, $deleted: Boolean!) {
            records(connectionId: $id, entity: WORK_ORDER, first: $first, after: $after,
                    modifiedAfter: $modified, includeDeleted: $deleted) { nodes { id } } }";
        block_on(answer_has_codes(&app, &key, query, variables))
    });
    result.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_text_input_gets_a_coded_answer_and_is_stored_as_accepted() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 1000).await;
    let (connection, _) = connect(&app, &key, demo_input(&customer, "none")).await;

    let texts = (text(), prop::option::of(text()), text(), text());
    let result = check(texts, |(name, external_id, search, system)| {
        block_on(async {
            let create = "mutation($name: String!, $ext: String) {
                createCustomer(input: { name: $name, externalId: $ext }) { id name externalId } }";
            let variables = json!({ "name": name, "ext": external_id });
            answer_has_codes(&app, &key, create, variables.clone()).await?;
            // What was accepted is stored as given, less surrounding white space.
            let body = app.gql(&key, create, variables).await;
            if body.get("errors").is_none() {
                prop_assert_eq!(&body["data"]["createCustomer"]["name"], &json!(name.trim()));
            }
            let query = "query($s: String, $k: String!) { customers(search: $s) { nodes { id } } system(key: $k) { key } }";
            answer_has_codes(&app, &key, query, json!({ "s": search, "k": system })).await
        })
    });
    result.unwrap();

    let inputs = (json_value(), prop::option::of(text()), json_value(), text());
    let result = check(inputs, |(metadata, label, credentials, url)| {
        block_on(async {
            let update = "mutation($id: ID!, $m: JSON, $l: String) {
                updateConnection(input: { id: $id, metadata: $m, label: $l }) { metadata label } }";
            let variables = json!({ "id": connection, "m": metadata, "l": label });
            answer_has_codes(&app, &key, update, variables).await?;
            let connect = "mutation($input: ConnectInput!) { connect(input: $input) { token } }";
            let input = json!({ "customerId": customer, "systemKey": "demo",
                                "credentials": credentials, "validate": false });
            answer_has_codes(&app, &key, connect, json!({ "input": input })).await?;
            let create = "mutation($url: String!, $d: String) {
                createWebhookEndpoint(input: { url: $url, description: $d }) { secret } }";
            answer_has_codes(&app, &key, create, json!({ "url": url, "d": label })).await
        })
    });
    result.unwrap();
}
