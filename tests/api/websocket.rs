//! GraphQL over WebSocket (graphql-transport-ws): handshake, auth, timeouts, ping/pong,
//! protocol violations and the cap on subscriptions (limits per token: `websocket_limits`).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

use crate::harness::TestApp;

pub type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn open(app: &TestApp) -> Socket {
    let mut request = app.ws_url().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (socket, response) = connect_async(request).await.expect("websocket handshake");
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "graphql-transport-ws"
    );
    socket
}

pub async fn send(socket: &mut Socket, value: Value) {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .unwrap();
}

/// The next text message as JSON, or the close code.
pub async fn next(socket: &mut Socket) -> Result<Value, u16> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(15), socket.next())
            .await
            .expect("a message within 15 s");
        match message {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(frame))) => {
                return Err(frame.map(|f| u16::from(f.code)).unwrap_or(1005));
            }
            Some(Ok(_)) => continue,
            other => panic!("socket ended without a close frame: {other:?}"),
        }
    }
}

/// A socket of `token` running the subscription `query` (id `s`), once the server runs it:
/// the `pong` of a ping sent after the `subscribe` has come (results that came first, such as
/// events of a new connection's first sync, or all of a subscription that already ended, are
/// skipped). A refused subscription fails.
pub async fn running(app: &TestApp, token: &str, query: &str, variables: Value) -> Socket {
    let mut socket = open(app).await;
    init(&mut socket, token).await;
    let payload = json!({ "query": query, "variables": variables });
    send(
        &mut socket,
        json!({ "id": "s", "type": "subscribe", "payload": payload }),
    )
    .await;
    send(&mut socket, json!({ "type": "ping" })).await;
    loop {
        let message = next(&mut socket).await.unwrap();
        if message["type"] == "pong" {
            return socket;
        }
        // Results, and the `complete` of one that ended by itself (a finished run's).
        assert!(
            ["next", "complete"].contains(&message["type"].as_str().unwrap_or_default()),
            "{message}"
        );
    }
}

/// The close code the socket gets within 5 s (the promise is 2 s; the server pings only
/// every 30 s, so the ping's re-check of the token cannot be what closes it).
pub async fn closed_soon(socket: &mut Socket, what: &str) -> u16 {
    let closed = async {
        loop {
            // Events committed with the revocation (`connection.disconnected`) may come first.
            if let Err(code) = next(socket).await {
                return code;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .unwrap_or_else(|_| panic!("{what}: not closed within 5 s"))
}

pub async fn init(socket: &mut Socket, key: &str) {
    send(socket, json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {key}") } })).await;
    assert_eq!(next(socket).await.unwrap()["type"], "connection_ack");
}

#[tokio::test]
async fn queries_run_over_the_socket_and_ping_gets_pong() {
    let app = TestApp::spawn().await;
    let (account_id, key) = app.create_account("A", 0).await;
    let mut socket = open(&app).await;
    init(&mut socket, &key).await;
    send(
        &mut socket,
        json!({ "type": "ping", "payload": { "n": 1 } }),
    )
    .await;
    assert_eq!(
        next(&mut socket).await.unwrap(),
        json!({ "type": "pong", "payload": { "n": 1 } })
    );

    send(&mut socket, json!({ "id": "1", "type": "subscribe", "payload": { "query": "{ viewer { account { id } } }" } })).await;
    let result = next(&mut socket).await.unwrap();
    assert_eq!(result["type"], "next");
    assert_eq!(
        result["payload"]["data"]["viewer"]["account"]["id"],
        account_id.as_str()
    );
    assert_eq!(
        next(&mut socket).await.unwrap(),
        json!({ "id": "1", "type": "complete" })
    );

    send(
        &mut socket,
        json!({ "id": "2", "type": "subscribe", "payload": { "query": "{ nope }" } }),
    )
    .await;
    let error = next(&mut socket).await.unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["payload"][0]["extensions"]["code"], "BAD_USER_INPUT");
}

#[tokio::test]
async fn bad_or_missing_tokens_close_with_4403() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    for payload in [
        json!({ "authorization": "Bearer mwk_wrong" }),
        json!({ "authorization": key }),
        json!({}),
        Value::Null,
    ] {
        let mut socket = open(&app).await;
        send(
            &mut socket,
            json!({ "type": "connection_init", "payload": payload }),
        )
        .await;
        assert_eq!(next(&mut socket).await, Err(4403), "payload {payload}");
    }
}

#[tokio::test]
async fn no_connection_init_closes_with_4408() {
    let app = TestApp::spawn_with(|c| c.http.ws_init_timeout_secs = 1).await;
    let mut socket = open(&app).await;
    assert_eq!(next(&mut socket).await, Err(4408));
}

#[tokio::test]
async fn protocol_violations_close_the_socket() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;

    let mut socket = open(&app).await;
    send(&mut socket, json!({ "id": "1", "type": "subscribe", "payload": { "query": "{ viewer { account { id } } }" } })).await;
    assert_eq!(
        next(&mut socket).await,
        Err(4401),
        "subscribe before the acknowledgement"
    );

    let mut socket = open(&app).await;
    init(&mut socket, &key).await;
    send(&mut socket, json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {key}") } })).await;
    assert_eq!(next(&mut socket).await, Err(4429), "second connection_init");

    let mut socket = open(&app).await;
    socket
        .send(Message::Text("{not json".into()))
        .await
        .unwrap();
    assert_eq!(next(&mut socket).await, Err(4400), "malformed message");
}

#[tokio::test]
async fn the_server_pings_idle_sockets() {
    let app = TestApp::spawn_with(|c| c.http.ws_ping_interval_secs = 1).await;
    let (_, key) = app.create_account("A", 0).await;
    let mut socket = open(&app).await;
    init(&mut socket, &key).await;
    assert_eq!(next(&mut socket).await.unwrap(), json!({ "type": "ping" }));
    send(&mut socket, json!({ "type": "pong" })).await;
    assert_eq!(next(&mut socket).await.unwrap(), json!({ "type": "ping" }));
}

/// A second API key of the account: (its id, the key).
pub async fn second_key(app: &TestApp, key: &str) -> (String, String) {
    let data = app
        .ok(
            key,
            "mutation { createApiKey(name: \"socket\") { apiKey { id } key } }",
            json!({}),
        )
        .await;
    let created = &data["createApiKey"];
    (
        created["apiKey"]["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    )
}

async fn revoke(app: &TestApp, key: &str, id: &str) {
    app.ok(
        key,
        "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
        json!({ "id": id }),
    )
    .await;
}

#[tokio::test]
async fn a_revoked_key_can_do_nothing_more_on_an_open_socket() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    let (id, second) = second_key(&app, &key).await;
    let mut socket = open(&app).await;
    init(&mut socket, &second).await;
    revoke(&app, &key, &id).await;
    let mutation = "mutation { createApiKey(name: \"sneaky\") { key } }";
    send(
        &mut socket,
        json!({ "id": "1", "type": "subscribe", "payload": { "query": mutation } }),
    )
    .await;
    assert_eq!(next(&mut socket).await, Err(4403));
    let keys = app
        .ok(
            &key,
            "{ viewer { account { apiKeys { name } } } }",
            json!({}),
        )
        .await;
    assert!(!keys.to_string().contains("sneaky"), "{keys}");
}

#[tokio::test]
async fn messages_over_the_body_limit_end_the_socket() {
    let app = TestApp::spawn_with(|c| c.http.body_limit_bytes = 64 * 1024).await;
    let mut socket = open(&app).await;
    let pad = "x".repeat(200 * 1024);
    send(
        &mut socket,
        json!({ "type": "ping", "payload": { "pad": pad } }),
    )
    .await;
    let answer = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("an answer within 5 s");
    match answer {
        Some(Ok(Message::Close(frame))) => {
            assert_eq!(
                frame.map(|f| u16::from(f.code)),
                Some(1009),
                "message too big"
            );
        }
        Some(Ok(Message::Text(text))) => panic!("answered a message over the limit: {:.80}", text),
        _ => {} // the server dropped the connection
    }
}

/// A socket offering `protocols`, or none; the handshake's answer status.
async fn handshake(app: &TestApp, protocols: Option<&'static str>) -> Result<Socket, u16> {
    let mut request = app.ws_url().into_client_request().unwrap();
    if let Some(protocols) = protocols {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(protocols),
        );
    }
    match connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("handshake failed: {other}"),
    }
}

#[tokio::test]
async fn only_graphql_transport_ws_is_spoken() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    assert_eq!(handshake(&app, Some("graphql-ws")).await.err(), Some(400));
    for offer in [Some("graphql-ws, graphql-transport-ws"), None] {
        let mut socket = handshake(&app, offer).await.expect("upgraded");
        init(&mut socket, &key).await;
    }
}

#[tokio::test]
async fn messages_outside_the_protocol_close_with_4400() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    for message in [
        // The legacy protocol's names for subscribe and complete.
        json!({ "id": "1", "type": "start", "payload": { "query": "{ __typename }" } }),
        json!({ "id": "1", "type": "stop" }),
        json!({ "type": "subscribe", "payload": { "query": "{ __typename }" } }),
        json!({ "id": "1", "type": "subscribe", "payload": { "query": 5 } }),
    ] {
        let mut socket = open(&app).await;
        init(&mut socket, &key).await;
        send(&mut socket, message.clone()).await;
        assert_eq!(next(&mut socket).await, Err(4400), "{message}");
    }
    let mut socket = open(&app).await;
    socket
        .send(Message::Binary(b"{}".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(next(&mut socket).await, Err(4400), "binary");
}

#[tokio::test]
async fn complete_is_sent_only_for_subscriptions_the_server_ended() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    let mut socket = open(&app).await;
    init(&mut socket, &key).await;
    let events = "subscription { events { type } }";
    // Completed by the client: no `complete` back, and the id is free again.
    send(
        &mut socket,
        json!({ "id": "e", "type": "subscribe", "payload": { "query": events } }),
    )
    .await;
    send(&mut socket, json!({ "id": "e", "type": "complete" })).await;
    send(
        &mut socket,
        json!({ "id": "e", "type": "subscribe", "payload": { "query": events } }),
    )
    .await;
    // Failed before it started: `error`, and no `complete` after it.
    send(
        &mut socket,
        json!({ "id": "bad", "type": "subscribe", "payload": { "query": "{ nope }" } }),
    )
    .await;
    let error = next(&mut socket).await.unwrap();
    assert_eq!(
        (error["type"].as_str(), error["id"].as_str()),
        (Some("error"), Some("bad"))
    );
    send(&mut socket, json!({ "type": "ping" })).await;
    assert_eq!(next(&mut socket).await.unwrap(), json!({ "type": "pong" }));
    // Ended by the server: `complete`.
    send(
        &mut socket,
        json!({ "id": "q", "type": "subscribe", "payload": { "query": "{ __typename }" } }),
    )
    .await;
    assert_eq!(next(&mut socket).await.unwrap()["type"], "next");
    assert_eq!(
        next(&mut socket).await.unwrap(),
        json!({ "id": "q", "type": "complete" })
    );
}

#[tokio::test]
async fn a_socket_holds_at_most_200_subscriptions() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    let mut socket = open(&app).await;
    init(&mut socket, &key).await;
    let events = "subscription { events { type } }";
    for id in 0..200 {
        send(
            &mut socket,
            json!({ "id": id.to_string(), "type": "subscribe", "payload": { "query": events } }),
        )
        .await;
    }
    send(
        &mut socket,
        json!({ "id": "one more", "type": "subscribe", "payload": { "query": events } }),
    )
    .await;
    let refusal = next(&mut socket).await.unwrap();
    assert_eq!(refusal["type"], "error");
    assert_eq!(refusal["id"], "one more");
    assert_eq!(
        refusal["payload"][0]["extensions"]["code"],
        "BAD_USER_INPUT"
    );
    // Completing one makes room for another.
    send(&mut socket, json!({ "id": "0", "type": "complete" })).await;
    send(
        &mut socket,
        json!({ "id": "one more", "type": "subscribe", "payload": { "query": events } }),
    )
    .await;
    send(&mut socket, json!({ "type": "ping" })).await;
    assert_eq!(next(&mut socket).await.unwrap(), json!({ "type": "pong" }));
}
