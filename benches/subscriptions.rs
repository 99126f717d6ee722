//! Load benchmark for live event subscriptions over WebSocket (graphql-transport-ws).
//!
//! Starts the release binary (`millwright serve`) as a child process on a fresh SQLite
//! database, creates 100 accounts over GraphQL, and opens 10,000 WebSockets: 100 per account,
//! each with `subscription { events { cursor type occurredAt } }` under its account's key
//! (200 handshakes at a time). One second after the last subscribe, it commits 100 events per
//! second for 30 seconds: `grantCredits(amount: 1)` over HTTP with the admin token, round-robin
//! over the accounts, one started every 10 ms whether or not the previous ones have answered
//! (at most 64 in flight). Each grant stores one `credits.changed` event that must reach its
//! account's 100 subscribers.
//!
//! Reported: delivery latency (client receive time minus the event's `occurredAt`, both on
//! this machine's wall clock) as p50, p99 and max; deliveries, lost, duplicated and foreign
//! ones, checked against the events stored per account (read back over GraphQL); the achieved
//! event rate; the server's resident memory after the subscribers connected, at the end, and
//! at its peak (`/proc/<pid>/status`); its CPU over the load window (`/proc/<pid>/stat`); and,
//! per 5 s of the load, the deliveries, their latency and the server's protocol pings, to show
//! when time is lost.
//!
//! Run with `cargo bench --bench subscriptions`; everything is reported on stdout, only
//! 127.0.0.1 is used, the server is killed at the end, and the process exits non-zero when a
//! subscriber did not receive every event of its account exactly once.

#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

mod common;

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use base64::Engine;
use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use reqwest::Client;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::{net::TcpStream, sync::Semaphore, task::JoinHandle};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};
use tokio_util::sync::CancellationToken;

use common::{Account, Api, ServerProcess, create_account, pooled_http_client};

const ACCOUNTS: usize = 100;
const SUBSCRIBERS_PER_ACCOUNT: usize = 100;
const SUBSCRIBERS: usize = ACCOUNTS * SUBSCRIBERS_PER_ACCOUNT;
/// WebSocket handshakes (connect, `connection_init`, ack, subscribe) in flight at once.
const OPEN_CONCURRENCY: usize = 200;
const OPEN_DEADLINE: Duration = Duration::from_secs(180);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between the last subscribe and the first event.
const SETTLE: Duration = Duration::from_secs(1);
const LOAD: Duration = Duration::from_secs(30);
/// One event every `TICK`: 100 per second.
const TICK: Duration = Duration::from_millis(10);
/// Grants awaiting their answer at once; the next slot waits beyond that.
const MAX_IN_FLIGHT: usize = 64;
/// Length of one row of the breakdown over time.
const WINDOW: Duration = Duration::from_secs(5);
const STRAGGLER_WAIT: Duration = Duration::from_secs(10);
const PROGRESS_POLL: Duration = Duration::from_millis(20);
const JOIN_DEADLINE: Duration = Duration::from_secs(30);
/// Distinct problems shown per kind.
const SAMPLES: usize = 5;
/// Units of `utime`/`stime` in `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

const TARGET_P99_MS: f64 = 100.0;
const TARGET_RSS_MB: f64 = 300.0;

const GRANT: &str = "mutation($id: ID!) { grantCredits(accountId: $id, amount: 1) { total } }";
const SUBSCRIBE: &str = "subscription { events { cursor type occurredAt } }";
const STORED_EVENTS: &str = "query($after: String) {
    events(first: 100, after: $after, filter: {types: [CREDITS_CHANGED]}) {
        edges { node { cursor } } pageInfo { hasNextPage endCursor }
    }
}";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            println!("subscriptions: failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The whole bench; `Ok(false)` when a delivery was lost, duplicated or foreign.
async fn run() -> anyhow::Result<bool> {
    raise_open_file_limit()?;
    let client = pooled_http_client(MAX_IN_FLIGHT)?;
    let server = Server::start(&client).await?;
    let accounts = create_accounts(&client, server.addr).await?;

    let progress = Arc::new(Progress::default());
    let stop = CancellationToken::new();
    let subscribers = open_subscribers(server.addr, &accounts, &progress, &stop).await?;
    tokio::time::sleep(SETTLE).await;
    let rss_connected_kib = status_kib(server.pid(), "VmRSS:")?;
    println!(
        "server: RSS {:.1} MB with {SUBSCRIBERS} subscribers connected",
        mib(rss_connected_kib)
    );

    println!("machine: load average {} before the load", load_average());
    let load = drive_load(&client, server.addr, &accounts, server.pid()).await?;
    println!("machine: load average {} after the load", load_average());
    let expected = load.granted() * SUBSCRIBERS_PER_ACCOUNT as u64;
    let waited = wait_for_deliveries(&progress, expected).await;
    println!(
        "stragglers: waited {:.2} s after the load for {} of {expected} deliveries",
        waited.as_secs_f64(),
        progress.delivered.load(Ordering::SeqCst)
    );
    let rss_end_kib = status_kib(server.pid(), "VmRSS:")?;
    let rss_peak_kib = status_kib(server.pid(), "VmHWM:")?;
    stop.cancel();
    let received = collect(subscribers).await;

    let stored = stored_events(&accounts).await?;
    let deliveries = check_deliveries(&received, &stored);
    let memory = Memory {
        connected_kib: rss_connected_kib,
        end_kib: rss_end_kib,
        peak_kib: rss_peak_kib,
    };
    report(&load, &deliveries, &memory);
    report_windows(&received, load.started_at);
    server.report_log();
    Ok(deliveries.exact())
}

// --- setup -------------------------------------------------------------------------------

/// Raises this process's soft open-file limit to the hard one; the server child inherits it.
fn raise_open_file_limit() -> anyhow::Result<()> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).context("raise RLIMIT_NOFILE")?;
    println!("setup: open-file limit {limit} (bench and server each)");
    ensure!(
        limit as usize > SUBSCRIBERS + 100,
        "an open-file limit of {limit} is too low for {SUBSCRIBERS} sockets"
    );
    Ok(())
}

/// A `millwright serve` child on a fresh database, logging to a file beside it.
struct Server {
    process: ServerProcess,
    addr: SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

impl Server {
    async fn start(client: &Client) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("temp dir for the database")?;
        let database_url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
        let log = dir.path().join("server.log");
        let per_token = SUBSCRIBERS_PER_ACCOUNT.to_string();
        let settings = [
            ("MILLWRIGHT_WS_PING_INTERVAL_SECS", "30"),
            // Each account's subscribers share its key: more than the default 50 per token.
            ("MILLWRIGHT_WS_MAX_SOCKETS_PER_TOKEN", per_token.as_str()),
            // Rate limiting on, high enough that the sockets' subscriptions all pass.
            ("MILLWRIGHT_API_REQUESTS_PER_SECOND", "1000000"),
            ("MILLWRIGHT_API_BURST", "1000000"),
            ("MILLWRIGHT_LOG_FORMAT", "json"),
            ("RUST_LOG", "warn"),
        ];
        let (process, _) =
            ServerProcess::start(client, &database_url, &settings, Some(&log)).await?;
        let addr = process.addr;
        println!("server: pid {} on {addr}", process.pid());
        Ok(Self {
            process,
            addr,
            log,
            _dir: dir,
        })
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// How many lines the server logged (warnings and errors only), with a few of them.
    fn report_log(&self) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        println!("server log: {} lines at warn or above", lines.len());
        for line in lines.iter().take(SAMPLES) {
            println!("  {line}");
        }
    }
}

async fn create_accounts(client: &Client, addr: SocketAddr) -> anyhow::Result<Vec<Account>> {
    let started = Instant::now();
    let mut accounts = Vec::with_capacity(ACCOUNTS);
    for index in 0..ACCOUNTS {
        accounts.push(create_account(client, addr, &format!("bench-{index}"), 0).await?);
    }
    println!(
        "setup: {ACCOUNTS} accounts created in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(accounts)
}

// --- subscribers -------------------------------------------------------------------------

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Counters shared by all subscribers.
#[derive(Default)]
struct Progress {
    subscribed: AtomicUsize,
    failed: AtomicUsize,
    delivered: AtomicU64,
}

/// What one subscriber saw: the events it received, in order, and how it ended.
struct Received {
    account: usize,
    /// In the order received.
    deliveries: Vec<Delivery>,
    /// When each protocol ping of the server arrived, in µs since the Unix epoch.
    pings: Vec<i64>,
    problems: Vec<String>,
}

#[derive(Clone, Copy)]
struct Delivery {
    position: i64,
    /// The event's `occurredAt`, in µs since the Unix epoch.
    occurred_us: i64,
    /// Receive time minus `occurredAt`, in µs.
    latency_us: i64,
}

/// What one text message from the server was.
enum Incoming {
    Event(Delivery),
    Ping,
}

/// Opens every subscriber, `OPEN_CONCURRENCY` at a time; returns once each has sent its
/// subscribe (or failed).
async fn open_subscribers(
    addr: SocketAddr,
    accounts: &[Account],
    progress: &Arc<Progress>,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<JoinHandle<Received>>> {
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let keys: Vec<Arc<str>> = accounts.iter().map(|a| Arc::from(a.api.token())).collect();
    // Interleaved over the accounts, so that a failure shows as a pattern, not one account.
    let tasks = (0..SUBSCRIBERS)
        .map(|i| {
            let account = i % ACCOUNTS;
            let task = subscriber(
                addr,
                keys[account].clone(),
                account,
                gate.clone(),
                progress.clone(),
                stop.clone(),
            );
            tokio::spawn(task)
        })
        .collect();
    loop {
        let subscribed = progress.subscribed.load(Ordering::SeqCst);
        let failed = progress.failed.load(Ordering::SeqCst);
        if subscribed + failed == SUBSCRIBERS {
            println!(
                "setup: {subscribed} subscribers open ({failed} failed) in {:.2} s, {OPEN_CONCURRENCY} handshakes at a time",
                started.elapsed().as_secs_f64()
            );
            return Ok(tasks);
        }
        if started.elapsed() > OPEN_DEADLINE {
            stop.cancel();
            bail!(
                "only {subscribed} of {SUBSCRIBERS} subscribers open ({failed} failed) after {} s",
                OPEN_DEADLINE.as_secs()
            );
        }
        tokio::time::sleep(PROGRESS_POLL).await;
    }
}

async fn subscriber(
    addr: SocketAddr,
    key: Arc<str>,
    account: usize,
    gate: Arc<Semaphore>,
    progress: Arc<Progress>,
    stop: CancellationToken,
) -> Received {
    let mut received = Received {
        account,
        deliveries: Vec::with_capacity(64),
        pings: Vec::new(),
        problems: Vec::new(),
    };
    let opened = {
        let _permit = gate.acquire().await;
        tokio::time::timeout(HANDSHAKE_TIMEOUT, open_subscription(addr, &key)).await
    };
    let mut socket = match opened {
        Ok(Ok(socket)) => socket,
        Ok(Err(err)) => return failed(received, &progress, format!("open: {err:#}")),
        Err(_) => return failed(received, &progress, "open: handshake timed out".into()),
    };
    progress.subscribed.fetch_add(1, Ordering::SeqCst);
    listen(&mut socket, &mut received, &progress, &stop).await;
    received
}

fn failed(mut received: Received, progress: &Progress, problem: String) -> Received {
    progress.failed.fetch_add(1, Ordering::SeqCst);
    received.problems.push(problem);
    received
}

/// Connects, authenticates with `connection_init`, waits for the ack and subscribes.
async fn open_subscription(addr: SocketAddr, key: &str) -> anyhow::Result<Socket> {
    let mut request = format!("ws://{addr}/graphql/ws").into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut socket, _) = connect_async(request).await?;
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {key}") } });
    send_json(&mut socket, &init).await?;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                let message: Value = serde_json::from_str(&text)?;
                match message["type"].as_str() {
                    Some("connection_ack") => break,
                    Some("ping") => send_json(&mut socket, &json!({ "type": "pong" })).await?,
                    _ => bail!("expected connection_ack, got {message}"),
                }
            }
            Some(Ok(Message::Close(frame))) => bail!("closed before the ack: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(err.into()),
            None => bail!("socket ended before the ack"),
        }
    }
    let subscribe =
        json!({ "id": "events", "type": "subscribe", "payload": { "query": SUBSCRIBE } });
    send_json(&mut socket, &subscribe).await?;
    Ok(socket)
}

async fn send_json(socket: &mut Socket, value: &Value) -> anyhow::Result<()> {
    socket.send(Message::Text(value.to_string().into())).await?;
    Ok(())
}

/// Reads events until `stop`, or until the socket ends (a problem).
async fn listen(
    socket: &mut Socket,
    received: &mut Received,
    progress: &Progress,
    stop: &CancellationToken,
) {
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return,
            message = socket.next() => message,
        };
        // Taken before parsing: the latency ends when the message is in hand.
        let now = Utc::now();
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                received
                    .problems
                    .push(format!("closed by the server: {frame:?}"));
                return;
            }
            Some(Ok(_)) => continue,
            Some(Err(err)) => {
                received.problems.push(format!("socket error: {err}"));
                return;
            }
            None => {
                received
                    .problems
                    .push("socket ended without a close frame".into());
                return;
            }
        };
        match on_text(socket, &text, now).await {
            Ok(Some(Incoming::Event(delivery))) => {
                received.deliveries.push(delivery);
                progress.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Some(Incoming::Ping)) => received.pings.push(now.timestamp_micros()),
            Ok(None) => {}
            Err(err) => received.problems.push(format!("{err:#}")),
        }
    }
}

/// One text message: an event, a ping (answered), nothing of interest, or a problem.
async fn on_text(
    socket: &mut Socket,
    text: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<Incoming>> {
    let message: Value = serde_json::from_str(text).context("message is not JSON")?;
    match message["type"].as_str() {
        Some("next") => {
            let payload = &message["payload"];
            ensure!(payload.get("errors").is_none(), "errors in next: {payload}");
            let event = &payload["data"]["events"];
            ensure!(
                event["type"] == "CREDITS_CHANGED",
                "unexpected event {event}"
            );
            let position = cursor_position(event["cursor"].as_str().unwrap_or_default())?;
            let occurred_at = event["occurredAt"].as_str().unwrap_or_default();
            let occurred_at = DateTime::parse_from_rfc3339(occurred_at)
                .with_context(|| format!("occurredAt of {event}"))?;
            let occurred_at = occurred_at.with_timezone(&Utc);
            let latency_us = (now - occurred_at)
                .num_microseconds()
                .context("latency overflows")?;
            Ok(Some(Incoming::Event(Delivery {
                position,
                occurred_us: occurred_at.timestamp_micros(),
                latency_us,
            })))
        }
        Some("ping") => {
            send_json(socket, &json!({ "type": "pong" })).await?;
            Ok(Some(Incoming::Ping))
        }
        Some("pong") => Ok(None),
        _ => bail!("unexpected message {message}"),
    }
}

/// The log position inside an `Event.cursor` (base64 of `e1:<position>`).
fn cursor_position(cursor: &str) -> anyhow::Result<i64> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .with_context(|| format!("cursor {cursor:?}"))?;
    let text = String::from_utf8(bytes).context("cursor is not UTF-8")?;
    let position = text
        .strip_prefix("e1:")
        .with_context(|| format!("cursor {text:?}"))?;
    position.parse().with_context(|| format!("cursor {text:?}"))
}

/// Waits until every expected delivery arrived, at most `STRAGGLER_WAIT`; returns the wait.
async fn wait_for_deliveries(progress: &Progress, expected: u64) -> Duration {
    let started = Instant::now();
    while progress.delivered.load(Ordering::SeqCst) < expected && started.elapsed() < STRAGGLER_WAIT
    {
        tokio::time::sleep(PROGRESS_POLL).await;
    }
    started.elapsed()
}

async fn collect(subscribers: Vec<JoinHandle<Received>>) -> Vec<Received> {
    let deadline = tokio::time::Instant::now() + JOIN_DEADLINE;
    let mut received = Vec::with_capacity(subscribers.len());
    for task in subscribers {
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(one)) => received.push(one),
            Ok(Err(err)) => println!("subscriber: task failed: {err}"),
            Err(_) => {
                println!(
                    "subscriber: did not stop within {} s",
                    JOIN_DEADLINE.as_secs()
                );
                break;
            }
        }
    }
    received
}

// --- load --------------------------------------------------------------------------------

/// What the grants did, and the server's CPU over the same window.
struct Load {
    started_at: DateTime<Utc>,
    /// Successful grants per account.
    granted: Vec<u64>,
    errors: Vec<String>,
    /// Request latencies of the grants, sorted.
    grant_latencies: Vec<Duration>,
    /// Most a grant started after its slot.
    max_behind: Duration,
    max_in_flight: usize,
    elapsed: Duration,
    server_cpu_percent: f64,
    bench_cpu_percent: f64,
}

impl Load {
    fn granted(&self) -> u64 {
        self.granted.iter().sum()
    }
}

type GrantTask = JoinHandle<(usize, Result<Duration, String>)>;

/// Starts one grant every `TICK` for `LOAD`, then waits for all of them to answer.
async fn drive_load(
    client: &Client,
    addr: SocketAddr,
    accounts: &[Account],
    server_pid: u32,
) -> anyhow::Result<Load> {
    let ids: Vec<Arc<str>> = accounts.iter().map(|a| Arc::from(a.id.as_str())).collect();
    let slots = (LOAD.as_millis() / TICK.as_millis()) as usize;
    let gate = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let server_cpu = cpu_ticks(&server_pid.to_string())?;
    let bench_cpu = cpu_ticks("self")?;
    let mut load = Load {
        started_at: Utc::now(),
        granted: vec![0; ACCOUNTS],
        errors: Vec::new(),
        grant_latencies: Vec::with_capacity(slots),
        max_behind: Duration::ZERO,
        max_in_flight: 0,
        elapsed: Duration::ZERO,
        server_cpu_percent: 0.0,
        bench_cpu_percent: 0.0,
    };
    let started = Instant::now();
    let mut tasks: Vec<GrantTask> = Vec::with_capacity(slots);
    for slot in 0..slots {
        let due = started + TICK * slot as u32;
        tokio::time::sleep_until(due.into()).await;
        let permit = gate.clone().acquire_owned().await?;
        load.max_behind = load.max_behind.max(due.elapsed());
        load.max_in_flight = load
            .max_in_flight
            .max(MAX_IN_FLIGHT - gate.available_permits());
        let account = slot % ACCOUNTS;
        let (client, id) = (client.clone(), ids[account].clone());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let admin = Api::admin(&client, addr);
            let outcome = admin.call(GRANT, json!({ "id": id })).await;
            drop(permit);
            (account, outcome.map(|_| sent.elapsed()))
        }));
    }
    for task in tasks {
        match task.await.context("grant task")? {
            (account, Ok(latency)) => {
                load.granted[account] += 1;
                load.grant_latencies.push(latency);
            }
            (_, Err(err)) => load.errors.push(err),
        }
    }
    load.elapsed = started.elapsed();
    let seconds = load.elapsed.as_secs_f64();
    load.server_cpu_percent =
        cpu_percent(cpu_ticks(&server_pid.to_string())? - server_cpu, seconds);
    load.bench_cpu_percent = cpu_percent(cpu_ticks("self")? - bench_cpu, seconds);
    load.grant_latencies.sort_unstable();
    Ok(load)
}

/// `/proc/loadavg`: 1, 5 and 15 minute load averages; this machine has 2 vCPUs.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let averages: Vec<&str> = text.split_whitespace().take(3).collect();
    averages.join(" ")
}

/// utime + stime of a process (`self` or a pid), in clock ticks.
fn cpu_ticks(pid: &str) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // Fields after the command name, which ends with the last ')': state is field 3.
    let (_, rest) = stat.rsplit_once(')').context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        let text = fields.get(n - 3).context("short stat")?;
        Ok(text.parse()?)
    };
    Ok(field(14)? + field(15)?)
}

/// CPU time as a share of one core over `seconds` of wall time.
fn cpu_percent(ticks: u64, seconds: f64) -> f64 {
    100.0 * ticks as f64 / CLOCK_TICKS_PER_SECOND / seconds
}

// --- checks ------------------------------------------------------------------------------

/// Positions of the `credits.changed` events stored per account, read with its own key.
async fn stored_events(accounts: &[Account]) -> anyhow::Result<Vec<BTreeSet<i64>>> {
    let mut stored = Vec::with_capacity(accounts.len());
    for account in accounts {
        let mut positions = BTreeSet::new();
        let mut after = Value::Null;
        loop {
            let variables = json!({ "after": after });
            let data = account.api.data(STORED_EVENTS, variables).await?;
            let events = &data["events"];
            for edge in events["edges"].as_array().context("edges")? {
                let cursor = edge["node"]["cursor"].as_str().context("cursor")?;
                positions.insert(cursor_position(cursor)?);
            }
            if events["pageInfo"]["hasNextPage"] != true {
                break;
            }
            after = events["pageInfo"]["endCursor"].clone();
        }
        stored.push(positions);
    }
    Ok(stored)
}

/// Every delivery compared with the events stored for its subscriber's account.
struct Deliveries {
    stored: u64,
    expected: u64,
    /// First deliveries of a stored event of the subscriber's account.
    received: u64,
    duplicates: u64,
    /// Deliveries of an event that is not one of the account's.
    foreign: u64,
    out_of_order: u64,
    /// Subscribers that missed at least one event.
    short_subscribers: usize,
    /// Latencies of every delivery, in microseconds, sorted.
    latencies_us: Vec<i64>,
    problems: HashMap<String, usize>,
    subscribers: usize,
}

impl Deliveries {
    fn lost(&self) -> u64 {
        self.expected - self.received
    }

    fn exact(&self) -> bool {
        self.lost() == 0 && self.duplicates == 0 && self.foreign == 0
    }
}

fn check_deliveries(received: &[Received], stored: &[BTreeSet<i64>]) -> Deliveries {
    let stored_total: u64 = stored.iter().map(|s| s.len() as u64).sum();
    let mut deliveries = Deliveries {
        stored: stored_total,
        expected: stored_total * SUBSCRIBERS_PER_ACCOUNT as u64,
        received: 0,
        duplicates: 0,
        foreign: 0,
        out_of_order: 0,
        short_subscribers: 0,
        latencies_us: Vec::with_capacity(received.iter().map(|r| r.deliveries.len()).sum()),
        problems: HashMap::new(),
        subscribers: received.len(),
    };
    for one in received {
        check_subscriber(one, &stored[one.account], &mut deliveries);
    }
    deliveries.latencies_us.sort_unstable();
    deliveries
}

fn check_subscriber(one: &Received, stored: &BTreeSet<i64>, deliveries: &mut Deliveries) {
    let mut seen = BTreeSet::new();
    let mut last = i64::MIN;
    for delivery in &one.deliveries {
        let position = delivery.position;
        deliveries.latencies_us.push(delivery.latency_us);
        if position <= last {
            deliveries.out_of_order += 1;
        }
        last = last.max(position);
        if !stored.contains(&position) {
            deliveries.foreign += 1;
        } else if !seen.insert(position) {
            deliveries.duplicates += 1;
        }
    }
    deliveries.received += seen.len() as u64;
    if seen.len() < stored.len() {
        deliveries.short_subscribers += 1;
    }
    for problem in &one.problems {
        *deliveries.problems.entry(problem.clone()).or_default() += 1;
    }
}

// --- report ------------------------------------------------------------------------------

struct Memory {
    connected_kib: u64,
    end_kib: u64,
    peak_kib: u64,
}

/// A `VmRSS:`-style field of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .with_context(|| format!("{field} in /proc/{pid}/status"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Nearest-rank percentile of sorted values.
fn percentile<T: Copy>(sorted: &[T], percent: usize) -> Option<T> {
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

fn ms(micros: Option<i64>) -> f64 {
    micros.map_or(f64::NAN, |us| us as f64 / 1000.0)
}

fn duration_ms(duration: Option<Duration>) -> f64 {
    duration.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

fn report(load: &Load, deliveries: &Deliveries, memory: &Memory) {
    report_load(load);
    report_deliveries(deliveries);
    println!(
        "server: RSS {:.1} MB connected, {:.1} MB at the end, peak {:.1} MB; CPU {:.0} % of one core over the load (bench process: {:.0} %)",
        mib(memory.connected_kib),
        mib(memory.end_kib),
        mib(memory.peak_kib),
        load.server_cpu_percent,
        load.bench_cpu_percent,
    );
    let latencies = &deliveries.latencies_us;
    let p99 = ms(percentile(latencies, 99));
    let rss = mib(memory
        .connected_kib
        .max(memory.end_kib)
        .max(memory.peak_kib));
    println!(
        "target p99 <= {TARGET_P99_MS:.0} ms: {} ({p99:.1} ms)",
        verdict(p99 <= TARGET_P99_MS)
    );
    println!(
        "target RSS <= {TARGET_RSS_MB:.0} MB: {} (peak {rss:.1} MB)",
        verdict(rss <= TARGET_RSS_MB)
    );
    println!(
        "target no event lost: {} ({} lost, {} duplicated, {} foreign)",
        verdict(deliveries.exact()),
        deliveries.lost(),
        deliveries.duplicates,
        deliveries.foreign
    );
}

fn report_load(load: &Load) {
    let granted = load.granted();
    let seconds = load.elapsed.as_secs_f64();
    println!(
        "load: {granted} events committed in {seconds:.2} s = {:.1} events/s (target {:.0}/s), {} grant errors, grant p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, latest start {:.1} ms behind its slot, at most {} in flight",
        granted as f64 / seconds,
        1.0 / TICK.as_secs_f64(),
        load.errors.len(),
        duration_ms(percentile(&load.grant_latencies, 50)),
        duration_ms(percentile(&load.grant_latencies, 99)),
        duration_ms(load.grant_latencies.last().copied()),
        load.max_behind.as_secs_f64() * 1000.0,
        load.max_in_flight,
    );
    for error in load.errors.iter().take(SAMPLES) {
        println!("  grant error: {error}");
    }
}

fn report_deliveries(deliveries: &Deliveries) {
    let latencies = &deliveries.latencies_us;
    println!(
        "deliveries: {} of {} expected ({} events stored x {SUBSCRIBERS_PER_ACCOUNT}); lost {}, duplicated {}, foreign {}, out of order {}; {} of {} subscribers missed an event",
        deliveries.received,
        deliveries.expected,
        deliveries.stored,
        deliveries.lost(),
        deliveries.duplicates,
        deliveries.foreign,
        deliveries.out_of_order,
        deliveries.short_subscribers,
        deliveries.subscribers,
    );
    println!(
        "latency (receive - occurredAt) over {} deliveries: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        ms(percentile(latencies, 50)),
        ms(percentile(latencies, 99)),
        ms(latencies.last().copied()),
    );
    let mut problems: Vec<_> = deliveries.problems.iter().collect();
    problems.sort_by(|a, b| b.1.cmp(a.1));
    for (problem, count) in problems.iter().take(SAMPLES) {
        println!("  subscriber problem x{count}: {problem}");
    }
}

/// Deliveries by when their event occurred, and protocol pings by when they arrived, per
/// `WINDOW` of the load (the last row holds what came after it).
fn report_windows(received: &[Received], started_at: DateTime<Utc>) {
    let rows = (LOAD.as_secs() / WINDOW.as_secs()) as usize + 1;
    let window_us = WINDOW.as_micros() as i64;
    let start_us = started_at.timestamp_micros();
    let row = |at_us: i64| (((at_us - start_us) / window_us).max(0) as usize).min(rows - 1);
    let mut latencies: Vec<Vec<i64>> = vec![Vec::new(); rows];
    let mut pings = vec![0_u64; rows];
    for one in received {
        for delivery in &one.deliveries {
            latencies[row(delivery.occurred_us)].push(delivery.latency_us);
        }
        for &at in &one.pings {
            pings[row(at)] += 1;
        }
    }
    println!("by time (events by occurredAt, pings by arrival):");
    for (index, (mut window, pings)) in latencies.into_iter().zip(pings).enumerate() {
        window.sort_unstable();
        let from = index as u64 * WINDOW.as_secs();
        let label = if index + 1 == rows {
            format!("{from} s and later")
        } else {
            format!("{from}-{} s", from + WINDOW.as_secs())
        };
        println!(
            "  {label:>14}: {:>6} deliveries, p50 {:>6.1} ms, p99 {:>6.1} ms, max {:>6.1} ms; {pings:>5} server pings",
            window.len(),
            ms(percentile(&window, 50)),
            ms(percentile(&window, 99)),
            ms(window.last().copied()),
        );
    }
}
