//! GraphQL over WebSocket with the `graphql-transport-ws` protocol.
//!
//! Close codes: 4400 invalid message, 4401 subscribe before the acknowledgement, 4403 missing
//! or bad token in `connection_init`, 4408 no `connection_init` in time, 4409 a subscription
//! id already in use, 4429 a second `connection_init`. The server also pings idle sockets.
//!
//! The token given in `connection_init` is checked again before every `subscribe` and on
//! every ping: a revoked API key or a replaced connection token closes the socket (4403)
//! and with it every subscription it carried.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_graphql::Request as GqlRequest;
use axum::{
    extract::{
        State, WebSocketUpgrade,
        ws::{CloseFrame, Message, WebSocket},
    },
    response::Response,
};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{sync::mpsc, task::AbortHandle, time::Instant};

use crate::{
    auth::{self, Principal},
    graphql::normalize,
    http::AppState,
};

pub const PROTOCOL: &str = "graphql-transport-ws";
/// Subscriptions one socket may hold at once.
const MAX_SUBSCRIPTIONS: usize = 200;
/// Messages queued for a slow client before its subscriptions wait.
const OUTBOX: usize = 256;

pub async fn upgrade(State(state): State<Arc<AppState>>, ws: WebSocketUpgrade) -> Response {
    // The default 128 KiB read buffer is zero-filled and stays resident on every socket, while
    // graphql-transport-ws messages are small: 10,000 sockets took 1.5 GB with it, 276 MB with 4 KiB.
    // Messages are held to the HTTP body limit, before and after `connection_init`.
    let limit = state.config.http.body_limit_bytes;
    ws.protocols([PROTOCOL])
        .read_buffer_size(4 * 1024)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| Session::new(state, socket).run())
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    ConnectionInit {
        #[serde(default)]
        payload: Option<Value>,
    },
    Ping {
        #[serde(default)]
        payload: Option<Value>,
    },
    Pong {},
    Subscribe {
        id: String,
        payload: Box<GqlRequest>,
    },
    Complete {
        id: String,
    },
}

/// What a subscription task hands to the socket loop.
struct Outgoing {
    text: String,
    /// Set on the last message of a subscription: (id, generation).
    finished: Option<(String, u64)>,
}

enum Flow {
    Continue,
    Close(u16, String),
}

struct Session {
    state: Arc<AppState>,
    socket: WebSocket,
    principal: Option<Principal>,
    /// The `authorization` value of `connection_init`, checked again as the socket lives.
    authorization: Option<String>,
    subscriptions: HashMap<String, (u64, AbortHandle)>,
    generation: u64,
    tx: mpsc::Sender<Outgoing>,
    rx: mpsc::Receiver<Outgoing>,
}

impl Session {
    fn new(state: Arc<AppState>, socket: WebSocket) -> Self {
        let (tx, rx) = mpsc::channel(OUTBOX);
        Self {
            state,
            socket,
            principal: None,
            authorization: None,
            subscriptions: HashMap::new(),
            generation: 0,
            tx,
            rx,
        }
    }

    async fn run(mut self) {
        let init_deadline =
            Instant::now() + Duration::from_secs(self.state.config.http.ws_init_timeout_secs);
        let ping_every = Duration::from_secs(self.state.config.http.ws_ping_interval_secs);
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        let shutdown = self.state.shutdown.clone();
        let flow = loop {
            let flow = tokio::select! {
                message = self.socket.recv() => match message {
                    Some(Ok(message)) => self.on_message(message).await,
                    _ => break Flow::Continue,
                },
                Some(out) = self.rx.recv() => self.on_outgoing(out).await,
                _ = tokio::time::sleep_until(init_deadline), if self.principal.is_none() => {
                    Flow::Close(4408, "Connection initialisation timeout".into())
                }
                _ = ping.tick() => match Box::pin(self.still_authorized()).await {
                    Flow::Continue => self.send_json(json!({"type": "ping"})).await,
                    close => close,
                },
                _ = shutdown.cancelled() => Flow::Close(1001, "server shutting down".into()),
            };
            if let Flow::Close(..) = flow {
                break flow;
            }
        };
        for (_, (_, handle)) in self.subscriptions.drain() {
            handle.abort();
        }
        if let Flow::Close(code, reason) = flow {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ = self.socket.send(Message::Close(Some(frame))).await;
        }
    }

    async fn send_json(&mut self, value: Value) -> Flow {
        self.send_text(value.to_string()).await
    }

    async fn send_text(&mut self, text: String) -> Flow {
        match self.socket.send(Message::Text(text.into())).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Close(1011, "send failed".into()),
        }
    }

    async fn on_outgoing(&mut self, out: Outgoing) -> Flow {
        // A finished subscription frees its id, unless the id was already reused.
        if let Some((id, generation)) = out.finished
            && self
                .subscriptions
                .get(&id)
                .is_some_and(|(g, _)| *g == generation)
        {
            self.subscriptions.remove(&id);
        }
        self.send_text(out.text).await
    }

    async fn on_message(&mut self, message: Message) -> Flow {
        let text = match message {
            Message::Text(text) => text,
            Message::Close(_) => return Flow::Close(1000, "bye".into()),
            Message::Ping(_) | Message::Pong(_) => return Flow::Continue,
            Message::Binary(_) => {
                return Flow::Close(4400, "binary messages are not supported".into());
            }
        };
        let message = match serde_json::from_str::<ClientMessage>(text.as_str()) {
            Ok(message) => message,
            Err(err) => return Flow::Close(4400, truncate(format!("invalid message: {err}"))),
        };
        match message {
            ClientMessage::ConnectionInit { payload } => self.on_init(payload).await,
            ClientMessage::Ping { payload } => {
                let mut pong = json!({"type": "pong"});
                if let Some(payload) = payload {
                    pong["payload"] = payload;
                }
                self.send_json(pong).await
            }
            ClientMessage::Pong {} => Flow::Continue,
            ClientMessage::Subscribe { id, payload } => self.on_subscribe(id, *payload).await,
            ClientMessage::Complete { id } => {
                if let Some((_, handle)) = self.subscriptions.remove(&id) {
                    handle.abort();
                }
                Flow::Continue
            }
        }
    }

    async fn on_init(&mut self, payload: Option<Value>) -> Flow {
        if self.principal.is_some() {
            return Flow::Close(4429, "Too many initialisation requests".into());
        }
        let authorization = payload
            .as_ref()
            .and_then(|p| p.get("authorization"))
            .and_then(Value::as_str);
        let state = &self.state;
        let principal = match authorization {
            None => Err(None),
            // Boxed, as the re-checks: held inline, a token lookup's future makes every idle
            // session's future larger (the bench measured 0.7 KB a socket for each).
            Some(header) => Box::pin(auth::authenticate(
                &state.db,
                &state.auth_cache,
                state.config.security.admin_token.as_ref(),
                Some(header),
            ))
            .await
            .map_err(Some),
        };
        match principal {
            Ok(principal) if principal != Principal::Anonymous => {
                self.principal = Some(principal);
                self.authorization = authorization.map(str::to_owned);
                self.send_json(json!({"type": "connection_ack"})).await
            }
            Err(Some(crate::error::AppError::Internal(err))) => {
                tracing::error!(error = %format!("{err:#}"), "websocket authentication failed");
                Flow::Close(1011, "internal error".into())
            }
            _ => Flow::Close(4403, "Forbidden".into()),
        }
    }

    /// Whether the socket's token still authenticates as it did at `connection_init`
    /// (the admin token and unacknowledged sockets have nothing to re-check).
    /// (The socket is not `Sync`: the check holds none of the session across its await.
    /// Callers box it, so that an idle session does not carry its space.)
    fn still_authorized(&self) -> impl Future<Output = Flow> + Send + 'static {
        let state = self.state.clone();
        let authorization = self.authorization.clone();
        let principal = self.principal.clone();
        async move {
            let Some(authorization) = authorization else {
                return Flow::Continue;
            };
            let now = auth::authenticate(
                &state.db,
                &state.auth_cache,
                state.config.security.admin_token.as_ref(),
                Some(&authorization),
            )
            .await;
            verdict(now, principal.as_ref())
        }
    }

    async fn on_subscribe(&mut self, id: String, request: GqlRequest) -> Flow {
        let Some(principal) = self.principal.clone() else {
            return Flow::Close(4401, "Unauthorized".into());
        };
        if let Flow::Close(code, reason) = Box::pin(self.still_authorized()).await {
            return Flow::Close(code, reason);
        }
        if self.subscriptions.contains_key(&id) {
            return Flow::Close(
                4409,
                truncate(format!("Subscriber for {id} already exists")),
            );
        }
        if self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            let errors = json!([{"message": format!("at most {MAX_SUBSCRIPTIONS} subscriptions per socket"),
                                 "extensions": {"code": "BAD_USER_INPUT"}}]);
            return self
                .send_json(json!({"type": "error", "id": id, "payload": errors}))
                .await;
        }
        self.generation += 1;
        let generation = self.generation;
        let request = crate::http::with_context(&self.state, request, principal);
        let stream = self.state.schema.execute_stream(request);
        let task = tokio::spawn(forward(stream, id.clone(), generation, self.tx.clone()));
        self.subscriptions
            .insert(id, (generation, task.abort_handle()));
        Flow::Continue
    }
}

/// Sends each result as `next`, a failure before any result as `error`, then `complete`.
async fn forward(
    stream: impl futures_util::Stream<Item = async_graphql::Response> + Send,
    id: String,
    generation: u64,
    tx: mpsc::Sender<Outgoing>,
) {
    let mut stream = std::pin::pin!(stream);
    let mut first = true;
    while let Some(response) = stream.next().await {
        let response = normalize(response);
        let failed_before_start =
            first && response.data == async_graphql::Value::Null && !response.errors.is_empty();
        if failed_before_start {
            let text = json!({"type": "error", "id": id, "payload": response.errors}).to_string();
            let _ = tx
                .send(Outgoing {
                    text,
                    finished: Some((id, generation)),
                })
                .await;
            return;
        }
        first = false;
        let text = json!({"type": "next", "id": id, "payload": response}).to_string();
        if tx
            .send(Outgoing {
                text,
                finished: None,
            })
            .await
            .is_err()
        {
            return;
        }
    }
    let text = json!({"type": "complete", "id": id}).to_string();
    let _ = tx
        .send(Outgoing {
            text,
            finished: Some((id, generation)),
        })
        .await;
}

/// What a re-check of the socket's token means for it.
fn verdict(now: Result<Principal, crate::error::AppError>, was: Option<&Principal>) -> Flow {
    match now {
        Ok(principal) if Some(&principal) == was => Flow::Continue,
        // A database hiccup is not a revocation: the next check decides.
        Err(crate::error::AppError::Internal(err)) => {
            tracing::warn!(error = %format!("{err:#}"), "websocket re-authentication failed");
            Flow::Continue
        }
        _ => Flow::Close(4403, "Forbidden: the token was revoked".into()),
    }
}

/// Close reasons are limited to 123 bytes by the WebSocket protocol.
fn truncate(mut reason: String) -> String {
    if reason.len() > 120 {
        let mut end = 120;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}
