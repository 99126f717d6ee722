//! Retention under load: finished webhook deliveries are pruned, replays do not pile up,
//! one account's failing receivers do not hold up another's, disconnected connections'
//! records go after a grace period, and deleting a customer never holds the write lock for
//! the whole delete.

use std::{
    sync::atomic::Ordering::SeqCst,
    time::{Duration, Instant},
};

use chrono::Utc;
use entity::{enums::DeliveryStatus, record, webhook_attempt, webhook_delivery};
use millwright::{db::Db, ids};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, sea_query::Expr,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    harness::{
        Receiver, SlowReceiver, TestApp, connect, demo_input, grant, setup, test_config,
        wait_until, webhooks_settled,
    },
    sync::last_run,
};

const CREATE_ENDPOINT: &str = "mutation($url: String!) {
    createWebhookEndpoint(input: { url: $url }) { endpoint { id } } }";
const REPLAY: &str =
    "mutation($id: ID!) { replayWebhooks(endpointId: $id, since: \"2020-01-01T00:00:00Z\") }";
const SEND_TEST: &str = "mutation($id: ID!) { sendTestWebhook(endpointId: $id) { id } }";
const DISCONNECT: &str = "mutation($id: ID!) { disconnect(id: $id) { status } }";
const CREDITS: &str = "{ viewer { account { credits { total used available } } } }";

async fn create_endpoint(app: &TestApp, key: &str, url: &str) -> String {
    let data = app.ok(key, CREATE_ENDPOINT, json!({ "url": url })).await;
    data["createWebhookEndpoint"]["endpoint"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A database handle of the test's own.
async fn handle(app: &TestApp) -> Db {
    Db::connect(&test_config(&app.db)).await.unwrap()
}

async fn deliveries(db: &Db, status: DeliveryStatus) -> u64 {
    webhook_delivery::Entity::find()
        .filter(webhook_delivery::Column::Status.eq(status))
        .count(db.conn())
        .await
        .unwrap()
}

async fn records_of(db: &Db, connection: Uuid) -> u64 {
    record::Entity::find()
        .filter(record::Column::ConnectionId.eq(connection))
        .count(db.conn())
        .await
        .unwrap()
}

/// A URL nothing listens on: every request to it fails at once.
async fn closed_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    drop(listener);
    url
}

#[tokio::test]
async fn finished_deliveries_are_pruned_after_the_retention_and_pending_ones_never() {
    let app = TestApp::spawn_with(|c| {
        c.webhooks.allow_private_targets = true;
        c.webhooks.retry_schedule = vec![1];
        c.webhooks.retention_secs = 10;
    })
    .await;
    let db = handle(&app).await;
    let receiver = Receiver::start(&[]).await;
    let (account_id, key) = app.create_account("A", 0).await;
    let endpoint = create_endpoint(&app, &key, &receiver.url).await;
    grant(&app, &account_id, 3).await;
    receiver.wait_for(3).await;
    webhooks_settled(&app).await;
    // Three finished deliveries a day old, and one pending as long, due tomorrow (as after
    // a long Retry-After).
    let day_ago = Utc::now() - chrono::Duration::days(1);
    webhook_delivery::Entity::update_many()
        .col_expr(webhook_delivery::Column::CreatedAt, Expr::value(day_ago))
        .exec(db.conn())
        .await
        .unwrap();
    let endpoint_id = ids::decode(ids::Kind::WebhookEndpoint, &endpoint).unwrap();
    let old = webhook_delivery::Entity::find()
        .one(db.conn())
        .await
        .unwrap()
        .unwrap();
    webhook_delivery::Entity::insert(webhook_delivery::ActiveModel {
        id: Set(Uuid::new_v4()),
        endpoint_id: Set(endpoint_id),
        account_id: Set(old.account_id),
        event_position: Set(old.event_position),
        status: Set(DeliveryStatus::Pending),
        attempt_count: Set(1),
        next_attempt_at: Set(Some(Utc::now() + chrono::Duration::days(1))),
        locked_by: Set(None),
        locked_until: Set(None),
        created_at: Set(day_ago),
    })
    .exec_without_returning(db.conn())
    .await
    .unwrap();
    // And a fresh one.
    grant(&app, &account_id, 1).await;
    receiver.wait_for(4).await;
    wait_until(
        Duration::from_secs(10),
        "the old finished deliveries to be pruned",
        async || deliveries(&db, DeliveryStatus::Succeeded).await == 1,
    )
    .await;
    assert_eq!(
        deliveries(&db, DeliveryStatus::Pending).await,
        1,
        "a pending delivery is never pruned"
    );
    let attempts = webhook_attempt::Entity::find()
        .count(db.conn())
        .await
        .unwrap();
    assert_eq!(
        attempts, 1,
        "the pruned deliveries' attempts went with them"
    );
}

#[tokio::test]
async fn a_replay_does_not_queue_events_already_pending_for_the_endpoint() {
    let app = TestApp::spawn_with(|c| {
        c.webhooks.allow_private_targets = true;
        c.webhooks.retry_schedule = vec![3600];
        c.webhooks.retention_secs = 3600;
    })
    .await;
    let db = handle(&app).await;
    let (account_id, key) = app.create_account("A", 0).await;
    grant(&app, &account_id, 3).await;
    webhooks_settled(&app).await;
    // Created after the grants were routed: its deliveries come from replays only, and stay
    // pending (the receiver is down, the retry an hour away).
    let endpoint = create_endpoint(&app, &key, &closed_url().await).await;
    let first = app.ok(&key, REPLAY, json!({ "id": endpoint })).await;
    assert_eq!(first["replayWebhooks"], 3);
    let second = app.ok(&key, REPLAY, json!({ "id": endpoint })).await;
    assert_eq!(second["replayWebhooks"], 0, "all three are still pending");
    assert_eq!(deliveries(&db, DeliveryStatus::Pending).await, 3);
}

/// Account A's 100 endpoints have a backlog at a receiver that never answers (each request
/// times out after 15 s); account B's test webhook still arrives within seconds.
#[tokio::test]
async fn one_accounts_stalled_backlog_does_not_hold_up_another_account() {
    let app = TestApp::spawn_with(|c| c.webhooks.allow_private_targets = true).await;
    let (stalled, stalled_url) = SlowReceiver::start(Duration::from_secs(60)).await;
    let (a_id, a_key) = app.create_account("A", 0).await;
    for _ in 0..100 {
        create_endpoint(&app, &a_key, &stalled_url).await;
    }
    // 300 deliveries: more than one process claims ahead (32 workers × 8 rounds).
    grant(&app, &a_id, 3).await;
    wait_until(
        Duration::from_secs(15),
        "A's requests to fill the workers",
        async || stalled.open.load(SeqCst) >= 16,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let receiver = Receiver::start(&[]).await;
    let (_, b_key) = app.create_account("B", 0).await;
    let endpoint = create_endpoint(&app, &b_key, &receiver.url).await;
    let sent = Instant::now();
    app.ok(&b_key, SEND_TEST, json!({ "id": endpoint })).await;
    wait_until(Duration::from_secs(20), "B's test webhook", async || {
        receiver.count() == 1
    })
    .await;
    let waited = sent.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "B's test webhook took {waited:?} behind A's backlog"
    );
}

#[tokio::test]
async fn records_of_a_disconnected_connection_go_after_the_grace_period() {
    let app = TestApp::spawn_with(|c| c.connectors.disconnected_records_grace_secs = 3).await;
    let db = handle(&app).await;
    let (key, customer) = setup(&app, 10).await;
    let (gone, _) = connect(&app, &key, demo_input(&customer, "none")).await;
    let (kept, _) = connect(&app, &key, demo_input(&customer, "none")).await;
    last_run(&app, &key, &gone).await;
    last_run(&app, &key, &kept).await;
    let gone_id = ids::decode(ids::Kind::Connection, &gone).unwrap();
    let kept_id = ids::decode(ids::Kind::Connection, &kept).unwrap();
    let kept_records = records_of(&db, kept_id).await;
    assert!(records_of(&db, gone_id).await > 0 && kept_records > 0);
    app.ok(&key, DISCONNECT, json!({ "id": gone })).await;
    assert!(
        records_of(&db, gone_id).await > 0,
        "within the grace period the records stay"
    );
    // The records go in batches, then the cursors with the connection marked purged, in one
    // transaction of their own: wait for that one.
    let purged = async || {
        entity::connection::Entity::find_by_id(gone_id)
            .one(db.conn())
            .await
            .unwrap()
            .unwrap()
            .purged_at
            .is_some()
    };
    wait_until(
        Duration::from_secs(10),
        "the disconnected connection to be purged",
        purged,
    )
    .await;
    assert_eq!(records_of(&db, gone_id).await, 0);
    let cursors = entity::sync_cursor::Entity::find()
        .filter(entity::sync_cursor::Column::ConnectionId.eq(gone_id))
        .count(db.conn())
        .await
        .unwrap();
    assert_eq!(cursors, 0);
    assert_eq!(
        records_of(&db, kept_id).await,
        kept_records,
        "a live one keeps its records"
    );
    // The connection and its runs stay as history.
    let data = app
        .ok(
            &key,
            "query($id: ID!) { connection(id: $id) { status lastSyncRun { status } } }",
            json!({ "id": gone }),
        )
        .await;
    assert_eq!(data["connection"]["status"], "DISCONNECTED");
    assert_eq!(data["connection"]["lastSyncRun"]["status"], "SUCCEEDED");
}

/// `n` records of a connection, written straight to the table.
async fn insert_records(db: &Db, connection: Uuid, n: usize) {
    let now = Utc::now();
    let rows: Vec<record::ActiveModel> = (0..n)
        .map(|i| record::ActiveModel {
            id: Set(Uuid::new_v4()),
            connection_id: Set(connection),
            entity: Set(record::EntityType::Asset),
            key: Set(format!("bulk-{i}")),
            data: Set(json!({ "name": format!("Asset {i}"), "padding": "x".repeat(200) })),
            remote_data: Set(None),
            content_hash: Set(format!("{i:064}")),
            remote_created_at: Set(None),
            remote_updated_at: Set(None),
            first_seen_at: Set(now),
            modified_at: Set(now),
            deleted_at: Set(None),
            seen_pass: Set(None),
        })
        .collect();
    for chunk in rows.chunks(500) {
        record::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(db.conn())
            .await
            .unwrap();
    }
}

/// A customer with a disconnected connection holding `n` records: (customer id, its uuid,
/// the connection's uuid).
async fn customer_with_records(
    app: &TestApp,
    db: &Db,
    key: &str,
    n: usize,
) -> (String, Uuid, Uuid) {
    let customer = app.create_customer(key, "Big Plant", None).await;
    let customer = customer["id"].as_str().unwrap().to_owned();
    let (connection, _) = connect(app, key, demo_input(&customer, "none")).await;
    last_run(app, key, &connection).await;
    app.ok(key, DISCONNECT, json!({ "id": connection })).await;
    let connection_id = ids::decode(ids::Kind::Connection, &connection).unwrap();
    insert_records(db, connection_id, n).await;
    let customer_id = ids::decode(ids::Kind::Customer, &customer).unwrap();
    (customer, customer_id, connection_id)
}

/// Everything of the customer is gone: the row, its connections, their records and runs.
async fn assert_all_gone(db: &Db, customer: Uuid, connection: Uuid) {
    use entity::{connection as conn, customer as cust, sync_run};
    assert!(
        cust::Entity::find_by_id(customer)
            .one(db.conn())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        conn::Entity::find_by_id(connection)
            .one(db.conn())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(records_of(db, connection).await, 0);
    let runs = sync_run::Entity::find()
        .filter(sync_run::Column::ConnectionId.eq(connection))
        .count(db.conn())
        .await
        .unwrap();
    assert_eq!(runs, 0);
}

#[tokio::test]
async fn deleting_a_large_customer_lets_other_writers_through_and_removes_everything() {
    let app = TestApp::spawn().await;
    let db = handle(&app).await;
    let (key, _) = setup(&app, 10).await;
    let (customer, customer_id, connection_id) =
        customer_with_records(&app, &db, &key, 20_000).await;
    let credits = app.ok(&key, CREDITS, json!({})).await;
    // A writer keeps writing while the customer is deleted; its longest wait is what the
    // delete held the write lock for at most.
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = {
        let (http, url, key, stop) = (
            app.http.clone(),
            app.url("/graphql"),
            key.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut longest = Duration::ZERO;
            let mut writes = 0;
            while !stop.is_cancelled() {
                let started = Instant::now();
                let body: Value = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({ "query": "mutation { createCustomer(input: {name: \"W\"}) { id } }" }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert!(body.get("errors").is_none(), "{body}");
                longest = longest.max(started.elapsed());
                writes += 1;
            }
            (longest, writes)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    app.ok(
        &key,
        "mutation($id: ID!) { deleteCustomer(id: $id) }",
        json!({ "id": customer }),
    )
    .await;
    let took = started.elapsed();
    stop.cancel();
    let (longest, writes) = writer.await.unwrap();
    assert!(writes > 2, "the writer wrote {writes} times");
    assert!(
        longest * 2 < took,
        "a write waited {longest:?} during a delete of {took:?}: the delete held the lock"
    );
    assert_all_gone(&db, customer_id, connection_id).await;
    let body = app
        .gql(
            &key,
            "query($id: ID!) { customer(id: $id) { id } }",
            json!({ "id": customer }),
        )
        .await;
    assert!(body["data"]["customer"].is_null(), "{body}");
    assert_eq!(
        app.ok(&key, CREDITS, json!({})).await,
        credits,
        "the credits came back once, at the disconnect"
    );
}

/// A delete interrupted after its first transaction (the customer marked, its rows still
/// there) is finished by the cleanup worker; meanwhile the customer is gone from the API.
#[tokio::test]
async fn an_interrupted_customer_delete_is_finished_in_the_background() {
    // A grace long enough for the connection's records to stay until the customer is marked;
    // the worker looks every tenth of it.
    let app = TestApp::spawn_with(|c| c.connectors.disconnected_records_grace_secs = 30).await;
    let db = handle(&app).await;
    let (key, _) = setup(&app, 10).await;
    let (customer, customer_id, connection_id) = customer_with_records(&app, &db, &key, 3000).await;
    entity::customer::Entity::update_many()
        .col_expr(entity::customer::Column::DeletedAt, Expr::value(Utc::now()))
        .filter(entity::customer::Column::Id.eq(customer_id))
        .exec(db.conn())
        .await
        .unwrap();
    let body = app
        .gql(
            &key,
            "query($id: ID!) { customer(id: $id) { id } }",
            json!({ "id": customer }),
        )
        .await;
    assert!(body["data"]["customer"].is_null(), "{body}");
    wait_until(
        Duration::from_secs(10),
        "the delete to be finished",
        async || {
            entity::customer::Entity::find_by_id(customer_id)
                .one(db.conn())
                .await
                .unwrap()
                .is_none()
        },
    )
    .await;
    assert_all_gone(&db, customer_id, connection_id).await;
}
