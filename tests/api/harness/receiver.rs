//! Fake webhook receivers on loopback: one whose answers are scripted, one that is slow.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering::SeqCst},
    },
    time::Duration,
};

use axum::{
    Router, body::Bytes, extract::State, http::HeaderMap, response::IntoResponse, routing::post,
};
use serde_json::Value;

/// What the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: std::time::Instant,
}

/// An HTTP status and an optional `Retry-After` in seconds.
type Answer = (u16, Option<u64>);

/// A webhook receiver whose answers can be scripted: (status, Retry-After) per request, then 200.
#[derive(Clone, Default)]
pub struct Receiver {
    pub received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Answer>>>,
    pub url: String,
}

impl Receiver {
    pub async fn start(script: &[Answer]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut receiver = Receiver {
            url: format!("http://{}/hook", listener.local_addr().unwrap()),
            ..Default::default()
        };
        receiver.script = Arc::new(Mutex::new(script.iter().copied().collect()));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect()
    }

    /// How many requests arrived so far.
    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Waits (at most 15 s) until at least `count` requests have arrived; returns them all.
    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        let what = format!("{count} webhook requests");
        super::wait_for(Duration::from_secs(15), &what, async || {
            let got = self.received.lock().unwrap().clone();
            (got.len() >= count).then_some(got)
        })
        .await
    }
}

async fn receive(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    receiver.received.lock().unwrap().push(Received {
        headers,
        body,
        at: std::time::Instant::now(),
    });
    let next = receiver.script.lock().unwrap().pop_front();
    let (status, retry_after) = next.unwrap_or((200, None));
    let mut response = (axum::http::StatusCode::from_u16(status).unwrap(), "ok").into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", seconds.to_string().parse().unwrap());
    }
    response
}

/// A receiver that takes `delay` per request and remembers the most requests it had open
/// (a request the client gave up on counts as closed).
#[derive(Clone, Default)]
pub struct SlowReceiver {
    pub open: Arc<AtomicUsize>,
    pub most_open: Arc<AtomicUsize>,
    pub started: Arc<AtomicUsize>,
    pub done: Arc<AtomicUsize>,
}

/// One open request, counted until dropped.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

impl SlowReceiver {
    /// The receiver and its URL.
    pub async fn start(delay: Duration) -> (Self, String) {
        let receiver = SlowReceiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let state = receiver.clone();
        let app = Router::new().route(
            "/hook",
            post(move || {
                let state = state.clone();
                async move {
                    state.started.fetch_add(1, SeqCst);
                    let open = state.open.fetch_add(1, SeqCst) + 1;
                    let _open = Open(state.open.clone());
                    state.most_open.fetch_max(open, SeqCst);
                    // The delay is the fixture's point: a receiver slower than its caller.
                    tokio::time::sleep(delay).await;
                    state.done.fetch_add(1, SeqCst);
                    "ok"
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }
}
