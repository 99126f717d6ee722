//! The attacks of the abuse-resistance work, each sent to a real `millwright serve` process
//! whose memory is read from `/proc`: a nested-list bomb, 100,000 distinct operation names,
//! 2,000 sockets on one token, a 1 MB subscription id, NUL bytes in text. The server refuses
//! each one with its code, and its resident memory stays within a bound throughout.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt, stream};
use serde_json::{Value, json};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

use crate::harness::{ADMIN_TOKEN, ServerProcess, TestDb, metrics_at, operation_labels};

const OTHER: &str = "other";

/// How much the server's resident memory may grow over the whole attack. Before the limits,
/// the operation names alone added metrics series for each name, and every socket was kept. (Measured after them: about 2.5 MiB of growth, on both databases.)
const RSS_GROWTH_BOUND_KIB: u64 = 32 * 1024;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

struct Target {
    server: ServerProcess,
    http: reqwest::Client,
}

impl Target {
    async fn post(&self, token: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("http://{}/graphql", self.server.addr))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn socket(&self) -> Socket {
        let url = format!("ws://{}/graphql/ws", self.server.addr);
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("graphql-transport-ws"),
        );
        connect_async(request).await.expect("websocket handshake").0
    }

    fn rss(&self) -> u64 {
        rss_kib(self.server.child.id())
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends `connection_init`; the first answer: `connection_ack`, or the close code.
async fn init(socket: &mut Socket, key: &str) -> Result<(), u16> {
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {key}") } });
    socket
        .send(Message::Text(init.to_string().into()))
        .await
        .map_err(|_| 1006u16)?;
    closed_or_text(socket).await.map(|text| {
        assert!(text.contains("connection_ack"), "{text}");
    })
}

async fn closed_or_text(socket: &mut Socket) -> Result<String, u16> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("an answer within 30 s");
        match message {
            Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
            Some(Ok(Message::Close(frame))) => {
                return Err(frame.map_or(1005, |f| u16::from(f.code)));
            }
            Some(Ok(_)) => continue,
            _ => return Err(1006),
        }
    }
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("(none)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_attack_is_refused_and_memory_stays_bounded() {
    rlimit::increase_nofile_limit(16_384).expect("raise the open-files limit");
    let db = TestDb::new().await;
    let settings = [
        // The rate limit is not under test here: every attack must meet its own defence.
        ("MILLWRIGHT_API_REQUESTS_PER_SECOND", "1000000"),
        ("MILLWRIGHT_API_BURST", "1000000"),
        ("MILLWRIGHT_WORKERS", "false"),
    ];
    let target = Target {
        server: ServerProcess::start(&db.url, &settings),
        http: reqwest::Client::new(),
    };
    let (_, body) = target
        .post(
            ADMIN_TOKEN,
            json!({ "query": "mutation { createAccount(input: { name: \"Target\" }) { apiKey } }" }),
        )
        .await;
    let key = body["data"]["createAccount"]["apiKey"]
        .as_str()
        .expect("an API key")
        .to_owned();
    // Warm up what every request touches, then take the baseline.
    for _ in 0..200 {
        target
            .post(
                &key,
                json!({ "query": "query Warm { viewer { account { id } } }" }),
            )
            .await;
    }
    let baseline = target.rss();

    // 1. The nested-list bomb: a million nodes asked for within the old field-count limit.
    let bomb = "{ customers(first: 100) { nodes { connections(first: 100) { nodes { customer {
        connections(first: 100) { nodes { customer { connections(first: 100) { nodes { id } } } } } } } } } } }";
    let (_, body) = target.post(&key, json!({ "query": bomb })).await;
    assert_eq!(code(&body), "QUERY_TOO_COMPLEX", "{body}");
    let cost = &body["errors"][0]["extensions"]["cost"];
    assert!(
        cost["requested"].as_u64().unwrap() > cost["limit"].as_u64().unwrap(),
        "{body}"
    );
    assert!(body["data"].is_null(), "nothing of it ran: {body}");

    // 2. 100,000 distinct operation names, ten to a batch, sixteen batches at a time.
    let batches = (0..10_000).map(|b| {
        let operations: Vec<Value> = (0..10)
            .map(|i| json!({ "query": format!("query Op{b}x{i} {{ systems {{ key }} }}") }))
            .collect();
        Value::from(operations)
    });
    stream::iter(batches)
        .for_each_concurrent(16, |batch| {
            let (target, key) = (&target, &key);
            async move {
                let (status, _) = target.post(key, batch).await;
                assert_eq!(status, 200);
            }
        })
        .await;
    let names = operation_labels(&metrics_at(&target.http, &target.server.addr).await);
    assert!(
        names.len() <= 200 + 2,
        "{} operation labels: at most 200 names, `other` and `unauthenticated`",
        names.len()
    );
    assert!(names.contains(OTHER), "{names:?}");

    // 3. 2,000 sockets on one token: the first 50 are admitted, every other one gets 4429.
    let mut admitted = Vec::new();
    let mut refused = 0;
    for _ in 0..2_000 {
        let mut socket = target.socket().await;
        match init(&mut socket, &key).await {
            Ok(()) => admitted.push(socket),
            Err(4429) => refused += 1,
            Err(other) => panic!("closed with {other}"),
        }
    }
    assert_eq!((admitted.len(), refused), (50, 1_950));

    // 4. A 1 MB subscription id (within the 1 MiB message limit) closes its socket with 4400.
    let id = "i".repeat(1_000_000);
    let subscribe = json!({ "id": id, "type": "subscribe",
                            "payload": { "query": "subscription { events { cursor } }" } });
    let socket = admitted.first_mut().unwrap();
    socket
        .send(Message::Text(subscribe.to_string().into()))
        .await
        .unwrap();
    assert_eq!(closed_or_text(socket).await, Err(4400));

    // 5. NUL bytes in text, as a variable and as a literal.
    let create = "mutation($name: String!) { createCustomer(input: { name: $name }) { id } }";
    let (_, body) = target
        .post(
            &key,
            json!({ "query": create, "variables": { "name": "a\u{0}b" } }),
        )
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    let (_, body) = target
        .post(
            &key,
            json!({ "query": "{ customers(search: \"\\u0000\") { nodes { id } } }" }),
        )
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");

    let grown = target.rss().saturating_sub(baseline);
    assert!(
        grown < RSS_GROWTH_BOUND_KIB,
        "resident memory grew by {grown} KiB over the attacks (bound {RSS_GROWTH_BOUND_KIB} KiB)"
    );
    drop(admitted);
}
