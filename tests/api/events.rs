//! The event log and its subscriptions: replay then live, scoping, slow readers, several
//! server processes, retention.

use millwright::events::LogPosition;
use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    harness::{
        ADMIN_TOKEN, TestApp, connect, demo_input, error_code, grant, log_end, setup, wait_until,
    },
    websocket::{Socket, init, next, open, send},
};

const GRANT: &str = "mutation($id: ID!) { grantCredits(accountId: $id, amount: 1) { total } }";
const EVENTS: &str = "query($after: String, $filter: EventFilter, $first: Int) {
    events(first: $first, after: $after, filter: $filter) {
        edges { cursor node { id type connectionId data } } pageInfo { hasNextPage endCursor } } }";

async fn subscribe(socket: &mut Socket, id: &str, query: &str, variables: Value) {
    send(socket, json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } })).await;
}

const SUBSCRIBE_EVENTS: &str = "subscription($after: String, $filter: EventFilter) {
    events(after: $after, filter: $filter) { cursor type data } }";

/// Where an event's cursor places it in the log's reading order.
fn position(cursor: &str) -> LogPosition {
    millwright::events::decode_cursor(cursor).unwrap()
}

/// The next `count` events of subscription `id`, as (position, type).
async fn receive(socket: &mut Socket, id: &str, count: usize) -> Vec<(LogPosition, String)> {
    let mut events = Vec::with_capacity(count);
    while events.len() < count {
        let message = next(socket)
            .await
            .unwrap_or_else(|code| panic!("socket closed with {code}"));
        assert_eq!(message["type"], "next", "{message}");
        assert_eq!(message["id"], id);
        let event = &message["payload"]["data"]["events"];
        events.push((
            position(event["cursor"].as_str().unwrap()),
            event["type"].as_str().unwrap().to_owned(),
        ));
    }
    events
}

fn assert_strictly_increasing(events: &[(LogPosition, String)]) {
    assert!(
        events.windows(2).all(|w| w[0].0 < w[1].0),
        "positions strictly increase: {events:?}"
    );
}

#[tokio::test]
async fn events_query_filters_and_paginates() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let (connection, token) = connect(&app, &key, demo_input(&customer, "none")).await;
    app.ok(
        &key,
        "mutation($id: ID!) { disconnect(id: $id) { id } }",
        json!({ "id": connection }),
    )
    .await;

    // Sync runs add their own events in the background; these are the connection's and credits'.
    let kinds =
        json!({ "types": ["CREDITS_CHANGED", "CONNECTION_CREATED", "CONNECTION_DISCONNECTED"] });
    let all = app.ok(&key, EVENTS, json!({ "filter": kinds })).await;
    let types: Vec<_> = all["events"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "CREDITS_CHANGED",
            "CONNECTION_CREATED",
            "CREDITS_CHANGED",
            "CONNECTION_DISCONNECTED",
            "CREDITS_CHANGED"
        ]
    );
    let created = &all["events"]["edges"][1]["node"];
    assert_eq!(created["data"]["credit_cost"], 1);
    assert_eq!(created["connectionId"], connection.as_str());

    let page = app
        .ok(&key, EVENTS, json!({ "first": 2, "filter": kinds }))
        .await;
    assert_eq!(page["events"]["pageInfo"]["hasNextPage"], true);
    let after = page["events"]["pageInfo"]["endCursor"].clone();
    let rest = app
        .ok(&key, EVENTS, json!({ "after": after, "filter": kinds }))
        .await;
    assert_eq!(rest["events"]["edges"].as_array().unwrap().len(), 3);

    let disconnected = json!({ "filter": { "types": ["CONNECTION_DISCONNECTED"] } });
    let filtered = app.ok(&key, EVENTS, disconnected).await;
    assert_eq!(
        filtered["events"]["edges"][0]["node"]["data"]["credits_returned"],
        1
    );
    let mut by_connection = kinds.clone();
    by_connection["connectionId"] = json!(connection);
    let by_connection = app
        .ok(&key, EVENTS, json!({ "filter": by_connection }))
        .await;
    assert_eq!(
        by_connection["events"]["edges"].as_array().unwrap().len(),
        4
    );

    let (_, other) = app.create_account("Other", 0).await;
    let foreign = app.ok(&other, EVENTS, json!({})).await;
    assert_eq!(foreign["events"]["edges"], json!([]));
    for bad in [
        json!({ "after": "nope" }),
        json!({ "first": 500 }),
        json!({ "filter": { "connectionId": "x" } }),
    ] {
        assert_eq!(
            error_code(&app.gql(&key, EVENTS, bad.clone()).await),
            "BAD_USER_INPUT",
            "{bad}"
        );
    }
    // The connection's token was revoked on disconnect.
    assert_eq!(
        app.post(Some(&token), json!({ "query": EVENTS })).await.0,
        401
    );
}

#[tokio::test]
async fn replay_then_live_with_concurrent_writers_has_no_gap_or_duplicate() {
    let app = TestApp::spawn().await;
    let (account_id, key) = app.create_account("A", 0).await;
    grant(&app, &account_id, 10).await;
    let stored = app.ok(&key, EVENTS, json!({})).await;
    let fifth = stored["events"]["edges"][4]["cursor"].clone();

    let writer = {
        let (http, url, account_id) = (app.http.clone(), app.url("/graphql"), account_id.clone());
        tokio::spawn(async move {
            for _ in 0..60 {
                let body = json!({ "query": GRANT, "variables": { "id": account_id } });
                http.post(&url)
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
            }
        })
    };
    let mut socket = open(&app).await;
    init(&mut socket, &key).await;
    subscribe(
        &mut socket,
        "s",
        SUBSCRIBE_EVENTS,
        json!({ "after": fifth }),
    )
    .await;
    let events = receive(&mut socket, "s", 5 + 60).await;
    writer.await.unwrap();
    assert_strictly_increasing(&events);
    assert_eq!(
        events[0].0.position,
        position(fifth.as_str().unwrap()).position + 1,
        "replay starts right after the cursor"
    );
    assert!(events.iter().all(|(_, t)| t == "CREDITS_CHANGED"));
    // Nothing more arrives: the next message is the answer to a ping.
    send(&mut socket, json!({ "type": "ping" })).await;
    assert_eq!(next(&mut socket).await.unwrap()["type"], "pong");
}

#[tokio::test]
async fn subscriptions_see_only_their_own_account_and_connection() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let mut input = demo_input(&customer, "offline");
    input["validate"] = json!(false);
    let (own, token) = connect(&app, &key, input).await;
    let (other_id, other_key) = app.create_account("Other", 0).await;

    // Both start from the end of the log as it is now: what follows reaches them however
    // long they take to start streaming.
    let after = log_end(&app).await;
    let mut foreign = open(&app).await;
    init(&mut foreign, &other_key).await;
    subscribe(
        &mut foreign,
        "f",
        SUBSCRIBE_EVENTS,
        json!({ "after": after }),
    )
    .await;
    let mut scoped = open(&app).await;
    init(&mut scoped, &token).await;
    let connection_events = json!({ "types": ["CONNECTION_CREATED", "CONNECTION_STATUS_CHANGED", "CONNECTION_DISCONNECTED"] });
    subscribe(
        &mut scoped,
        "c",
        SUBSCRIBE_EVENTS,
        json!({ "filter": connection_events, "after": after }),
    )
    .await;

    // Events of another connection of the account, then of the other account, then of the
    // token's own connection.
    let (second, _) = connect(&app, &key, demo_input(&customer, "none")).await;
    app.ok(
        &key,
        "mutation($id: ID!) { disconnect(id: $id) { id } }",
        json!({ "id": second }),
    )
    .await;
    grant(&app, &other_id, 1).await;
    app.ok(
        &key,
        "mutation($id: ID!) { checkConnection(id: $id) { status } }",
        json!({ "id": own }),
    )
    .await;

    let first = receive(&mut foreign, "f", 1).await;
    assert_eq!(
        first[0].1, "CREDITS_CHANGED",
        "the other account's first event is its own grant"
    );
    let first = receive(&mut scoped, "c", 1).await;
    assert_eq!(
        first[0].1, "CONNECTION_STATUS_CHANGED",
        "the token's first event is its own connection's"
    );
}

#[tokio::test]
async fn a_slow_subscriber_still_receives_every_event() {
    let app = TestApp::spawn_with(|c| c.events.feed_capacity = 8).await;
    let (account_id, key) = app.create_account("A", 0).await;
    let mut socket = open(&app).await;
    init(&mut socket, &key).await;
    let after = json!({ "after": log_end(&app).await });
    subscribe(&mut socket, "slow", SUBSCRIBE_EVENTS, after).await;
    // 300 events while the subscriber reads nothing: far beyond every buffer on the way.
    grant(&app, &account_id, 300).await;
    let mut events = Vec::new();
    while events.len() < 300 {
        events.extend(receive(&mut socket, "slow", 1).await);
        // The slowness under test: pauses while the server has more to send.
        if events.len() % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_strictly_increasing(&events);
    // One writer at a time: consecutive positions.
    assert_eq!(
        events.last().unwrap().0.position - events[0].0.position,
        299,
        "no gap"
    );
}

#[tokio::test]
async fn an_event_from_another_server_process_reaches_subscribers() {
    let app = TestApp::spawn().await;
    if !app.db.url.starts_with("postgres") {
        return; // SQLite runs as a single process.
    }
    let other = app.another().await;
    let (account_id, key) = app.create_account("A", 0).await;
    let mut socket = open(&other).await;
    init(&mut socket, &key).await;
    let after = json!({ "after": log_end(&app).await });
    subscribe(&mut socket, "s", SUBSCRIBE_EVENTS, after).await;
    let started = std::time::Instant::now();
    grant(&app, &account_id, 3).await;
    let events = receive(&mut socket, "s", 3).await;
    assert_strictly_increasing(&events);
    // Far above the 100 ms the NOTIFY path takes; the 1 s poll alone would also pass, so
    // the benchmark, not this test, measures latency.
    assert!(started.elapsed() < Duration::from_secs(10));

    // Drop every LISTEN connection: they are re-established and nothing committed meanwhile is lost.
    use sea_orm::{ConnectionTrait, Statement};
    let admin = sea_orm::Database::connect(&app.db.url).await.unwrap();
    let kill = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()";
    admin
        .execute_raw(Statement::from_string(admin.get_database_backend(), kill))
        .await
        .unwrap();
    admin.close().await.ok();
    grant(&app, &account_id, 3).await;
    let more = receive(&mut socket, "s", 3).await;
    assert_eq!(
        more[0].0.position,
        events[2].0.position + 1,
        "no gap after the LISTEN connection dropped"
    );
}

#[tokio::test]
async fn connection_status_subscription_follows_changes() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let mut socket = open(&app).await;
    init(&mut socket, &key).await;
    subscribe(
        &mut socket,
        "s",
        "subscription($c: ID) { connectionStatus(customerId: $c) { id status } }",
        json!({ "c": customer }),
    )
    .await;
    // `connectionStatus` takes no `after` cursor: it streams from wherever the server's feed
    // stands once the subscription runs, which nothing on the wire announces. This pause lets
    // it start before the first change is made.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut input = demo_input(&customer, "offline");
    input["validate"] = json!(false);
    let (id, _) = connect(&app, &key, input).await;
    app.ok(
        &key,
        "mutation($id: ID!) { checkConnection(id: $id) { status } }",
        json!({ "id": id }),
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let message = next(&mut socket).await.unwrap();
        assert_eq!(
            message["payload"]["data"]["connectionStatus"]["id"],
            id.as_str()
        );
        statuses.push(
            message["payload"]["data"]["connectionStatus"]["status"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // The connect's own sync may already have found the remote offline when the first
    // message loads the connection.
    assert!(
        matches!(statuses[0].as_str(), "PENDING" | "OFFLINE"),
        "{statuses:?}"
    );
    assert_eq!(statuses[1], "OFFLINE");
}

#[tokio::test]
async fn duplicate_subscription_ids_close_with_4409() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    let mut socket = open(&app).await;
    init(&mut socket, &key).await;
    subscribe(&mut socket, "same", SUBSCRIBE_EVENTS, json!({})).await;
    subscribe(&mut socket, "same", SUBSCRIBE_EVENTS, json!({})).await;
    assert_eq!(next(&mut socket).await, Err(4409));
}

#[tokio::test]
async fn an_idle_subscription_survives_on_ping_pong() {
    let app = TestApp::spawn_with(|c| c.http.ws_ping_interval_secs = 1).await;
    let (account_id, key) = app.create_account("A", 0).await;
    let mut socket = open(&app).await;
    init(&mut socket, &key).await;
    subscribe(&mut socket, "s", SUBSCRIBE_EVENTS, json!({})).await;
    for _ in 0..5 {
        assert_eq!(next(&mut socket).await.unwrap()["type"], "ping");
        send(&mut socket, json!({ "type": "pong" })).await;
    }
    grant(&app, &account_id, 1).await;
    // Pings keep coming while the event does not: bounded by a deadline, not by them.
    let event = async {
        loop {
            let message = next(&mut socket).await.unwrap();
            if message["type"] == "next" {
                return message;
            }
            assert_eq!(message["type"], "ping");
        }
    };
    let message = tokio::time::timeout(Duration::from_secs(15), event)
        .await
        .expect("the event within 15 s");
    assert_eq!(
        message["payload"]["data"]["events"]["type"],
        "CREDITS_CHANGED"
    );
}

#[tokio::test]
async fn cursors_older_than_the_retention_are_refused() {
    let app = TestApp::spawn_with(|c| c.events.retention_secs = 1).await;
    let (account_id, key) = app.create_account("A", 0).await;
    grant(&app, &account_id, 2).await;
    let first = app.ok(&key, EVENTS, json!({})).await["events"]["edges"][0]["cursor"].clone();
    wait_until(
        Duration::from_secs(5),
        "the expired events to be pruned",
        async || app.ok(&key, EVENTS, json!({})).await["events"]["edges"] == json!([]),
    )
    .await;
    let body = app.gql(&key, EVENTS, json!({ "after": first })).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("retention")
    );
    let mut socket = open(&app).await;
    init(&mut socket, &key).await;
    subscribe(
        &mut socket,
        "old",
        SUBSCRIBE_EVENTS,
        json!({ "after": first }),
    )
    .await;
    let message = next(&mut socket).await.unwrap();
    assert_eq!(message["type"], "error");
    assert_eq!(
        message["payload"][0]["extensions"]["code"],
        "BAD_USER_INPUT"
    );
}

#[tokio::test]
async fn sync_run_subscription_follows_one_run_to_its_end() {
    let app = TestApp::spawn_with(|c| c.sync.page_size = 20).await;
    let (key, customer) = setup(&app, 10).await;
    let mut connect_input = demo_input(&customer, "none");
    connect_input["validate"] = json!(false);
    connect_input["credentials"]["scale"] = json!(200);
    let data = app
        .ok(&key, "mutation($i: ConnectInput!) { connect(input: $i) { connection { lastSyncRun { id } } } }", json!({ "i": connect_input }))
        .await;
    let run = data["connect"]["connection"]["lastSyncRun"]["id"].clone();
    let mut socket = open(&app).await;
    init(&mut socket, &key).await;
    subscribe(
        &mut socket,
        "r",
        "subscription($id: ID!) { syncRun(id: $id) { id status recordsAdded } }",
        json!({ "id": run }),
    )
    .await;
    let mut statuses = Vec::new();
    loop {
        let message = next(&mut socket).await.unwrap();
        if message["type"] == "complete" {
            break;
        }
        assert_eq!(message["type"], "next", "{message}");
        let state = &message["payload"]["data"]["syncRun"];
        assert_eq!(state["id"], run);
        statuses.push(state["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("SUCCEEDED"),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn cursors_past_the_end_of_the_log_are_refused() {
    let app = TestApp::spawn().await;
    let (account_id, key) = app.create_account("A", 0).await;
    grant(&app, &account_id, 2).await;
    for position in [1_000_000, i64::MAX] {
        let after = millwright::events::encode_cursor(LogPosition { txid: 0, position });
        let body = app.gql(&key, EVENTS, json!({ "after": after })).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{position}: {body}");
        let mut socket = open(&app).await;
        init(&mut socket, &key).await;
        subscribe(
            &mut socket,
            "ahead",
            SUBSCRIBE_EVENTS,
            json!({ "after": after }),
        )
        .await;
        let message = next(&mut socket).await.unwrap();
        assert_eq!(message["type"], "error", "{message}");
        assert_eq!(
            message["payload"][0]["extensions"]["code"],
            "BAD_USER_INPUT"
        );
    }
}

/// Pruning goes in batches (5,000 events a transaction) and stops at the first event kept.
#[tokio::test]
async fn pruning_deletes_exactly_the_expired_events_in_batches() {
    use millwright::{
        db::Db,
        events::{self, EventType, NewEvent},
    };
    use sea_orm::{EntityTrait, sea_query::Expr};
    let app = TestApp::spawn().await;
    let (account_id, _) = app.create_account("A", 0).await;
    let account = millwright::ids::decode(millwright::ids::Kind::Account, &account_id).unwrap();
    let db = Db::connect(&crate::harness::test_config(&app.db))
        .await
        .unwrap();
    let event = || NewEvent {
        account_id: account,
        customer_id: None,
        connection_id: None,
        event_type: EventType::CreditsChanged,
        data: json!({ "amount": 1 }),
    };
    let txn = db.begin_write().await.unwrap();
    events::record(&*txn, (0..12_000).map(|_| event()).collect())
        .await
        .unwrap();
    txn.commit().await.unwrap();
    // Every event so far is made an hour old, rather than waiting for them to age.
    let txn = db.begin_write().await.unwrap();
    entity::event::Entity::update_many()
        .col_expr(
            entity::event::Column::OccurredAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::hours(1)),
        )
        .exec(&*txn)
        .await
        .unwrap();
    events::record(&*txn, vec![event(), event()]).await.unwrap();
    txn.commit().await.unwrap();
    // Everything older than a minute: the 12,000, and the account's creation events.
    let retention = Duration::from_secs(60);
    let pruned = events::prune(&db, retention).await.unwrap();
    assert!((12_000..12_010).contains(&pruned), "{pruned}");
    assert_eq!(events::prune(&db, retention).await.unwrap(), 0);
    let left = entity::event::Entity::find().all(db.conn()).await.unwrap();
    assert_eq!(left.len(), 2);
    db.close().await.unwrap();
}
