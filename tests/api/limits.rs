//! Abuse limits: a rate limit per token and per client address of failed authentication,
//! `RateLimit-*` headers, the operator's per-account limits, and bounded metric labels.

use std::time::Duration;

use reqwest::{Response, header::HeaderMap};
use serde_json::{Value, json};

use crate::{
    harness::{
        ADMIN_TOKEN, TestApp, connect, demo_input, error_code, operation_labels, setup, wait_until,
    },
    websocket,
};

const VIEWER: &str = "{ viewer { account { id } } }";
const SET_LIMIT: &str = "mutation($id: ID!, $limit: RateLimitInput) {
    setAccountRateLimit(accountId: $id, limit: $limit) { accountId requestsPerSecond burst custom } }";

/// A server whose tokens have buckets of `burst` refilling at 1 a second, the slowest there
/// is, so that a test's quick requests empty them.
async fn spawn(burst: u32) -> TestApp {
    TestApp::spawn_with(|config| {
        config.rate_limits.api_requests_per_second = 1;
        config.rate_limits.api_burst = burst;
    })
    .await
}

async fn post(app: &TestApp, token: Option<&str>, body: Value) -> Response {
    let mut request = app.http.post(app.url("/graphql")).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request")
}

/// `RateLimit-Limit`, `-Remaining` and `-Reset`, each present and a number.
fn rate_headers(headers: &HeaderMap) -> (u64, u64, u64) {
    let number = |name: &str| -> u64 {
        let value = headers
            .get(name)
            .unwrap_or_else(|| panic!("{name} in {headers:?}"));
        value.to_str().unwrap().parse().unwrap()
    };
    (
        number("ratelimit-limit"),
        number("ratelimit-remaining"),
        number("ratelimit-reset"),
    )
}

/// Sends `VIEWER` until it is refused; the refusal, after checking that at least
/// `at_least` passed before it. The bucket refills by 1 a second: a few more may pass.
async fn exhaust(app: &TestApp, token: Option<&str>, at_least: usize) -> Response {
    let burst = at_least;
    for sent in 0..2 * at_least + 3 {
        let response = post(app, token, json!({ "query": VIEWER })).await;
        if response.status() == 429 {
            assert!(sent >= burst, "refused after {sent} of a burst of {burst}");
            return response;
        }
    }
    panic!("never refused")
}

/// The refusal: 429, `RATE_LIMITED`, `retryAfterSeconds` and the same `Retry-After`.
async fn assert_rate_limited(response: Response) -> HeaderMap {
    assert_eq!(response.status(), 429);
    let headers = response.headers().clone();
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "RATE_LIMITED", "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["retryAfterSeconds"],
        json!(retry_after)
    );
    headers
}

#[tokio::test]
async fn a_key_gets_its_burst_then_429_with_retry_after() {
    let app = spawn(5).await;
    let (_, key) = app.create_account("Acme", 0).await;
    let first = post(&app, Some(&key), json!({ "query": VIEWER })).await;
    assert_eq!(first.status(), 200);
    let (limit, remaining, reset) = rate_headers(first.headers());
    assert_eq!(
        (limit, remaining),
        (5, 4),
        "a full bucket of 5 less this request"
    );
    assert!((1..=5).contains(&reset), "full again within 5 s: {reset}");

    let refused = exhaust(&app, Some(&key), 4).await;
    let headers = assert_rate_limited(refused).await;
    let (limit, remaining, _) = rate_headers(&headers);
    assert_eq!((limit, remaining), (5, 0));
}

#[tokio::test]
async fn each_token_has_its_own_bucket() {
    let app = TestApp::spawn_with(|config| {
        config.rate_limits.api_requests_per_second = 1;
        config.rate_limits.api_burst = 4;
    })
    .await;
    let (key, customer) = setup(&app, 1).await;
    let (_, connection_token) = connect(&app, &key, demo_input(&customer, "none")).await;
    let data = app
        .ok(
            &key,
            "mutation { createApiKey(name: \"ci\") { key } }",
            json!({}),
        )
        .await;
    let second_key = data["createApiKey"]["key"].as_str().unwrap().to_owned();
    let (_, other_account) = app.create_account("Other", 0).await;

    assert_rate_limited(exhaust(&app, Some(&key), 1).await).await;
    for (token, what) in [
        (&second_key, "another key of the account"),
        (&other_account, "another account's key"),
        (&connection_token, "the account's connection token"),
    ] {
        let response = post(&app, Some(token), json!({ "query": VIEWER })).await;
        assert_eq!(response.status(), 200, "{what}");
        assert_eq!(
            rate_headers(response.headers()).1,
            3,
            "{what}: its own bucket"
        );
    }
    assert_rate_limited(exhaust(&app, Some(&connection_token), 1).await).await;
}

#[tokio::test]
async fn the_operators_account_limit_applies_at_once_and_clearing_restores_the_default() {
    let app = spawn(3).await;
    let (account_id, key) = app.create_account("Acme", 0).await;
    assert_rate_limited(exhaust(&app, Some(&key), 3).await).await;

    let limit = json!({ "requestsPerSecond": 2, "burst": 10 });
    let set = app
        .ok(
            ADMIN_TOKEN,
            SET_LIMIT,
            json!({ "id": account_id, "limit": limit }),
        )
        .await;
    assert_eq!(
        set["setAccountRateLimit"],
        json!({ "accountId": account_id, "requestsPerSecond": 2, "burst": 10, "custom": true })
    );
    let response = post(&app, Some(&key), json!({ "query": VIEWER })).await;
    assert_eq!(response.status(), 200, "the new limit's bucket is full");
    assert_eq!(rate_headers(response.headers()).0, 10);
    assert_rate_limited(exhaust(&app, Some(&key), 9).await).await;

    let cleared = app
        .ok(
            ADMIN_TOKEN,
            SET_LIMIT,
            json!({ "id": account_id, "limit": null }),
        )
        .await;
    assert_eq!(
        cleared["setAccountRateLimit"],
        json!({ "accountId": account_id, "requestsPerSecond": 1, "burst": 3, "custom": false })
    );
    let (_, other_key) = app.create_account("Other", 0).await;
    let response = post(&app, Some(&other_key), json!({ "query": VIEWER })).await;
    assert_eq!(
        rate_headers(response.headers()).0,
        3,
        "others keep the default"
    );
    // The key's old bucket of the default limit, with what it refilled since.
    let response = post(&app, Some(&key), json!({ "query": VIEWER })).await;
    if response.status() == 200 {
        assert_eq!(rate_headers(response.headers()).0, 3);
    } else {
        assert_eq!(rate_headers(&assert_rate_limited(response).await).0, 3);
    }
}

#[tokio::test]
async fn an_account_limit_reaches_other_processes_on_postgres() {
    let app = spawn(3).await;
    if !app.db.url.starts_with("postgres") {
        // Several processes share a PostgreSQL database only; they reread limits from it.
        return;
    }
    let other = app
        .another_with(|config| {
            config.rate_limits.api_requests_per_second = 1;
            config.rate_limits.api_burst = 3;
        })
        .await;
    let (account_id, key) = app.create_account("Acme", 0).await;
    let limit = json!({ "requestsPerSecond": 1, "burst": 10 });
    app.ok(
        ADMIN_TOKEN,
        SET_LIMIT,
        json!({ "id": account_id, "limit": limit }),
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "the other process to apply the account's limit",
        async || {
            let response = post(&other, Some(&key), json!({ "query": VIEWER })).await;
            rate_headers(response.headers()).0 == 10
        },
    )
    .await;
}

#[tokio::test]
async fn only_the_admin_sets_account_limits_and_only_sane_ones() {
    let app = TestApp::spawn().await;
    let (account_id, key) = app.create_account("Acme", 0).await;
    let limit = json!({ "requestsPerSecond": 5, "burst": 5 });
    let body = app
        .gql(&key, SET_LIMIT, json!({ "id": account_id, "limit": limit }))
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    let (status, body) = app
        .post(
            None,
            json!({ "query": SET_LIMIT, "variables": { "id": account_id, "limit": limit } }),
        )
        .await;
    assert_eq!((status, error_code(&body)), (200, "UNAUTHENTICATED"));

    for (rate, burst, why) in [
        (0, 5, "zero rate"),
        (5, 0, "zero burst"),
        (-1, 5, "negative rate"),
        (5, -7, "negative burst"),
        (2_000_000, 5, "huge rate"),
        (5, i32::MAX, "huge burst"),
    ] {
        let limit = json!({ "requestsPerSecond": rate, "burst": burst });
        let body = app
            .gql(
                ADMIN_TOKEN,
                SET_LIMIT,
                json!({ "id": account_id, "limit": limit }),
            )
            .await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{why}: {body}");
    }
    let missing = "acc_00000000000000000000000000";
    let body = app
        .gql(
            ADMIN_TOKEN,
            SET_LIMIT,
            json!({ "id": missing, "limit": limit }),
        )
        .await;
    assert!(
        ["NOT_FOUND", "BAD_USER_INPUT"].contains(&error_code(&body)),
        "{body}"
    );
    let response = post(&app, Some(&key), json!({ "query": VIEWER })).await;
    assert_eq!(
        rate_headers(response.headers()).0,
        1_000_000,
        "refusals changed nothing"
    );
}

#[tokio::test]
async fn failed_authentication_is_limited_per_address_while_valid_keys_work() {
    let app = TestApp::spawn_with(|config| {
        config.rate_limits.failed_auth_per_second = 1;
        config.rate_limits.failed_auth_burst = 3;
    })
    .await;
    let (_, key) = app.create_account("Acme", 0).await;
    let bad = "mwk_not-a-key-at-all";
    let first = post(&app, Some(bad), json!({ "query": VIEWER })).await;
    assert_eq!(first.status(), 401);
    let refused = exhaust(&app, Some(bad), 2).await;
    let headers = assert_rate_limited(refused).await;
    assert!(
        headers.get("ratelimit-limit").is_none(),
        "no token, no bucket of its own"
    );
    // The same address's bucket, whatever refilled since.
    assert_rate_limited(exhaust(&app, None, 0).await).await;

    let valid = post(&app, Some(&key), json!({ "query": VIEWER })).await;
    assert_eq!(valid.status(), 200, "a valid key from the same address");
}

/// A failed `connection_init` counts against its address's bucket as a failed HTTP request
/// does; over it the socket closes with 4429, while a valid key from the address still works.
#[tokio::test]
async fn failed_websocket_authentication_counts_against_the_address() {
    let app = TestApp::spawn_with(|config| {
        config.rate_limits.failed_auth_per_second = 1;
        config.rate_limits.failed_auth_burst = 3;
    })
    .await;
    let (_, key) = app.create_account("Acme", 0).await;
    let init = |token: &str| json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } });
    // The bucket holds 3 and refills one a second: the first three failures are 4403, and
    // the next ones too while a second passes, until one finds the bucket empty (4429).
    let mut codes = Vec::new();
    while codes.last() != Some(&4429) && codes.len() < 10 {
        let mut socket = websocket::open(&app).await;
        websocket::send(&mut socket, init("mwk_not-a-key-at-all")).await;
        codes.push(websocket::next(&mut socket).await.unwrap_err());
    }
    let (last, before) = codes.split_last().unwrap();
    assert_eq!(*last, 4429, "{codes:?}");
    assert!(
        before.len() >= 3 && before.iter().all(|c| *c == 4403),
        "{codes:?}"
    );
    // HTTP shares the bucket: a bad token is refused with 429 (or, if a request refilled
    // meanwhile, 401 and then 429).
    let mut statuses = Vec::new();
    while statuses.last() != Some(&429) && statuses.len() < 5 {
        let refused = post(
            &app,
            Some("mwk_not-a-key-at-all"),
            json!({ "query": VIEWER }),
        )
        .await;
        statuses.push(refused.status().as_u16());
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| [401, 429].contains(s)),
        "{statuses:?}"
    );

    let mut socket = websocket::open(&app).await;
    websocket::init(&mut socket, &key).await;
}

#[tokio::test]
async fn every_answer_to_a_token_carries_rate_limit_headers() {
    let app = TestApp::spawn_with(|config| {
        config.rate_limits.api_requests_per_second = 1;
        config.rate_limits.api_burst = 100;
    })
    .await;
    let (_, key) = app.create_account("Acme", 0).await;
    let ok = post(&app, Some(&key), json!({ "query": VIEWER })).await;
    let (limit, remaining, reset) = rate_headers(ok.headers());
    assert_eq!(limit, 100);
    assert!((90..100).contains(&remaining), "{remaining}");
    assert_eq!(reset, 1, "one request refills in 1 s");

    let failing = post(
        &app,
        Some(&key),
        json!({ "query": "{ node(id: \"cus_nope\") { id } }" }),
    )
    .await;
    let (_, after_error, _) = rate_headers(failing.headers());
    assert!(after_error < 100);
    let invalid = post(&app, Some(&key), json!({ "query": "{ nope }" })).await;
    rate_headers(invalid.headers());

    let batch = json!([{ "query": VIEWER }, { "query": VIEWER }, { "query": VIEWER }]);
    let before = rate_headers(
        post(&app, Some(&key), json!({ "query": VIEWER }))
            .await
            .headers(),
    )
    .1;
    let after = rate_headers(post(&app, Some(&key), batch).await.headers()).1;
    assert!(
        after + 3 <= before + 1,
        "a batch of 3 takes 3 ({before} then {after})"
    );

    let get = app
        .http
        .get(app.url("/graphql?query=%7B%20viewer%20%7B%20account%20%7B%20id%20%7D%20%7D%20%7D"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    rate_headers(get.headers());
}

#[tokio::test]
async fn a_batch_larger_than_the_burst_is_refused_as_bad_input() {
    let app = spawn(2).await;
    let (_, key) = app.create_account("Acme", 0).await;
    let batch = json!([{ "query": VIEWER }, { "query": VIEWER }, { "query": VIEWER }]);
    let response = post(&app, Some(&key), batch).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
}

#[tokio::test]
async fn operations_over_a_socket_count_against_the_token_and_keep_it_open() {
    let app = spawn(3).await;
    let (_, key) = app.create_account("Acme", 0).await;
    let mut socket = websocket::open(&app).await;
    websocket::init(&mut socket, &key).await;
    let subscribe = |id: usize| json!({ "id": id.to_string(), "type": "subscribe", "payload": { "query": VIEWER } });
    let mut refused = None;
    for id in 0..7 {
        websocket::send(&mut socket, subscribe(id)).await;
        let mut message = websocket::next(&mut socket).await.unwrap();
        if message["type"] == "next" {
            assert_eq!(
                websocket::next(&mut socket).await.unwrap()["type"],
                "complete"
            );
            continue;
        }
        assert_eq!(message["type"], "error", "{message}");
        assert!(id >= 3, "refused after {id} of a burst of 3");
        refused = Some(message["payload"][0].take());
        break;
    }
    let error = refused.expect("an operation over the limit");
    assert_eq!(error["extensions"]["code"], "RATE_LIMITED", "{error}");
    assert!(error["extensions"]["retryAfterSeconds"].as_u64().unwrap() >= 1);

    websocket::send(&mut socket, json!({ "type": "ping" })).await;
    assert_eq!(
        websocket::next(&mut socket).await.unwrap()["type"],
        "pong",
        "the socket stays open"
    );
}

#[tokio::test]
async fn metrics_label_a_bounded_number_of_operation_names() {
    const LIMIT: usize = 10;
    let app = TestApp::spawn_with(|config| {
        config.process.metrics_max_operation_names = LIMIT;
        config.http.max_batch_size = 100;
    })
    .await;
    let (_, key) = app.create_account("Acme", 0).await;
    for batch in 0..10 {
        let operations: Vec<Value> = (0..100)
            .map(|i| json!({ "query": format!("query Op{batch}x{i} {{ viewer {{ account {{ id }} }} }}") }))
            .collect();
        let response = post(&app, Some(&key), json!(operations)).await;
        assert_eq!(response.status(), 200);
    }
    for i in 0..50 {
        let query = format!("query Guest{i} {{ viewer {{ account {{ id }} }} }}");
        post(&app, None, json!({ "query": query })).await;
        post(&app, Some("mwk_bad"), json!({ "query": query })).await;
    }
    app.ok(&key, VIEWER, json!({})).await;

    let labels = operation_labels(&app.metrics().await);
    let fixed = ["other", "unauthenticated", "anonymous"];
    assert!(
        labels.len() <= LIMIT + fixed.len(),
        "{} operation labels, at most {LIMIT} names and {fixed:?} expected",
        labels.len()
    );
    for label in fixed {
        assert!(labels.contains(label), "{label} in {labels:?}");
    }
    assert!(labels.contains("Op0x0"), "the first names are labelled");
    assert!(
        !labels.iter().any(|l| l.starts_with("Guest")),
        "unauthenticated names are not labelled: {labels:?}"
    );
}
