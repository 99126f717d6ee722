//! What one token may hold over WebSocket: subscription ids, sockets per token, a client that
//! does not read, and sockets of revoked tokens on every process.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::{
    client_async,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

use crate::{
    harness::{ADMIN_TOKEN, TestApp, connect, demo_input, log_end, setup, wait_until},
    websocket::{Socket, closed_soon, init, next, open, running, second_key, send},
};

/// `connection_init` with `token`: the acknowledgement, or the close code.
async fn try_init(socket: &mut Socket, token: &str) -> Result<Value, u16> {
    let payload = json!({ "authorization": format!("Bearer {token}") });
    send(
        socket,
        json!({ "type": "connection_init", "payload": payload }),
    )
    .await;
    next(socket).await
}

/// Whether a new socket with `token` is admitted by `app`.
async fn admitted(app: &TestApp, token: &str) -> bool {
    let mut socket = open(app).await;
    match try_init(&mut socket, token).await {
        Ok(ack) => ack["type"] == "connection_ack",
        Err(4429) => false,
        Err(code) => panic!("closed with {code}"),
    }
}

fn subscribe(id: &str, query: &str, variables: Value) -> Value {
    json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } })
}

/// Subscribes to the caller's events on a socket that nothing else will write to.
async fn subscribed(app: &TestApp, token: &str) -> Socket {
    running(app, token, "subscription { events { type } }", json!({})).await
}

async fn still_open(socket: &mut Socket) {
    send(socket, json!({ "type": "ping" })).await;
    loop {
        let message = next(socket).await.unwrap();
        if message["type"] != "next" {
            assert_eq!(message, json!({ "type": "pong" }));
            return;
        }
    }
}

#[tokio::test]
async fn subscription_ids_longer_than_128_characters_close_with_4400() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    let mut socket = open(&app).await;
    init(&mut socket, &key).await;
    // 128 characters (256 bytes) is within the limit.
    let longest = "é".repeat(128);
    send(
        &mut socket,
        subscribe(&longest, "{ __typename }", json!({})),
    )
    .await;
    let result = next(&mut socket).await.unwrap();
    assert_eq!(
        (result["type"].as_str(), result["id"].as_str()),
        (Some("next"), Some(longest.as_str()))
    );
    assert_eq!(next(&mut socket).await.unwrap()["type"], "complete");

    // A 1 MB id fits in the default body limit: it is refused as soon as it is read.
    for id in ["x".repeat(129), "x".repeat(1_000_000)] {
        let mut socket = open(&app).await;
        init(&mut socket, &key).await;
        send(&mut socket, subscribe(&id, "{ __typename }", json!({}))).await;
        assert_eq!(
            next(&mut socket).await,
            Err(4400),
            "an id of {} characters",
            id.len()
        );
    }
    let mut socket = open(&app).await;
    init(&mut socket, &key).await;
    send(
        &mut socket,
        json!({ "id": "y".repeat(129), "type": "complete" }),
    )
    .await;
    assert_eq!(
        next(&mut socket).await,
        Err(4400),
        "complete with a long id"
    );
}

#[tokio::test]
async fn a_token_holds_at_most_the_configured_sockets_and_a_closed_one_frees_its_slot() {
    let app = TestApp::spawn_with(|c| c.http.ws_max_sockets_per_token = 2).await;
    let (_, key) = app.create_account("A", 0).await;
    let (_, other_key) = app.create_account("B", 0).await;
    let mut first = open(&app).await;
    init(&mut first, &key).await;
    let mut second = open(&app).await;
    init(&mut second, &key).await;
    let mut third = open(&app).await;
    assert_eq!(try_init(&mut third, &key).await, Err(4429));
    // The cap is per token.
    assert!(admitted(&app, &other_key).await);
    still_open(&mut first).await;

    first.close(None).await.unwrap();
    wait_until(
        Duration::from_secs(10),
        "the closed socket's slot to be free",
        async || admitted(&app, &key).await,
    )
    .await;
    still_open(&mut second).await;
}

#[tokio::test]
async fn a_client_that_does_not_read_is_dropped() {
    let app = TestApp::spawn_with(|c| {
        c.http.ws_send_timeout_secs = 1;
        c.http.ws_max_sockets_per_token = 1;
    })
    .await;
    let (account_id, key) = app.create_account("A", 0).await;
    // A busy log: 200 subscriptions that each replay 300 events make about 15 MB to send.
    let start = log_end(&app).await;
    for _ in 0..300 {
        let grant = "mutation($id: ID!) { grantCredits(accountId: $id, amount: 1) { total } }";
        app.ok(ADMIN_TOKEN, grant, json!({ "id": account_id }))
            .await;
    }

    // A client whose receive buffer is small, so that the server's sends block soon.
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let stream = tcp.connect(app.addr).await.unwrap();
    let mut request = app.ws_url().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (socket, _) = client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    let mut slow = socket;
    init(&mut slow, &key).await;
    let events = "subscription($after: String) {
        events(after: $after) { id cursor type occurredAt customerId connectionId data } }";
    for n in 0..200 {
        send(
            &mut slow,
            subscribe(&n.to_string(), events, json!({ "after": start })),
        )
        .await;
    }
    assert!(
        !admitted(&app, &key).await,
        "the slow client holds the token's one socket"
    );

    // It reads nothing more; the server drops it and its slot is free again.
    wait_until(
        Duration::from_secs(60),
        "the slow client to be dropped",
        async || admitted(&app, &key).await,
    )
    .await;
    // What reached the client ends with the close frame if it got out, or just ends.
    loop {
        match slow.next().await {
            Some(Ok(Message::Close(frame))) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(4413));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
}

#[tokio::test]
async fn a_revoked_key_closes_its_sockets_on_every_process() {
    let app = TestApp::spawn().await;
    let other = app.another().await;
    let (_, key) = app.create_account("A", 0).await;
    let (id, second) = second_key(&app, &key).await;
    let mut here = subscribed(&app, &second).await;
    let mut there = subscribed(&other, &second).await;
    let mut kept = subscribed(&other, &key).await;

    let revoke = "mutation($id: ID!) { revokeApiKey(id: $id) { id } }";
    app.ok(&key, revoke, json!({ "id": id })).await;
    assert_eq!(closed_soon(&mut here, "the revoking process").await, 4403);
    assert_eq!(closed_soon(&mut there, "another process").await, 4403);
    still_open(&mut kept).await;
}

#[tokio::test]
async fn a_rotated_or_disconnected_connection_token_closes_its_sockets_on_every_process() {
    let app = TestApp::spawn().await;
    let other = app.another().await;
    let (key, customer) = setup(&app, 10).await;
    let (id, token) = connect(&app, &key, demo_input(&customer, "none")).await;
    let mut here = subscribed(&app, &token).await;
    let mut there = subscribed(&other, &token).await;

    let rotate = "mutation($id: ID!) { rotateConnectionToken(id: $id) { token } }";
    let rotated = app.ok(&key, rotate, json!({ "id": id })).await;
    let new_token = rotated["rotateConnectionToken"]["token"].as_str().unwrap();
    assert_eq!(
        closed_soon(&mut here, "rotated, the revoking process").await,
        4403
    );
    assert_eq!(
        closed_soon(&mut there, "rotated, another process").await,
        4403
    );

    let mut here = subscribed(&app, new_token).await;
    let mut there = subscribed(&other, new_token).await;
    let disconnect = "mutation($id: ID!) { disconnect(id: $id) { id } }";
    app.ok(&key, disconnect, json!({ "id": id })).await;
    assert_eq!(
        closed_soon(&mut here, "disconnected, the revoking process").await,
        4403
    );
    assert_eq!(
        closed_soon(&mut there, "disconnected, another process").await,
        4403
    );
}

/// PostgreSQL: a revocation reaches the other processes by a `NOTIFY` sent once its
/// transaction committed (outside it: see `Db::announce_commits`), with the revoked key's id.
#[tokio::test]
async fn a_revocation_is_announced_to_other_processes_after_its_commit() {
    let app = TestApp::spawn().await;
    if !app.db.url.starts_with("postgres") {
        // SQLite's processes share a file and nothing else: they look every second.
        return;
    }
    let (_, key) = app.create_account("A", 0).await;
    let (id, _) = second_key(&app, &key).await;
    let mut listener = sea_orm::sqlx::postgres::PgListener::connect(&app.db.url)
        .await
        .expect("a LISTEN connection");
    listener
        .listen("millwright_revocations")
        .await
        .expect("LISTEN");

    app.ok(
        &key,
        "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
        json!({ "id": id }),
    )
    .await;
    let heard = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("a notification within 10 s")
        .expect("the notification");
    let (kind, uuid) = heard.payload().split_once(':').expect("kind:id");
    assert_eq!(kind, "api_key");
    let revoked = uuid::Uuid::parse_str(uuid).expect("a UUID");
    assert_eq!(
        millwright::ids::encode(millwright::ids::Kind::ApiKey, revoked),
        id
    );
}
