//! GraphQL over WebSocket (`graphql-transport-ws`), on async-graphql-axum's `GraphQLWebSocket`.
//!
//! The crate speaks the protocol: it parses the client's messages, runs `connection_init`
//! through [`Socket::connection_init`], acknowledges, runs every `subscribe` and sends `next`,
//! `complete` and `pong`, and closes a second `connection_init` with 4429. Three small parts
//! around it do what it cannot (docs/edge.md says why):
//!
//! - the guard, between the socket and the crate: close codes 4400 (a message that is not
//!   graphql-transport-ws, or an id over 128 characters), 4401 (subscribe before the
//!   acknowledgement), 4403 (the token was revoked), 4408 (no `connection_init` in time) and
//!   4409 (a subscription id already in use), the cap on subscriptions per socket, the
//!   server's pings, and closing on shutdown;
//! - the executor the crate runs operations with: the caller and its DataLoaders, error codes,
//!   and `error` (not `next`) for a subscription that fails before it starts;
//! - the writer, between the crate and the socket: the protocol's close codes where the crate
//!   has others (4403 for a refused token, 4400 for a malformed message), `complete` only
//!   for a subscription that ended by itself, and dropping a client that does not read (4413).
//!
//! A token holds at most `ws_max_sockets_per_token` sockets in this process (the next is
//! closed with 4429 at `connection_init`), each in an [`auth::sockets::Slot`]. Revoking an API
//! key or replacing a connection token closes its sockets (4403) and with them every
//! subscription they carried: at once in the revoking process, within 2 s in the others
//! ([`auth::sockets`]). The token is also checked again before every `subscribe` and on
//! every server ping. Messages are held to the HTTP body limit.
//! Every `subscribe` takes one request from its token's rate limit; one over it gets an
//! `error` (`RATE_LIMITED`) and the socket stays open.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use async_graphql::{Data, Executor, Response as GqlResponse, Value as GqlValue};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::{
    extract::{
        ConnectInfo, FromRequestParts, Request, State, WebSocketUpgrade,
        ws::{CloseFrame, Message, WebSocket},
    },
    http::{HeaderValue, StatusCode, header::SEC_WEBSOCKET_PROTOCOL, request::Parts},
    response::{IntoResponse, Response},
};
use futures_util::{
    SinkExt, Stream, StreamExt,
    stream::{self, BoxStream, SplitSink, SplitStream},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::{CancellationToken, PollSender};

use crate::{
    auth::{self, Principal, sockets::Slot},
    error::AppError,
    graphql::{Price, admission, normalize, price, request_error},
    http::{AppState, with_context},
};

pub const PROTOCOL: &str = "graphql-transport-ws";
/// Subscriptions one socket may hold at once.
const MAX_SUBSCRIPTIONS: usize = 200;
/// Messages queued for a slow client before its subscriptions wait.
const OUTBOX: usize = 256;
/// The longest subscription id (in characters) a client may use.
const MAX_ID_CHARS: usize = 128;
/// The close code of a client that read nothing for `ws_send_timeout_secs`.
const SLOW_READER: u16 = 4413;
/// How long the close frame of a client that does not read may take before the socket drops.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

pub async fn upgrade(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    // The TCP peer, whose failed `connection_init`s count against one bucket, as over HTTP.
    let address = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
    if !origin_allowed(&parts, &state.config.http.cors_allowed_origins) {
        let message =
            "the page's origin may not open WebSockets here (MILLWRIGHT_CORS_ALLOWED_ORIGINS)";
        return (StatusCode::FORBIDDEN, message).into_response();
    }
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let Some(protocol) = graphql_transport_ws(&mut parts).await else {
        let message = "the WebSocket subprotocol served here is graphql-transport-ws";
        return (StatusCode::BAD_REQUEST, message).into_response();
    };
    // The default 128 KiB read buffer is zero-filled and stays resident on every socket, while
    // graphql-transport-ws messages are small: 10,000 sockets took 1.5 GB with it, 276 MB with 4 KiB.
    // Messages are held to the HTTP body limit, before and after `connection_init`.
    let limit = state.config.http.body_limit_bytes;
    ws.protocols([PROTOCOL])
        .read_buffer_size(4 * 1024)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| serve(state, socket, protocol, address))
}

/// Whether a browser page may open a socket here: with no allowed origins configured, any;
/// otherwise one of those, or a page of this server itself (its `Origin` names the `Host` it
/// asks, as the built-in UI's does). Clients other than browsers send no `Origin`.
fn origin_allowed(parts: &Parts, allowed: &[String]) -> bool {
    let Some(origin) = parts.headers.get(axum::http::header::ORIGIN) else {
        return true;
    };
    if allowed.is_empty() {
        return true;
    }
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if allowed.iter().any(|a| a == origin) {
        return true;
    }
    let host = parts
        .headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok());
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    host.is_some_and(|host| authority == Some(host))
}

/// The crate's handle for graphql-transport-ws, when the client offers it (or offers nothing,
/// as some clients do). The crate would take the first protocol it knows in the client's
/// order, the legacy `graphql-ws` included; we speak only the current one.
async fn graphql_transport_ws(parts: &mut Parts) -> Option<GraphQLProtocol> {
    let offered = parts
        .headers
        .get(SEC_WEBSOCKET_PROTOCOL)
        .map(|v| v.to_str().unwrap_or_default());
    let ours = |offer: &str| {
        offer
            .split(',')
            .any(|p| p.trim().eq_ignore_ascii_case(PROTOCOL))
    };
    if !offered.is_none_or(ours) {
        return None;
    }
    parts
        .headers
        .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(PROTOCOL));
    GraphQLProtocol::from_request_parts(parts, &()).await.ok()
}

async fn serve(
    state: Arc<AppState>,
    socket: WebSocket,
    protocol: GraphQLProtocol,
    address: IpAddr,
) {
    let (sink, stream) = socket.split();
    let (out, outbox) = mpsc::channel(OUTBOX);
    let subscriptions = Arc::new(Mutex::new(Subscriptions::default()));
    let send_timeout = Duration::from_secs(state.config.http.ws_send_timeout_secs);
    let socket = Arc::new(Socket {
        state,
        address,
        out: out.clone(),
        caller: OnceLock::new(),
        revoked: CancellationToken::new(),
        subscriptions: subscriptions.clone(),
    });
    let init = socket.clone();
    // Every sender of the outbox lives inside this future: when it ends, the writer ends.
    // The guard is boxed: the crate's `serve` keeps its argument and the stream made of it
    // both in its future, so inline it would take its space twice on every socket.
    let graphql = GraphQLWebSocket::new_with_pair(
        PollSender::new(out),
        guard(socket.clone(), stream).boxed(),
        SocketExecutor(socket),
        protocol,
    )
    .on_connection_init(move |payload| init.connection_init(payload))
    .on_ping(|_, payload| async move { Ok(payload) })
    .serve();
    tokio::join!(graphql, write(sink, outbox, subscriptions, send_timeout));
}

/// What the guard, the executor and the connection hook of one socket share.
struct Socket {
    state: Arc<AppState>,
    /// The client's address, for the limit on failed authentications.
    address: IpAddr,
    /// Our own messages to the client, in order with the crate's.
    out: mpsc::Sender<Message>,
    /// Set once `connection_init` authenticated.
    caller: OnceLock<Caller>,
    /// Fires when the caller's token is revoked (in this process or another).
    revoked: CancellationToken,
    subscriptions: Arc<Mutex<Subscriptions>>,
}

struct Caller {
    principal: Principal,
    /// The `authorization` value of `connection_init`, checked again as the socket lives.
    authorization: String,
    /// The socket's place among its token's; freed when the socket ends.
    _slot: Slot,
}

#[derive(Default)]
struct Subscriptions {
    /// Running subscriptions by id, with the generation that tells a reused id apart.
    running: HashMap<String, u64>,
    generation: u64,
    /// The `subscribe` the guard just passed to the crate, which runs it at once; the
    /// executor takes it to learn the subscription's id.
    handed: Option<(String, u64)>,
    /// Subscriptions that ended by themselves: only their `complete` goes out.
    ended: HashSet<String>,
}

impl Socket {
    async fn connection_init(self: Arc<Self>, payload: Value) -> async_graphql::Result<Data> {
        let authorization = payload
            .get("authorization")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let state = &self.state;
        let revocations = state.auth_cache.revocations();
        let principal = match authorization.as_deref() {
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
        let (code, reason) = match (principal, authorization) {
            (Ok(principal), Some(authorization)) if principal != Principal::Anonymous => {
                match self.take_slot(&principal, &authorization) {
                    Some(slot) => {
                        let caller = Caller {
                            principal,
                            authorization,
                            _slot: slot,
                        };
                        let _ = self.caller.set(caller);
                        if !self.revoked_meanwhile(revocations).await {
                            return Ok(Data::default());
                        }
                        (4403, REVOKED)
                    }
                    None => (4429, "too many sockets for this token"),
                }
            }
            (Err(Some(AppError::Internal(err))), _) => {
                tracing::error!(error = %format!("{err:#}"), "websocket authentication failed");
                (1011, "internal error")
            }
            _ => match state.limits.admit_failed_auth(self.address) {
                Ok(()) => (4403, "Forbidden"),
                Err(wait) => {
                    let reason = format!(
                        "too many failed authentications from this address; retry in {wait} s"
                    );
                    self.close(4429, reason.clone()).await;
                    return Err(reason.into());
                }
            },
        };
        // The crate closes a refused `connection_init` with 1002; the protocol says 4403.
        self.close(code, reason.to_owned()).await;
        Err(reason.into())
    }

    /// A place among the sockets of the caller's token, unless it has all it may have.
    fn take_slot(&self, principal: &Principal, authorization: &str) -> Option<Slot> {
        let hash = auth::token_hash(authorization)?;
        let max = self.state.config.http.ws_max_sockets_per_token;
        let sockets = self.state.db.notifier().sockets();
        sockets.open(hash, principal, max, self.revoked.clone())
    }

    /// Whether the token was revoked while `connection_init` authenticated it: a revocation
    /// made after the lookup and before the socket took its slot found no socket to close.
    /// `seen` is the cache's revocation count before the lookup; only if it moved is the token
    /// looked up again (the revocation cleared it from the cache).
    async fn revoked_meanwhile(&self, seen: u64) -> bool {
        self.state.auth_cache.revocations() != seen
            && matches!(Box::pin(self.still_authorized()).await, Step::Close(..))
    }

    async fn send(&self, text: String) -> Step {
        match self.out.send(Message::Text(text.into())).await {
            Ok(()) => Step::Skip,
            Err(_) => Step::End,
        }
    }

    async fn close(&self, code: u16, reason: String) {
        let frame = CloseFrame {
            code,
            reason: truncate(reason).into(),
        };
        let _ = self.out.send(Message::Close(Some(frame))).await;
    }

    /// Whether the socket's token still authenticates as it did at `connection_init`
    /// (an unacknowledged socket has nothing to re-check).
    /// Callers box it, so that an idle session does not carry its space.
    async fn still_authorized(&self) -> Step {
        let Some(Caller {
            principal,
            authorization,
            ..
        }) = self.caller.get()
        else {
            return Step::Skip;
        };
        let state = &self.state;
        let now = auth::authenticate(
            &state.db,
            &state.auth_cache,
            state.config.security.admin_token.as_ref(),
            Some(authorization),
        )
        .await;
        verdict(now, principal)
    }
}

/// What the guard does with what it just saw.
enum Step {
    /// Hand this message to the crate.
    Pass(Message),
    /// Nothing for the crate; wait for the next.
    Skip,
    /// Close the socket with this code and reason.
    Close(u16, String),
    /// The socket is gone.
    End,
}

/// The client's messages as the crate gets them, after the checks the crate does not make.
fn guard(
    socket: Arc<Socket>,
    stream: SplitStream<WebSocket>,
) -> impl Stream<Item = Result<Message, axum::Error>> + Send {
    let config = &socket.state.config;
    let init_deadline = Instant::now() + Duration::from_secs(config.http.ws_init_timeout_secs);
    let ping_every = Duration::from_secs(config.http.ws_ping_interval_secs);
    let ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    let guard = Guard {
        socket,
        stream,
        init_deadline,
        ping,
    };
    stream::unfold(guard, |mut guard| async move {
        let message = guard.next().await?;
        Some((Ok(message), guard))
    })
}

struct Guard {
    socket: Arc<Socket>,
    stream: SplitStream<WebSocket>,
    init_deadline: Instant,
    ping: tokio::time::Interval,
}

/// The part of a client message the guard reads.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
}

impl Guard {
    /// The next message for the crate; `None` ends the session.
    async fn next(&mut self) -> Option<Message> {
        loop {
            let socket = self.socket.clone();
            // A portal session's socket closes the moment its session expires.
            let expiry = socket
                .caller
                .get()
                .and_then(|caller| caller.principal.portal())
                .map(|grant| {
                    let left = (grant.expires_at - chrono::Utc::now())
                        .to_std()
                        .unwrap_or_default();
                    Instant::now() + left
                });
            let step = tokio::select! {
                message = self.stream.next() => match message {
                    Some(Ok(message)) => self.inspect(message).await,
                    _ => Step::End,
                },
                _ = tokio::time::sleep_until(self.init_deadline), if socket.caller.get().is_none() => {
                    Step::Close(4408, "Connection initialisation timeout".into())
                }
                _ = self.ping.tick() => match Box::pin(socket.still_authorized()).await {
                    Step::Skip => socket.send(json!({"type": "ping"}).to_string()).await,
                    step => step,
                },
                _ = socket.revoked.cancelled() => Step::Close(4403, REVOKED.into()),
                _ = sleep_until_some(expiry) => Step::Close(4403, EXPIRED.into()),
                _ = socket.state.shutdown.cancelled() => Step::Close(1001, "server shutting down".into()),
                _ = socket.out.closed() => Step::End,
            };
            match step {
                Step::Pass(message) => return Some(message),
                Step::Skip => {}
                Step::Close(code, reason) => {
                    socket.close(code, reason).await;
                    return None;
                }
                Step::End => return None,
            }
        }
    }

    async fn inspect(&mut self, message: Message) -> Step {
        let text = match message {
            Message::Text(text) => text,
            Message::Close(_) => return Step::Close(1000, "bye".into()),
            Message::Ping(_) | Message::Pong(_) => return Step::Skip,
            Message::Binary(_) => {
                return Step::Close(4400, "binary messages are not supported".into());
            }
        };
        let envelope = match serde_json::from_str::<Envelope>(text.as_str()) {
            Ok(envelope) => envelope,
            Err(err) => return Step::Close(4400, format!("invalid message: {err}")),
        };
        if let Some(id) = &envelope.id
            && id.chars().count() > MAX_ID_CHARS
        {
            let reason = format!("invalid message: an id is at most {MAX_ID_CHARS} characters");
            return Step::Close(4400, reason);
        }
        match (envelope.kind.as_str(), envelope.id) {
            ("subscribe", Some(id)) => match self.admit(&id).await {
                None => Step::Pass(Message::Text(text)),
                Some(step) => step,
            },
            ("connection_init" | "ping" | "pong", _) | ("complete", Some(_)) => {
                Step::Pass(Message::Text(text))
            }
            (kind, _) => Step::Close(4400, format!("invalid message: type {kind:?}")),
        }
    }

    /// `None` when a `subscribe` may run: after the acknowledgement, under a token that still
    /// holds, with an id not in use, and within the cap; otherwise what to do instead.
    async fn admit(&mut self, id: &str) -> Option<Step> {
        let socket = &self.socket;
        if socket.caller.get().is_none() {
            return Some(Step::Close(4401, "Unauthorized".into()));
        }
        if let Step::Close(code, reason) = Box::pin(socket.still_authorized()).await {
            return Some(Step::Close(code, reason));
        }
        if let Some(refusal) = rate_limited(socket, id) {
            return Some(socket.send(refusal).await);
        }
        let full = {
            let mut subscriptions = lock(&socket.subscriptions);
            if subscriptions.running.contains_key(id) {
                let reason = format!("Subscriber for {id} already exists");
                return Some(Step::Close(4409, reason));
            }
            let full = subscriptions.running.len() >= MAX_SUBSCRIPTIONS;
            if !full {
                subscriptions.generation += 1;
                let generation = subscriptions.generation;
                subscriptions.running.insert(id.to_owned(), generation);
                subscriptions.handed = Some((id.to_owned(), generation));
            }
            full
        };
        if !full {
            return None;
        }
        let errors = json!([{"message": format!("at most {MAX_SUBSCRIPTIONS} subscriptions per socket"),
                             "extensions": {"code": "BAD_USER_INPUT"}}]);
        let refusal = json!({"type": "error", "id": id, "payload": errors});
        Some(socket.send(refusal.to_string()).await)
    }
}

/// The `error` message for a `subscribe` over its token's rate limit: the operation does
/// not run, the socket stays open.
fn rate_limited(socket: &Socket, id: &str) -> Option<String> {
    let principal = socket.caller.get().map(|c| &c.principal)?;
    let Some(Err(refused)) = socket.state.limits.admit(principal, 1) else {
        return None;
    };
    let errors = [request_error(refused.error())];
    Some(json!({"type": "error", "id": id, "payload": errors}).to_string())
}

/// Runs the crate's operations as the socket's caller.
#[derive(Clone)]
struct SocketExecutor(Arc<Socket>);

impl Executor for SocketExecutor {
    async fn execute(&self, request: async_graphql::Request) -> GqlResponse {
        let mut results = self.results(request);
        results.next().await.unwrap_or_default()
    }

    fn execute_stream(
        &self,
        request: async_graphql::Request,
        _session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, GqlResponse> {
        let socket = self.0.clone();
        let Some((id, generation)) = lock(&socket.subscriptions).handed.take() else {
            // Every `subscribe` passes the guard, which hands its id over first.
            tracing::error!("websocket subscription without an id");
            return stream::empty().boxed();
        };
        let results = self.results(request);
        let running = Running {
            subscriptions: socket.subscriptions.clone(),
            id,
            generation,
        };
        subscription(socket, running, results).boxed()
    }
}

impl SocketExecutor {
    /// An operation's results as the socket's caller, priced first (a refusal is the only
    /// result), each with its cost; a query or mutation held to the request timeout.
    fn results(&self, mut request: async_graphql::Request) -> BoxStream<'static, GqlResponse> {
        let socket = &self.0;
        let price = price(&mut request, &socket.state.config.http);
        if let Some(refusal) = price.refusal() {
            return stream::once(async move { refusal }).boxed();
        }
        if let Err(refusal) = admission::check(&mut request) {
            let refused = stream::once(async move { GqlResponse::from_errors(vec![refusal]) });
            return reported(refused.boxed(), price);
        }
        let principal = caller_principal(socket);
        let request = with_context(&socket.state, request, principal);
        let results = socket.state.schema.execute_stream(request);
        let results = if price.is_subscription() {
            // Subscriptions hold their setup and each event's lookups to the timeout
            // themselves (src/graphql/event.rs): a stream may wait for events for hours.
            results
        } else {
            in_time(results, socket.state.config.request_timeout())
        };
        reported(results, price)
    }
}

fn reported(
    results: BoxStream<'static, GqlResponse>,
    price: Price,
) -> BoxStream<'static, GqlResponse> {
    results.map(move |response| price.report(response)).boxed()
}

/// A query's or mutation's result, or `TIMEOUT` once it has taken longer than `limit`.
fn in_time(
    results: BoxStream<'static, GqlResponse>,
    limit: Duration,
) -> BoxStream<'static, GqlResponse> {
    stream::unfold(Some(results), move |results| async move {
        let mut results = results?;
        match tokio::time::timeout(limit, results.next()).await {
            Ok(Some(response)) => Some((response, Some(results))),
            Ok(None) => None,
            Err(_) => {
                let error = request_error(AppError::timeout(limit));
                Some((GqlResponse::from_errors(vec![error]), None))
            }
        }
    })
    .boxed()
}

fn caller_principal(socket: &Socket) -> Principal {
    socket
        .caller
        .get()
        .map_or(Principal::Anonymous, |c| c.principal.clone())
}

/// One subscription's results with codes on their errors. A failure before any result is
/// sent as `error` and ends it; the crate would send it as `next`.
fn subscription(
    socket: Arc<Socket>,
    running: Running,
    results: impl Stream<Item = GqlResponse> + Send + 'static,
) -> impl Stream<Item = GqlResponse> + Send + 'static {
    let results = Box::pin(results);
    stream::unfold(Some((socket, running, results, true)), |state| async move {
        let (socket, running, mut results, first) = state?;
        let Some(response) = results.next().await else {
            running.ended();
            return None;
        };
        let response = normalize(response);
        if first && response.data == GqlValue::Null && !response.errors.is_empty() {
            let message = json!({"type": "error", "id": running.id, "payload": response.errors});
            let _ = socket
                .out
                .send(Message::Text(message.to_string().into()))
                .await;
            return None;
        }
        Some((response, Some((socket, running, results, false))))
    })
}

/// A running subscription's place in [`Subscriptions`]; dropped, it frees its id.
struct Running {
    subscriptions: Arc<Mutex<Subscriptions>>,
    id: String,
    generation: u64,
}

impl Running {
    fn ended(&self) {
        lock(&self.subscriptions).ended.insert(self.id.clone());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut subscriptions = lock(&self.subscriptions);
        // Unless the id was already reused.
        if subscriptions.running.get(&self.id) == Some(&self.generation) {
            subscriptions.running.remove(&self.id);
        }
    }
}

fn lock(subscriptions: &Mutex<Subscriptions>) -> std::sync::MutexGuard<'_, Subscriptions> {
    subscriptions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sends the crate's messages and ours to the client, until the first close frame; drops a
/// client that takes more than `send_timeout` to take one message (it reads nothing, its
/// buffers are full), so that its messages do not pile up.
async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut outbox: mpsc::Receiver<Message>,
    subscriptions: Arc<Mutex<Subscriptions>>,
    send_timeout: Duration,
) {
    while let Some(message) = outbox.recv().await {
        let message = match message {
            Message::Text(text) if !complete_goes_out(&text, &subscriptions) => continue,
            Message::Close(Some(frame)) => Message::Close(Some(CloseFrame {
                // The crate's code for a message it cannot parse; the protocol's is 4400.
                code: if frame.code == 1002 { 4400 } else { frame.code },
                reason: truncate(frame.reason.to_string()).into(),
            })),
            other => other,
        };
        let closing = matches!(message, Message::Close(_));
        match tokio::time::timeout(send_timeout, sink.send(message)).await {
            Ok(Ok(())) if !closing => {}
            Ok(_) => break,
            Err(_) => {
                tracing::info!(
                    timeout_secs = send_timeout.as_secs(),
                    "dropping a WebSocket client that does not read"
                );
                let frame = CloseFrame {
                    code: SLOW_READER,
                    reason: "the client does not read its messages".into(),
                };
                let close = sink.send(Message::Close(Some(frame)));
                let _ = tokio::time::timeout(CLOSE_GRACE, close).await;
                break;
            }
        }
    }
}

/// The crate also sends `complete` after a subscription the client completed and after one
/// that failed with `error`; the protocol sends it only when the server ended it.
fn complete_goes_out(text: &str, subscriptions: &Mutex<Subscriptions>) -> bool {
    if !text.starts_with(r#"{"type":"complete""#) {
        return true;
    }
    let Ok(Envelope { id: Some(id), .. }) = serde_json::from_str::<Envelope>(text) else {
        return true;
    };
    lock(subscriptions).ended.remove(&id)
}

/// What a re-check of the socket's token means for it.
fn verdict(now: Result<Principal, AppError>, was: &Principal) -> Step {
    match now {
        Ok(principal) if &principal == was => Step::Skip,
        // A database hiccup is not a revocation: the next check decides.
        Err(AppError::Internal(err)) => {
            tracing::warn!(error = %format!("{err:#}"), "websocket re-authentication failed");
            Step::Skip
        }
        _ => Step::Close(4403, REVOKED.into()),
    }
}

const REVOKED: &str = "Forbidden: the token was revoked";
const EXPIRED: &str = "Forbidden: the portal session expired";

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
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
