//! Outbound webhooks against a real receiver on loopback.

use std::{sync::atomic::Ordering::SeqCst, time::Duration};

use serde_json::{Value, json};

use crate::harness::{
    ADMIN_TOKEN, Received, Receiver, SlowReceiver, TestApp, connect, demo_input, error_code, grant,
    setup, wait_for, wait_until, webhooks_settled,
};

const CREATE: &str = "mutation($input: CreateWebhookEndpointInput!) {
    createWebhookEndpoint(input: $input) { secret endpoint { id url enabled eventTypes } } }";

async fn create_endpoint(app: &TestApp, key: &str, url: &str, types: Value) -> (String, String) {
    let data = app
        .ok(
            key,
            CREATE,
            json!({ "input": { "url": url, "eventTypes": types } }),
        )
        .await;
    let payload = &data["createWebhookEndpoint"];
    (
        payload["endpoint"]["id"].as_str().unwrap().to_owned(),
        payload["secret"].as_str().unwrap().to_owned(),
    )
}

fn private_allowed(config: &mut millwright::config::Config) {
    config.webhooks.allow_private_targets = true;
    config.webhooks.retry_schedule = vec![1, 1, 1];
}

fn verify(secret: &str, received: &Received) -> bool {
    let verifier = standardwebhooks::Webhook::new(secret).unwrap();
    verifier.verify(&received.body, &received.headers).is_ok()
}

#[tokio::test]
async fn events_are_delivered_signed_and_rotation_signs_with_both_secrets() {
    let app = TestApp::spawn_with(private_allowed).await;
    let receiver = Receiver::start(&[]).await;
    let (account_id, key) = app.create_account("A", 0).await;
    let (endpoint, secret) = create_endpoint(&app, &key, &receiver.url, json!([])).await;
    assert!(secret.starts_with("whsec_"));
    app.ok(
        ADMIN_TOKEN,
        "mutation($id: ID!) { grantCredits(accountId: $id, amount: 3) { total } }",
        json!({ "id": account_id }),
    )
    .await;
    let got = receiver.wait_for(1).await;
    assert!(
        verify(&secret, &got[0]),
        "the signature verifies with the standardwebhooks crate"
    );
    let body = &receiver.bodies()[0];
    assert_eq!(body["type"], "credits.changed");
    assert_eq!(body["account_id"], account_id.as_str());
    assert_eq!(body["data"]["amount"], 3);
    assert_eq!(
        got[0].headers["webhook-id"].to_str().unwrap(),
        body["id"].as_str().unwrap()
    );

    let data = app
        .ok(
            &key,
            "mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret } }",
            json!({ "id": endpoint }),
        )
        .await;
    let new_secret = data["rotateWebhookSecret"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    grant(&app, &account_id, 1).await;
    let got = receiver.wait_for(2).await;
    assert!(
        verify(&new_secret, &got[1]) && verify(&secret, &got[1]),
        "both secrets sign during a rotation"
    );
}

#[tokio::test]
async fn routing_follows_endpoint_and_connection_event_types() {
    let app = TestApp::spawn_with(private_allowed).await;
    let receiver = Receiver::start(&[]).await;
    let (key, customer) = setup(&app, 10).await;
    create_endpoint(
        &app,
        &key,
        &receiver.url,
        json!([
            "CONNECTION_CREATED",
            "CONNECTION_DISCONNECTED",
            "SYNC_COMPLETED"
        ]),
    )
    .await;
    let mut quiet = demo_input(&customer, "none");
    quiet["webhookEventTypes"] = json!(["CONNECTION_DISCONNECTED"]);
    let (quiet_id, _) = connect(&app, &key, quiet).await;
    let (loud_id, _) = connect(&app, &key, demo_input(&customer, "none")).await;
    app.ok(
        &key,
        "mutation($id: ID!) { disconnect(id: $id) { id } }",
        json!({ "id": quiet_id }),
    )
    .await;
    // The loud connection's first sync ends in the background; then nothing more is sent.
    receiver.wait_for(3).await;
    webhooks_settled(&app).await;
    let mut seen: Vec<(String, String)> = receiver
        .bodies()
        .iter()
        .map(|b| {
            (
                b["connection_id"].as_str().unwrap().to_owned(),
                b["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let mut expected = vec![
        (quiet_id.clone(), "connection.disconnected".to_owned()),
        (loud_id.clone(), "connection.created".to_owned()),
        (loud_id.clone(), "sync.completed".to_owned()),
    ];
    expected.sort();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn failures_are_retried_on_schedule_honouring_retry_after() {
    let app = TestApp::spawn_with(private_allowed).await;
    let receiver = Receiver::start(&[(500, None), (503, Some(2))]).await;
    let (account_id, key) = app.create_account("A", 0).await;
    let (endpoint, _) = create_endpoint(&app, &key, &receiver.url, json!([])).await;
    grant(&app, &account_id, 1).await;
    let got = receiver.wait_for(3).await;
    let ids: Vec<_> = got
        .iter()
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "the same webhook-id on every attempt"
    );
    assert!(
        got[2].at - got[1].at >= Duration::from_millis(1900),
        "Retry-After: 2 was honoured"
    );
    // The third answer is recorded after the receiver has sent it.
    webhooks_settled(&app).await;
    let data = app
        .ok(&key, "query($id: ID!) { webhookEndpoint(id: $id) { deliveries { nodes { status attemptCount attempts { responseStatus } } } } }", json!({ "id": endpoint }))
        .await;
    let delivery = &data["webhookEndpoint"]["deliveries"]["nodes"][0];
    assert_eq!(
        (delivery["status"].clone(), delivery["attemptCount"].clone()),
        (json!("SUCCEEDED"), json!(3))
    );
    assert_eq!(
        delivery["attempts"],
        json!([{ "responseStatus": 500 }, { "responseStatus": 503 }, { "responseStatus": 200 }])
    );
    // `last` keeps the newest attempts, still oldest first.
    let data = app
        .ok(&key, "query($id: ID!) { webhookEndpoint(id: $id) { deliveries { nodes { attempts(last: 2) { responseStatus } } } } }", json!({ "id": endpoint }))
        .await;
    assert_eq!(
        data["webhookEndpoint"]["deliveries"]["nodes"][0]["attempts"],
        json!([{ "responseStatus": 503 }, { "responseStatus": 200 }])
    );
}

#[tokio::test]
async fn gone_disables_the_endpoint_at_once_and_exhaustion_ends_retries() {
    let app = TestApp::spawn_with(|c| {
        private_allowed(c);
        c.webhooks.retry_schedule = vec![1];
    })
    .await;
    let gone = Receiver::start(&[(410, None)]).await;
    let failing = Receiver::start(&[(500, None); 10]).await;
    let (account_id, key) = app.create_account("A", 0).await;
    let (gone_id, _) = create_endpoint(&app, &key, &gone.url, json!([])).await;
    let (failing_id, _) = create_endpoint(&app, &key, &failing.url, json!([])).await;
    grant(&app, &account_id, 1).await;
    let query = "query($id: ID!) { webhookEndpoint(id: $id) { enabled disabledReason deliveries { nodes { status } } } }";
    let data = wait_for(
        Duration::from_secs(15),
        "the 410 to disable the endpoint",
        async || {
            let data = app.ok(&key, query, json!({ "id": gone_id })).await;
            (data["webhookEndpoint"]["enabled"] == false).then_some(data)
        },
    )
    .await;
    assert!(
        data["webhookEndpoint"]["disabledReason"]
            .as_str()
            .unwrap()
            .contains("410")
    );
    // The first delivery (the grant) fails twice: its one retry is used up.
    let exhausted = "the failing delivery to exhaust its retries";
    wait_until(Duration::from_secs(15), exhausted, async || {
        let data = app.ok(&key, query, json!({ "id": failing_id })).await;
        data["webhookEndpoint"]["deliveries"]["nodes"][0]["status"] == "EXHAUSTED"
    })
    .await;
    let events = app
        .ok(
            &key,
            "{ events(filter: {types: [WEBHOOK_ENDPOINT_DISABLED]}) { nodes { data } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        events["events"]["nodes"][0]["data"]["endpoint_id"],
        gone_id.as_str()
    );
}

#[tokio::test]
async fn continuous_failure_for_the_window_disables_the_endpoint() {
    let app = TestApp::spawn_with(|c| {
        private_allowed(c);
        c.webhooks.retry_schedule = vec![1, 1, 1, 1, 1];
        c.webhooks.disable_after_secs = 1;
    })
    .await;
    let receiver = Receiver::start(&[(500, None); 10]).await;
    let (account_id, key) = app.create_account("A", 0).await;
    let (endpoint, _) = create_endpoint(&app, &key, &receiver.url, json!([])).await;
    grant(&app, &account_id, 1).await;
    let query = "query($id: ID!) { webhookEndpoint(id: $id) { enabled disabledReason } }";
    let disabled = "a second of failures to disable the endpoint";
    wait_until(Duration::from_secs(15), disabled, async || {
        let data = app.ok(&key, query, json!({ "id": endpoint })).await;
        data["webhookEndpoint"]["enabled"] == false
    })
    .await;
    assert!(receiver.count() >= 2, "failed more than once before");
}

/// A counter's value on a `/metrics` page (0 when it has no series yet).
fn counter(metrics: &str, series: &str) -> u64 {
    crate::harness::metric_value(metrics, series).unwrap_or(0)
}

/// A backlog larger than the process's room (events stored while no process delivered):
/// its dispatcher creates the deliveries leased to the process as room frees, rather than
/// all at once unleased for claims to take, and every event reaches every endpoint once.
#[tokio::test]
async fn a_backlog_is_dispatched_as_room_frees_and_each_event_delivered_once() {
    let quiet = TestApp::spawn_with(|c| {
        private_allowed(c);
        c.process.workers = false;
    })
    .await;
    let receivers = [
        Receiver::start(&[]).await,
        Receiver::start(&[]).await,
        Receiver::start(&[]).await,
    ];
    let (account_id, key) = quiet.create_account("A", 0).await;
    for receiver in &receivers {
        create_endpoint(&quiet, &key, &receiver.url, json!([])).await;
    }
    grant(&quiet, &account_id, 100).await;
    // 2 requests in flight per endpoint and 4 in all, 8 rounds ahead: room for 28 of the
    // account's 300 deliveries.
    let app = quiet
        .another_with(|c| {
            private_allowed(c);
            c.webhooks.max_in_flight_per_endpoint = 2;
            c.webhooks.workers = 4;
        })
        .await;
    for receiver in &receivers {
        let received = receiver.wait_for(100).await;
        let ids: std::collections::HashSet<&str> = received
            .iter()
            .map(|r| r.headers["webhook-id"].to_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 100, "each event once");
    }
    webhooks_settled(&app).await;
    for receiver in &receivers {
        assert_eq!(receiver.count(), 100, "one request per event and endpoint");
    }
    let metrics = app.metrics().await;
    let leased = |by: &str| {
        counter(
            &metrics,
            &format!("millwright_webhook_deliveries_leased_total{{by=\"{by}\"}}"),
        )
    };
    assert_eq!(leased("dispatcher") + leased("claim"), 300, "{metrics}");
    // The first batch stops where the room does (nine events: the tenth's three would not
    // all fit); later ones as the sends free room, unless a round's room takes longer than
    // the dispatcher waits for it.
    assert!(leased("dispatcher") >= 27, "{metrics}");
    assert!(
        counter(&metrics, "millwright_webhook_dispatch_held_back_total") >= 1,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_slow_endpoint_gets_its_limit_in_flight_and_does_not_hold_up_others() {
    let app = TestApp::spawn_with(|c| {
        private_allowed(c);
        c.webhooks.max_in_flight_per_endpoint = 2;
        c.webhooks.workers = 4;
    })
    .await;
    let (slow, slow_url) = SlowReceiver::start(Duration::from_millis(400)).await;
    let fast = Receiver::start(&[]).await;
    let (account_id, key) = app.create_account("A", 0).await;
    create_endpoint(&app, &key, &slow_url, json!([])).await;
    create_endpoint(&app, &key, &fast.url, json!([])).await;
    grant(&app, &account_id, 10).await;
    // Ten requests two at a time take the slow receiver at least 2 s; the fast one has all of
    // its deliveries long before.
    fast.wait_for(10).await;
    assert!(
        slow.done.load(SeqCst) < 10,
        "the fast endpoint waited for the slow one"
    );
    wait_until(
        Duration::from_secs(15),
        "the slow endpoint's 10",
        async || slow.done.load(SeqCst) == 10,
    )
    .await;
    assert_eq!(
        slow.most_open.load(SeqCst),
        2,
        "at most 2 in flight, and 2 used"
    );
}

#[tokio::test]
async fn private_and_reserved_targets_are_refused() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    for url in [
        "http://127.0.0.1/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://localhost:8080/hook",
        "ftp://example.com/hook",
        "not a url",
    ] {
        let body = app
            .gql(&key, CREATE, json!({ "input": { "url": url } }))
            .await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{url}");
    }
}

#[tokio::test]
async fn test_redeliver_and_replay() {
    let app = TestApp::spawn_with(private_allowed).await;
    let receiver = Receiver::start(&[]).await;
    let (account_id, key) = app.create_account("A", 0).await;
    let (endpoint, _) = create_endpoint(&app, &key, &receiver.url, json!([])).await;
    let data = app
        .ok(
            &key,
            "mutation($id: ID!) { sendTestWebhook(endpointId: $id) { id event { type } } }",
            json!({ "id": endpoint }),
        )
        .await;
    assert_eq!(data["sendTestWebhook"]["event"]["type"], "WEBHOOK_TEST");
    receiver.wait_for(1).await;
    assert_eq!(receiver.bodies()[0]["type"], "webhook.test");
    let delivery = data["sendTestWebhook"]["id"].clone();
    // A redelivery waits until the attempt in flight is recorded.
    wait_for_status(&app, &key, &delivery, "SUCCEEDED").await;
    app.ok(
        &key,
        "mutation($id: ID!) { redeliverWebhook(deliveryId: $id) { id } }",
        json!({ "id": delivery }),
    )
    .await;
    receiver.wait_for(2).await;
    grant(&app, &account_id, 1).await;
    receiver.wait_for(3).await;
    // Recorded as sent: a replay skips an event whose delivery is still pending.
    webhooks_settled(&app).await;
    let data = app.ok(&key, "mutation($id: ID!) { replayWebhooks(endpointId: $id, since: \"2020-01-01T00:00:00Z\") }", json!({ "id": endpoint })).await;
    assert_eq!(
        data["replayWebhooks"], 1,
        "the grant (test events are not replayed)"
    );
    receiver.wait_for(4).await;
    let (_, other) = app.create_account("B", 0).await;
    let body = app
        .gql(
            &other,
            "mutation($id: ID!) { sendTestWebhook(endpointId: $id) { id } }",
            json!({ "id": endpoint }),
        )
        .await;
    assert_eq!(error_code(&body), "NOT_FOUND");
}

/// Waits until the delivery has `status` (its attempt recorded).
async fn wait_for_status(app: &TestApp, key: &str, delivery: &Value, status: &str) {
    let query = "query($id: ID!) { node(id: $id) { ... on WebhookDelivery { status } } }";
    let what = format!("delivery {delivery} to reach {status}");
    wait_until(Duration::from_secs(5), &what, async || {
        app.ok(key, query, json!({ "id": delivery })).await["node"]["status"] == status
    })
    .await;
}

#[tokio::test]
async fn a_delivery_in_flight_is_not_redelivered_beside_itself() {
    let app = TestApp::spawn_with(private_allowed).await;
    let (receiver, url) = SlowReceiver::start(Duration::from_millis(1500)).await;
    let (_, key) = app.create_account("A", 0).await;
    let (endpoint, _) = create_endpoint(&app, &key, &url, json!([])).await;
    let data = app
        .ok(
            &key,
            "mutation($id: ID!) { sendTestWebhook(endpointId: $id) { id } }",
            json!({ "id": endpoint }),
        )
        .await;
    let delivery = data["sendTestWebhook"]["id"].clone();
    wait_until(
        Duration::from_secs(5),
        "the delivery to be in flight",
        async || receiver.started.load(SeqCst) == 1,
    )
    .await;
    let redeliver = "mutation($id: ID!) { redeliverWebhook(deliveryId: $id) { id } }";
    let body = app.gql(&key, redeliver, json!({ "id": delivery })).await;
    assert_eq!(error_code(&body), "CONFLICT", "{body}");
    wait_for_status(&app, &key, &delivery, "SUCCEEDED").await;
    app.ok(&key, redeliver, json!({ "id": delivery })).await;
    wait_until(
        Duration::from_secs(5),
        "the redelivery to arrive",
        async || receiver.started.load(SeqCst) >= 2,
    )
    .await;
    webhooks_settled(&app).await;
    assert_eq!(
        receiver.started.load(SeqCst),
        2,
        "sent, then redelivered once"
    );
    assert_eq!(receiver.most_open.load(SeqCst), 1);
}

/// A receiver slower than the lease: each request ends (times out) within its lease, so the
/// delivery is never in flight twice at once, and its retries follow one another.
#[tokio::test]
async fn a_request_never_outlives_its_lease() {
    let app = TestApp::spawn_with(|c| {
        private_allowed(c);
        c.webhooks.lease_secs = 2;
    })
    .await;
    let (receiver, url) = SlowReceiver::start(Duration::from_secs(3)).await;
    let (_, key) = app.create_account("A", 0).await;
    let (endpoint, _) = create_endpoint(&app, &key, &url, json!([])).await;
    app.ok(
        &key,
        "mutation($id: ID!) { sendTestWebhook(endpointId: $id) { id } }",
        json!({ "id": endpoint }),
    )
    .await;
    wait_until(
        Duration::from_secs(15),
        "a retry after the timeout",
        async || receiver.started.load(SeqCst) >= 2,
    )
    .await;
    assert_eq!(receiver.most_open.load(SeqCst), 1, "never two at once");
    let data = app
        .ok(
            &key,
            "query($id: ID!) { webhookEndpoint(id: $id) { deliveries { nodes { attempts { error } } } } }",
            json!({ "id": endpoint }),
        )
        .await;
    let attempts = &data["webhookEndpoint"]["deliveries"]["nodes"][0]["attempts"];
    assert_eq!(attempts[0]["error"], "timed out", "{data}");
}

#[tokio::test]
async fn a_disabled_endpoint_takes_no_test_redelivery_or_replay() {
    let app = TestApp::spawn_with(private_allowed).await;
    let receiver = Receiver::start(&[]).await;
    let (_, key) = app.create_account("A", 0).await;
    let (endpoint, _) = create_endpoint(&app, &key, &receiver.url, json!([])).await;
    let test = "mutation($id: ID!) { sendTestWebhook(endpointId: $id) { id } }";
    let data = app.ok(&key, test, json!({ "id": endpoint })).await;
    let delivery = data["sendTestWebhook"]["id"].clone();
    receiver.wait_for(1).await;
    app.ok(
        &key,
        "mutation($id: ID!) { updateWebhookEndpoint(input: {id: $id, enabled: false}) { enabled } }",
        json!({ "id": endpoint }),
    )
    .await;
    for (query, variables) in [
        (test, json!({ "id": endpoint })),
        (
            "mutation($id: ID!) { redeliverWebhook(deliveryId: $id) { id } }",
            json!({ "id": delivery }),
        ),
        (
            "mutation($id: ID!) { replayWebhooks(endpointId: $id, since: \"2020-01-01T00:00:00Z\") }",
            json!({ "id": endpoint }),
        ),
    ] {
        let body = app.gql(&key, query, variables).await;
        assert_eq!(error_code(&body), "CONFLICT", "{query}: {body}");
        assert!(body.to_string().contains("disabled"), "{body}");
    }
    // Nothing was queued: the one delivery there is has ended, and so nothing more is sent.
    let deliveries = "query($id: ID!) { webhookEndpoint(id: $id) { deliveries { nodes { id } } } }";
    let data = app.ok(&key, deliveries, json!({ "id": endpoint })).await;
    assert_eq!(
        data["webhookEndpoint"]["deliveries"]["nodes"],
        json!([{ "id": delivery }])
    );
    webhooks_settled(&app).await;
    assert_eq!(receiver.count(), 1, "nothing more sent");
}

#[tokio::test]
async fn an_account_has_at_most_100_endpoints() {
    let app = TestApp::spawn_with(private_allowed).await;
    let receiver = Receiver::start(&[]).await;
    let (_, key) = app.create_account("A", 0).await;
    for _ in 0..95 {
        create_endpoint(&app, &key, &receiver.url, json!([])).await;
    }
    // Ten at once for the last five places: exactly five get one.
    let input = json!({ "input": { "url": receiver.url, "eventTypes": [] } });
    let racing = (0..10).map(|_| app.gql(&key, CREATE, input.clone()));
    let answers = futures_util::future::join_all(racing).await;
    let created = answers.iter().filter(|b| b["errors"].is_null()).count();
    assert_eq!(created, 5, "{answers:?}");
    for body in answers.iter().filter(|b| !b["errors"].is_null()) {
        assert_eq!(error_code(body), "CONFLICT", "{body}");
    }
    let body = app
        .gql(
            &key,
            CREATE,
            json!({ "input": { "url": receiver.url, "eventTypes": [] } }),
        )
        .await;
    assert_eq!(error_code(&body), "CONFLICT", "{body}");
    // Another account is not affected.
    let (_, other) = app.create_account("B", 0).await;
    create_endpoint(&app, &other, &receiver.url, json!([])).await;
}

/// A replay longer than one of its pages (500 events) queues each accepted event once.
#[tokio::test]
async fn a_long_replay_queues_every_event_once() {
    let app = TestApp::spawn_with(private_allowed).await;
    let receiver = Receiver::start(&[]).await;
    let (account_id, key) = app.create_account("A", 0).await;
    let grants: Vec<Value> = (0..510)
        .map(|_| json!({ "query": "mutation($id: ID!) { grantCredits(accountId: $id, amount: 1) { total } }", "variables": { "id": account_id } }))
        .collect();
    let (endpoint, _) = create_endpoint(&app, &key, &receiver.url, json!([])).await;
    for batch in grants.chunks(10) {
        let (status, body) = app
            .post(Some(ADMIN_TOKEN), Value::Array(batch.to_vec()))
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(!body.to_string().contains("\"errors\""), "{body}");
    }
    receiver.wait_for(510).await;
    webhooks_settled(&app).await;
    let data = app.ok(&key, "mutation($id: ID!) { replayWebhooks(endpointId: $id, since: \"2020-01-01T00:00:00Z\") }", json!({ "id": endpoint })).await;
    assert_eq!(data["replayWebhooks"], 510);
    receiver.wait_for(1020).await;
    webhooks_settled(&app).await;
    let mut times = std::collections::HashMap::new();
    for received in receiver.received.lock().unwrap().iter() {
        let id = received.headers.get("webhook-id").unwrap().clone();
        *times.entry(id).or_insert(0) += 1;
    }
    assert_eq!(times.len(), 510);
    assert!(
        times.values().all(|n| *n == 2),
        "each event live, then replayed once"
    );
}

#[tokio::test]
async fn deliveries_survive_a_killed_process() {
    use crate::harness::{ServerProcess, TestDb};
    let db = TestDb::new().await;
    let settings = [
        ("MILLWRIGHT_WEBHOOK_ALLOW_PRIVATE_TARGETS", "true"),
        ("MILLWRIGHT_WEBHOOK_RETRY_SCHEDULE", "1,1,1,1,1"),
        ("MILLWRIGHT_WEBHOOK_LEASE_SECS", "2"),
        ("MILLWRIGHT_MAX_BATCH_SIZE", "100"),
        ("MILLWRIGHT_MAX_QUERY_COMPLEXITY", "5000"),
    ];
    let receivers = [Receiver::start(&[]).await, Receiver::start(&[]).await];
    let server = ServerProcess::start(&db.url, &settings);
    let data = server
        .gql(
            ADMIN_TOKEN,
            "mutation { createAccount(input: {name: \"A\"}) { apiKey account { id } } }",
            json!({}),
        )
        .await;
    let key = data["createAccount"]["apiKey"].as_str().unwrap().to_owned();
    let account_id = data["createAccount"]["account"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for receiver in &receivers {
        server
            .gql(&key, CREATE, json!({ "input": { "url": receiver.url } }))
            .await;
    }
    // A burst of 1,000 events: 10 batches of 100 grants.
    let batch: Vec<Value> = (0..100)
        .map(|_| json!({ "query": "mutation($id: ID!) { grantCredits(accountId: $id, amount: 1) { total } }", "variables": { "id": account_id } }))
        .collect();
    let http = reqwest::Client::new();
    for _ in 0..10 {
        let response = http
            .post(format!("http://{}/graphql", server.addr))
            .bearer_auth(ADMIN_TOKEN)
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    wait_until(
        Duration::from_secs(30),
        "50 deliveries before the kill",
        async || receivers[0].count() >= 50,
    )
    .await;
    server.kill();
    let delivered_before = receivers
        .iter()
        .map(|r| r.received.lock().unwrap().len())
        .sum::<usize>();

    let _server = ServerProcess::start(&db.url, &settings);
    for receiver in &receivers {
        let ids = || -> std::collections::HashSet<String> {
            receiver
                .received
                .lock()
                .unwrap()
                .iter()
                .map(|r| r.headers["webhook-id"].to_str().unwrap().to_owned())
                .collect()
        };
        let every = "every event at every endpoint at least once";
        wait_until(Duration::from_secs(60), every, async || ids().len() >= 1000).await;
        assert_eq!(ids().len(), 1000, "no webhook-id beyond the 1,000 events");
    }
    assert!(delivered_before < 2000, "the kill interrupted the burst");
}

/// Two processes on one database: one dispatcher routes at a time (the other stands back
/// while it is at work), each event of either process reaches the endpoint once, and the
/// process left routes on by itself once the other has stopped.
#[tokio::test]
async fn two_processes_route_each_event_once_and_one_routes_on_when_the_other_stops() {
    let first = TestApp::spawn_with(private_allowed).await;
    let second = first.another_with(private_allowed).await;
    let receiver = Receiver::start(&[]).await;
    let (account_id, key) = first.create_account("A", 0).await;
    create_endpoint(&first, &key, &receiver.url, json!([])).await;
    tokio::join!(
        grant(&first, &account_id, 30),
        grant(&second, &account_id, 30)
    );
    receiver.wait_for(60).await;
    first.stop().await;
    grant(&second, &account_id, 5).await;
    receiver.wait_for(65).await;
    // Nothing more arrives: no event was routed by both.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: std::collections::HashSet<String> = receiver
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(receiver.count(), 65, "one request per event");
    assert_eq!(ids.len(), 65, "each event once");
}

/// The endpoint a process serves among `workers` (names as in `webhook_workers`): the one
/// with the highest weight, SHA-256 of the name, a zero byte and the endpoint's id (as the
/// delivery workers rank them; restated here so that the test checks the exact split).
fn owner_of(workers: &[String], endpoint: uuid::Uuid) -> String {
    use sha2::{Digest, Sha256};
    let weight = |worker: &String| {
        let digest = Sha256::new()
            .chain_update(worker.as_bytes())
            .chain_update([0])
            .chain_update(endpoint.as_bytes())
            .finalize();
        u64::from_be_bytes(digest[..8].try_into().unwrap())
    };
    workers
        .iter()
        .max_by_key(|worker| (weight(worker), (*worker).clone()))
        .unwrap()
        .clone()
}

/// Waits until the process named `worker` has written its row again after `since`: that
/// heartbeat also read which other processes were alive then.
async fn beaten_after(
    db: &sea_orm::DatabaseConnection,
    worker: &str,
    since: chrono::DateTime<chrono::Utc>,
) {
    use entity::webhook_worker::Entity;
    use sea_orm::EntityTrait;
    // A heartbeat marks the process alive for 5 s from its write.
    let written_after = since + chrono::Duration::seconds(5);
    wait_for(Duration::from_secs(15), "a heartbeat", async || {
        let row = Entity::find_by_id(worker.to_owned())
            .one(db)
            .await
            .unwrap()?;
        (row.alive_until > written_after).then_some(())
    })
    .await;
}

/// Two processes on one database know of each other (a row each in `webhook_workers`) and
/// split the endpoints: every delivery of an endpoint is leased by the process whose share
/// it is, never by the other. When one stops, its row goes and the other serves them all.
#[tokio::test]
async fn two_processes_split_the_endpoints_and_one_takes_all_when_the_other_stops() {
    use sea_orm::{ConnectionTrait, Database, Statement};
    use std::collections::{HashMap, HashSet};

    let first = TestApp::spawn_with(private_allowed).await;
    let second = first.another_with(private_allowed).await;
    // Each request takes 500 ms: a delivery stays leased that long, for the samples below.
    let (slow, url) = SlowReceiver::start(Duration::from_millis(500)).await;
    let (account_id, key) = first.create_account("A", 0).await;
    for _ in 0..12 {
        create_endpoint(&first, &key, &url, json!([])).await;
    }
    let db = Database::connect(&first.db.url).await.unwrap();
    let backend = db.get_database_backend();
    let endpoints: Vec<uuid::Uuid> = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT id FROM webhook_endpoints",
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get("", "id").unwrap())
        .collect();
    assert_eq!(endpoints.len(), 12);
    let names = async || -> Vec<String> {
        db.query_all_raw(Statement::from_string(
            backend,
            "SELECT name FROM webhook_workers ORDER BY name",
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<String>("", "name").unwrap())
        .collect()
    };
    let workers = wait_for(
        Duration::from_secs(10),
        "both processes' rows",
        async || {
            let names = names().await;
            (names.len() == 2).then_some(names)
        },
    )
    .await;
    // Each has read the other's row.
    let both = chrono::Utc::now();
    for worker in &workers {
        beaten_after(&db, worker, both).await;
    }

    // Which process leased which endpoint's deliveries, sampled until all were sent.
    let sample = async |expected: usize| -> HashMap<uuid::Uuid, HashSet<String>> {
        let mut seen: HashMap<uuid::Uuid, HashSet<String>> = HashMap::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while slow.done.load(SeqCst) < expected {
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {expected} deliveries sent",
                slow.done.load(SeqCst)
            );
            for row in db
                .query_all_raw(Statement::from_string(
                    backend,
                    "SELECT endpoint_id, locked_by FROM webhook_deliveries \
                     WHERE status = 'PENDING' AND locked_by IS NOT NULL",
                ))
                .await
                .unwrap()
            {
                seen.entry(row.try_get("", "endpoint_id").unwrap())
                    .or_default()
                    .insert(row.try_get("", "locked_by").unwrap());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen
    };
    let ((), (), seen) = tokio::join!(
        grant(&first, &account_id, 2),
        grant(&second, &account_id, 2),
        sample(4 * endpoints.len())
    );
    assert_eq!(
        seen.len(),
        endpoints.len(),
        "every endpoint's deliveries seen leased"
    );
    for endpoint in &endpoints {
        let expected = HashSet::from([owner_of(&workers, *endpoint)]);
        assert_eq!(seen[endpoint], expected, "leased by its process only");
    }
    let shares: HashSet<String> = endpoints.iter().map(|e| owner_of(&workers, *e)).collect();

    first.stop().await;
    let left = names().await;
    assert_eq!(left.len(), 1, "the stopped process removed its row");
    let last = left[0].clone();
    // The other process learns of it at its next heartbeat.
    beaten_after(&db, &last, chrono::Utc::now()).await;
    let (_, seen) = tokio::join!(grant(&second, &account_id, 1), sample(5 * endpoints.len()));
    assert_eq!(seen.len(), endpoints.len());
    assert!(
        seen.values().all(|by| by == &HashSet::from([last.clone()])),
        "the process left serves every endpoint: {seen:?} (shares before: {shares:?})"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        slow.started.load(SeqCst),
        5 * endpoints.len(),
        "each delivery once"
    );
}

/// A process that stops writing its row (its delivery loop stuck, or the process dead) keeps
/// its share of the endpoints only until its row runs out: then the others send what waits
/// there. Rows of processes gone for an hour are deleted.
#[tokio::test]
async fn a_process_that_stops_beating_has_its_endpoints_taken_over() {
    use entity::webhook_worker::{ActiveModel, Column, Entity};
    use sea_orm::{ActiveModelTrait, ColumnTrait, Database, EntityTrait, QueryFilter, Set};

    let app = TestApp::spawn_with(private_allowed).await;
    let receiver = Receiver::start(&[]).await;
    let (account_id, key) = app.create_account("A", 0).await;
    let db = Database::connect(&app.db.url).await.unwrap();
    let now = chrono::Utc::now();
    let row = |name: &str, alive_until| ActiveModel {
        name: Set(name.to_owned()),
        started_at: Set(now - chrono::Duration::hours(3)),
        alive_until: Set(alive_until),
    };
    row("webhook-gone", now - chrono::Duration::hours(2))
        .insert(&db)
        .await
        .unwrap();
    row("webhook-stuck", now + chrono::Duration::hours(1))
        .insert(&db)
        .await
        .unwrap();
    let mine = wait_for(Duration::from_secs(10), "this process's row", async || {
        Entity::find()
            .filter(Column::Name.is_not_in(["webhook-gone", "webhook-stuck"]))
            .one(&db)
            .await
            .unwrap()
            .map(|row| row.name)
    })
    .await;
    let workers = vec![mine.clone(), "webhook-stuck".to_owned()];
    // Endpoints until each of the two has a share.
    let (mut ours, mut theirs) = (0, 0);
    while ours == 0 || theirs == 0 {
        create_endpoint(&app, &key, &receiver.url, json!([])).await;
        let endpoints = entity::webhook_endpoint::Entity::find()
            .all(&db)
            .await
            .unwrap();
        assert!(endpoints.len() < 60, "two shares out of 60 endpoints");
        ours = endpoints
            .iter()
            .filter(|e| owner_of(&workers, e.id) == mine)
            .count();
        theirs = endpoints.len() - ours;
    }
    // This process has read the other row, and forgotten the old one.
    beaten_after(&db, &mine, chrono::Utc::now()).await;
    let stored = async |name: &str| {
        Entity::find_by_id(name.to_owned())
            .one(&db)
            .await
            .unwrap()
            .is_some()
    };
    assert!(
        !stored("webhook-gone").await,
        "a row gone for an hour is deleted"
    );

    grant(&app, &account_id, 1).await;
    receiver.wait_for(ours).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        receiver.count(),
        ours,
        "the stuck process's share waits for it"
    );

    // Its row runs out: this process takes its endpoints up.
    let mut stuck = row("webhook-stuck", chrono::Utc::now());
    stuck.started_at = sea_orm::ActiveValue::NotSet;
    stuck.update(&db).await.unwrap();
    receiver.wait_for(ours + theirs).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count(), ours + theirs, "each delivery once");
    assert!(
        stored("webhook-stuck").await,
        "a row that ran out moments ago is kept"
    );
}
