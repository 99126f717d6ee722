//! Soak test (#16): the server under a mixed load with faults, then its invariants.
//!
//! For SQLite (one `millwright serve` process on a file) and then PostgreSQL (two processes
//! on a fresh database, `MILLWRIGHT_TEST_POSTGRES_URL` or `postgres://postgres@127.0.0.1:5432/test`
//! to create it from), for `SOAK_SECS` (120 by default; `SOAK_DB=sqlite|postgres|both`):
//!
//! - one account (100,000 credits), two customers, 20 demo connections (12 healthy, 3
//!   `simulate: flaky`, 3 `rate_limited`, 2 `auth_expired`; some `ON_PREMISES` at 2 credits);
//! - three webhook endpoints (every type; the sync outcomes; credits and connections) on an
//!   in-process receiver that verifies every signature and answers 500 to 20 % of requests
//!   (a deterministic hash of endpoint, event id and attempt);
//! - 1,000 WebSocket `events` subscribers (graphql-transport-ws): 20 on the whole account,
//!   about 390 on a set of types, about 590 on one demo connection; all subscribe with
//!   `after` = the log's newest cursor before the demo connections were made, and one whose
//!   socket ends reconnects to a live process with the last cursor it saw;
//! - 32 clients, spread over the live processes, each doing one operation every 0.4–1.2 s:
//!   reads (credits, a connection and its runs, assets, events), `connect` and `disconnect`
//!   of their own demo connections (at most 3 live each), `triggerSync` and `checkConnection`
//!   of the 20 demo connections;
//! - at half time the first process is killed with SIGKILL and started again on the same
//!   database. Requests that cannot reach a process (the killed one, or none while SQLite's
//!   only process restarts) are counted apart, never as 5xx, and sent again to the next
//!   live process (or after a pause while none is up).
//!
//! The servers run with short leases (sync 10 s, webhook 15 s) and webhook retries after
//! 1, 2, 4, 8, 8 … s, so that what the kill leaves behind is taken over, and refused
//! deliveries are retried, within the run; they log JSON at `warn`, with the `http` span, so
//! that an ERROR line carries the request id the client sent in `x-request-id`.
//!
//! Afterwards the clients stop, the runs are given time to settle, the event log is read,
//! webhook retries and subscribers are given up to 90 s to catch up (the retry schedule with its jitter, plus a lease), and the invariants are
//! printed as `invariant: figure — PASS/FAIL`:
//!
//! - credits: the balance and the credit ledger agree with the connections the server holds
//!   (each connection one CONNECT of its catalog cost, each disconnected one a DISCONNECT);
//! - webhooks: every event of the log an endpoint subscribes to reached it at least once
//!   (a 2xx answered), every signature verified, and the log holds each event id once;
//! - subscribers: each saw every event of its filter (the `events` query with the same
//!   filter, read afterwards) with no gap;
//! - runs: none left RUNNING once the sync lease (10 s here) and a margin have passed;
//! - 5xx: every HTTP response ≥ 500 is a GraphQL error with code `INTERNAL` whose request
//!   id has an ERROR line in the server log; `INTERNAL` errors inside 200 answers are held
//!   to the same rule;
//! - RSS: each process's resident memory, sampled every second, varies by at most 10 %
//!   over the second half of the load; the restarted process is sampled from its restart
//!   and judged from 10 s after it (its subscribers reconnect and its caches fill first;
//!   the figure with the warm-up is printed too), the killed one is not judged;
//! - processes: none died but the one killed.
//!
//! Run with `cargo bench --bench soak` (about 10 minutes); only 127.0.0.1 is used, and the
//! process exits non-zero when an invariant fails.

#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

mod common;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};
use axum::{
    Router,
    body::Bytes,
    extract::{Path as UrlPath, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use hmac::{Hmac, Mac as _};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use reqwest::{Client, header::AUTHORIZATION};
use serde_json::{Value, json};
use sha2::Sha256;
use tempfile::TempDir;
use tokio::{net::TcpStream, sync::Semaphore, task::JoinHandle};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};
use tokio_util::sync::CancellationToken;

use common::{ADMIN_TOKEN, ScratchPostgres, ServerProcess, pooled_http_client};

const DEFAULT_SECS: u64 = 120;

const INITIAL_CREDITS: i64 = 100_000;
const CLIENTS: usize = 32;
const DEMO_CONNECTIONS: usize = 20;
const DEMO_SCALE: u64 = 50;
/// Live connections of its own a client keeps at most.
const CHURN_HELD: usize = 3;
const THINK_MS: std::ops::Range<u64> = 400..1200;
/// A client's operation that reached no process is retried this often, this far apart.
const RETRIES: usize = 20;
const RETRY_PAUSE: Duration = Duration::from_millis(250);
const SUBSCRIBERS: usize = 1_000;
/// Every `ACCOUNT_WIDE_EVERY`th subscriber listens to the whole account.
const ACCOUNT_WIDE_EVERY: usize = 50;
/// WebSocket handshakes in flight at once.
const OPEN_CONCURRENCY: usize = 100;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
const RECONNECT_PAUSE: Duration = Duration::from_millis(300);
/// Out of 100 webhook requests, those the receiver answers 500.
const FAIL_PERCENT: u64 = 20;
const SIGNATURE_TOLERANCE_SECS: i64 = 300;

const SYNC_LEASE_SECS: u64 = 10;
const WEBHOOK_LEASE_SECS: u64 = 15;
/// Short retries, so that a delivery refused by the receiver is retried within the run.
const WEBHOOK_RETRY_SCHEDULE: &str = "1,2,4,8,8,8,8,8,8";
const SETTLE_DEADLINE: Duration = Duration::from_secs(SYNC_LEASE_SECS + 80);
/// Longer than a delivery may still be owed after the load: the retry schedule (55 s) with
/// its +20 % jitter (66 s), plus a lease a killed process may hold (15 s).
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_secs(1);
const RSS_TOLERANCE: f64 = 0.10;
/// A process restarted inside the RSS window is judged from this long after its restart:
/// its subscribers reconnect and its caches fill in the first seconds.
const RESTART_WARM_UP: Duration = Duration::from_secs(10);
/// Setup and checks retry a request that found no process this often.
const SETUP_ATTEMPTS: usize = 60;
const SAMPLES: usize = 5;

const CREATE_ACCOUNT: &str = "mutation($credits: Int) {
    createAccount(input: {name: \"soak\", credits: $credits}) { apiKey account { id } } }";
const CREATE_CUSTOMER: &str =
    "mutation($name: String!) { createCustomer(input: {name: $name}) { id } }";
const CATALOG: &str = "{ systems { key cloud: creditCost(deployment: CLOUD)
    onPremises: creditCost(deployment: ON_PREMISES) } }";
const CREATE_ENDPOINT: &str = "mutation($input: CreateWebhookEndpointInput!) {
    createWebhookEndpoint(input: $input) { endpoint { id } secret } }";
const CONNECT: &str = "mutation($c: ID!, $d: Deployment!, $creds: JSON!) {
    connect(input: {customerId: $c, systemKey: \"demo\", deployment: $d, credentials: $creds,
        validate: false}) { connection { id } } }";
const DISCONNECT: &str = "mutation($id: ID!) { disconnect(id: $id) { status } }";
const TRIGGER: &str =
    "mutation($id: ID!, $k: SyncKind) { triggerSync(connectionId: $id, kind: $k) { id } }";
const CHECK: &str = "mutation($id: ID!) { checkConnection(id: $id) { status } }";
const READ_CREDITS: &str =
    "query Credits { viewer { account { credits { total used available } } } }";
const READ_CONNECTION: &str = "query Connection($id: ID!) { connection(id: $id) {
    status statusReason lastSyncRun { status } syncRuns(first: 5) { nodes { id status } } } }";
const READ_ASSETS: &str = "query Assets($id: ID!) { assets(connectionId: $id, first: 20) {
    nodes { key name site { name } } } }";
const READ_EVENTS: &str =
    "query Events($id: ID!) { events(first: 20, filter: {connectionId: $id}) {
    nodes { id type } } }";
const EVENTS_PAGE: &str = "query($after: String, $filter: EventFilter) {
    events(first: 100, after: $after, filter: $filter) {
        nodes { id cursor type connectionId } pageInfo { hasNextPage endCursor } } }";
const CONNECTIONS_PAGE: &str = "query($after: String) { connections(first: 50, after: $after) {
    nodes { id status creditCost deployment system { key }
        syncRuns(first: 100) { nodes { id status startedAt } pageInfo { hasNextPage endCursor } } }
    pageInfo { hasNextPage endCursor } } }";
const MORE_RUNS: &str = "query($id: ID!, $after: String) { connection(id: $id) {
    syncRuns(first: 100, after: $after) { nodes { id status startedAt } pageInfo { hasNextPage endCursor } } } }";
const BALANCE: &str = "{ viewer { account { credits { total used available } } } }";
const LEDGER_PAGE: &str = "query($after: String) { creditLedger(first: 100, after: $after) {
    nodes { kind amount balanceAfter connection { id } } pageInfo { hasNextPage endCursor } } }";
const SUBSCRIBE: &str = "subscription($filter: EventFilter, $after: String) {
    events(filter: $filter, after: $after) { cursor } }";

/// The webhook endpoints: the event types each asks for (empty: every type).
const ENDPOINT_TYPES: [&[&str]; 3] = [
    &[],
    &["SYNC_COMPLETED", "SYNC_FAILED", "RECORDS_CHANGED"],
    &[
        "CREDITS_CHANGED",
        "CONNECTION_CREATED",
        "CONNECTION_DISCONNECTED",
        "CONNECTION_STATUS_CHANGED",
    ],
];

/// Type filters of the subscribers that listen to types.
const SUBSCRIBER_TYPES: [&[&str]; 4] = [
    &["SYNC_COMPLETED", "SYNC_FAILED"],
    &["CREDITS_CHANGED"],
    &["CONNECTION_CREATED", "CONNECTION_DISCONNECTED"],
    &[
        "SYSTEM_ERROR",
        "CONNECTION_STATUS_CHANGED",
        "CONNECTION_AUTH_REQUIRED",
    ],
];

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => {
            println!("result: every invariant held");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("result: FAILED (see the invariants above)");
            ExitCode::FAILURE
        }
        Err(err) => {
            println!("result: FAILED: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<bool> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).context("raise RLIMIT_NOFILE")?;
    ensure!(
        limit as usize > SUBSCRIBERS * 3,
        "an open-file limit of {limit} is too low for {SUBSCRIBERS} sockets"
    );
    let secs = match std::env::var("SOAK_SECS") {
        Ok(text) => text.parse().with_context(|| format!("SOAK_SECS={text}"))?,
        Err(_) => DEFAULT_SECS,
    };
    ensure!(secs >= 4, "SOAK_SECS must be at least 4");
    let which = std::env::var("SOAK_DB").unwrap_or_else(|_| "both".to_owned());
    let (sqlite, postgres) = match which.as_str() {
        "sqlite" => (true, false),
        "postgres" => (false, true),
        "both" => (true, true),
        other => bail!("SOAK_DB={other}: sqlite, postgres or both"),
    };
    let load = Duration::from_secs(secs);
    println!(
        "soak: {secs} s per database, a process killed at {} s; {CLIENTS} clients, {DEMO_CONNECTIONS} demo connections, {SUBSCRIBERS} subscribers, {} webhook endpoints failing {FAIL_PERCENT} %; machine {} vCPUs, {}",
        secs / 2,
        ENDPOINT_TYPES.len(),
        std::thread::available_parallelism().map_or(1, usize::from),
        common::load_average(),
    );
    let mut passed = true;
    if sqlite {
        passed &= report_outcome("sqlite", soak_sqlite(load).await);
    }
    if postgres {
        passed &= report_outcome("postgres", soak_postgres(load).await);
    }
    Ok(passed)
}

fn report_outcome(name: &str, outcome: anyhow::Result<bool>) -> bool {
    match outcome {
        Ok(passed) => passed,
        Err(err) => {
            println!("{name}: FAILED to run: {err:#}");
            false
        }
    }
}

// --- databases ---------------------------------------------------------------------------

async fn soak_sqlite(load: Duration) -> anyhow::Result<bool> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("soak.db").display());
    soak("sqlite", &url, 1, load, &dir).await
}

async fn soak_postgres(load: Duration) -> anyhow::Result<bool> {
    let scratch = ScratchPostgres::create("mw_soak").await?;
    let url = scratch.url.clone();
    let dir = tempfile::tempdir().context("temp dir")?;
    // A panic inside is caught by its task, so the database is dropped regardless.
    let outcome = tokio::spawn(async move { soak("postgres", &url, 2, load, &dir).await })
        .await
        .map_err(|err| anyhow!("the soak panicked: {err}"))
        .and_then(|result| result);
    if matches!(outcome, Ok(false)) {
        // An invariant failed: the database is kept for a look at what the servers stored.
        scratch.keep().await;
    } else {
        scratch.drop().await;
    }
    outcome
}

// --- the soak ----------------------------------------------------------------------------

/// One database: processes up, setup, subscribers, load with a kill, settle, checks.
async fn soak(
    db: &'static str,
    url: &str,
    processes: usize,
    load: Duration,
    dir: &TempDir,
) -> anyhow::Result<bool> {
    println!("== {db}: {processes} process(es), {} s", load.as_secs());
    let client = pooled_http_client(CLIENTS * 2)?;
    let receiver = Receiver::start().await?;
    let mut cluster = Cluster::start(&client, url, processes, dir.path()).await?;
    let checked = Box::pin(soak_with(db, &client, &receiver, &mut cluster, load)).await;
    cluster.stop();
    checked
}

async fn soak_with(
    db: &'static str,
    client: &Client,
    receiver: &Receiver,
    cluster: &mut Cluster,
    load: Duration,
) -> anyhow::Result<bool> {
    let live = cluster.live.clone();
    let faults = Arc::new(Faults::default());
    let setup = Setup::make(client, &live, &faults, receiver).await?;
    println!(
        "{db}: setup: account, {} demo connections, {} endpoints; log starts after position {}",
        setup.demo.len(),
        ENDPOINT_TYPES.len(),
        setup.start_position
    );

    let stop_subscribers = CancellationToken::new();
    let subscribers = open_subscribers(&setup, &live, &stop_subscribers).await;
    let started = Instant::now();
    let (rss, stop_rss) = sample_rss(live.clone(), started);
    let ops = Arc::new(Ops::default());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|index| {
            let worker = Worker {
                index,
                gql: setup.api.clone(),
                demo: setup.demo.clone(),
                customer: setup.churn_customer.clone(),
                ops: ops.clone(),
                until: started + load,
            };
            tokio::spawn(worker.run())
        })
        .collect();

    tokio::time::sleep_until((started + load / 2).into()).await;
    // What the kill interrupts: runs in progress (some of them the victim's).
    let (_, runs) = read_connections(&setup.api).await?;
    let running = runs.iter().filter(|(_, s, _)| s == "RUNNING").count();
    let queued = runs.iter().filter(|(_, s, _)| s == "QUEUED").count();
    println!("{db}: just before the kill: {running} runs RUNNING, {queued} QUEUED");
    cluster.kill_and_restart(client, started).await?;
    for task in clients {
        task.await.context("client task")?;
    }
    stop_rss.cancel();
    let load_ended = started.elapsed();
    println!(
        "{db}: load ended after {:.1} s; {}",
        load_ended.as_secs_f64(),
        common::load_average()
    );
    ops.report(db);
    println!(
        "{db}: {} requests sent; {} reached no process ({} of them to a process still live)",
        faults.requests.load(Ordering::Relaxed),
        faults.unreachable.load(Ordering::Relaxed),
        faults.unreachable_live.load(Ordering::Relaxed),
    );

    let settled = settle_runs(&setup.api).await?;
    let log = read_log(&setup.api, None, setup.start_cursor.as_deref()).await?;
    let end_position = log.last().map_or(setup.start_position, |e| e.position);
    let expected_subscribers = expected_per_filter(&setup, &subscribers, end_position).await?;
    let caught_up = catch_up(receiver, &log, &setup, &subscribers, &expected_subscribers).await;
    println!(
        "{db}: webhooks and subscribers waited {:.1} s after the runs settled",
        caught_up.as_secs_f64()
    );
    stop_subscribers.cancel();

    let mut invariants = Vec::new();
    invariants.push(check_credits(&setup, &settled.connections).await?);
    invariants.push(check_webhooks(receiver, &log, setup.start_position));
    invariants.push(check_subscribers(
        &subscribers,
        &expected_subscribers,
        end_position,
    ));
    invariants.push(settled.invariant());
    invariants.push(check_faults(&faults, &cluster.logs()));
    invariants.extend(check_rss(&rss.lock().expect("rss lock"), load_ended / 2));
    invariants.push(cluster.check_alive());
    report_logs(db, &cluster.logs());
    let mut passed = true;
    for invariant in &invariants {
        println!(
            "{db}: {}: {} — {}",
            invariant.name,
            invariant.figure,
            if invariant.pass { "PASS" } else { "FAIL" }
        );
        passed &= invariant.pass;
    }
    for task in subscribers.tasks {
        task.abort();
    }
    Ok(passed)
}

struct Invariant {
    name: &'static str,
    figure: String,
    pass: bool,
}

// --- processes ---------------------------------------------------------------------------

/// The addresses clients may use (the live processes), and the pids to sample.
#[derive(Default)]
struct Live {
    addrs: RwLock<Vec<SocketAddr>>,
    /// (label, pid, since the soak started).
    pids: Mutex<Vec<(String, u32, Duration)>>,
}

impl Live {
    /// The `n`th live address, round robin; `None` while no process is up.
    fn pick(&self, n: usize) -> Option<SocketAddr> {
        let addrs = self.addrs.read().expect("addrs lock");
        (!addrs.is_empty()).then(|| addrs[n % addrs.len()])
    }

    fn is_live(&self, addr: SocketAddr) -> bool {
        self.addrs.read().expect("addrs lock").contains(&addr)
    }
}

struct Process {
    label: String,
    server: ServerProcess,
}

/// The server processes of one soak.
struct Cluster {
    url: String,
    dir: PathBuf,
    processes: Vec<Process>,
    /// Every log written, the killed process's included.
    logs: Vec<PathBuf>,
    live: Arc<Live>,
}

fn server_settings() -> Vec<(&'static str, String)> {
    vec![
        ("MILLWRIGHT_LOG_FORMAT", "json".into()),
        // The `http` span (with the request id) is at info: keep it, so that an error
        // logged inside a request says which request.
        ("RUST_LOG", "warn,millwright::http=info".into()),
        ("MILLWRIGHT_WEBHOOK_ALLOW_PRIVATE_TARGETS", "true".into()),
        (
            "MILLWRIGHT_WEBHOOK_RETRY_SCHEDULE",
            WEBHOOK_RETRY_SCHEDULE.into(),
        ),
        (
            "MILLWRIGHT_WEBHOOK_LEASE_SECS",
            WEBHOOK_LEASE_SECS.to_string(),
        ),
        ("MILLWRIGHT_SYNC_LEASE_SECS", SYNC_LEASE_SECS.to_string()),
        ("MILLWRIGHT_HEALTH_CHECK_INTERVAL_SECS", "30".into()),
        (
            "MILLWRIGHT_WS_MAX_SOCKETS_PER_TOKEN",
            (SUBSCRIBERS * 2).to_string(),
        ),
        ("MILLWRIGHT_API_REQUESTS_PER_SECOND", "1000000".into()),
        ("MILLWRIGHT_API_BURST", "1000000".into()),
    ]
}

impl Cluster {
    async fn start(
        client: &Client,
        url: &str,
        processes: usize,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let mut cluster = Self {
            url: url.to_owned(),
            dir: dir.to_owned(),
            processes: Vec::new(),
            logs: Vec::new(),
            live: Arc::new(Live::default()),
        };
        for n in 1..=processes {
            cluster
                .spawn(client, format!("p{n}"), Duration::ZERO)
                .await?;
        }
        Ok(cluster)
    }

    async fn spawn(
        &mut self,
        client: &Client,
        label: String,
        since: Duration,
    ) -> anyhow::Result<()> {
        let log = self.dir.join(format!("{label}.log"));
        let settings = server_settings();
        let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (server, ready) = ServerProcess::start(client, &self.url, &settings, Some(&log))
            .await
            .with_context(|| format!("start {label}"))?;
        println!(
            "process {label}: pid {} on {}, ready in {:.2} s",
            server.pid(),
            server.addr,
            ready.as_secs_f64()
        );
        self.live
            .addrs
            .write()
            .expect("addrs lock")
            .push(server.addr);
        self.live
            .pids
            .lock()
            .expect("pids lock")
            .push((label.clone(), server.pid(), since));
        self.logs.push(log);
        self.processes.push(Process { label, server });
        Ok(())
    }

    /// SIGKILL to the first process, then a new one on the same database.
    async fn kill_and_restart(&mut self, client: &Client, started: Instant) -> anyhow::Result<()> {
        let mut victim = self.processes.remove(0);
        let addr = victim.server.addr;
        self.live
            .addrs
            .write()
            .expect("addrs lock")
            .retain(|a| *a != addr);
        self.live
            .pids
            .lock()
            .expect("pids lock")
            .retain(|(label, _, _)| *label != victim.label);
        victim.server.kill()?;
        let at = started.elapsed();
        println!(
            "process {}: killed with SIGKILL at {:.1} s",
            victim.label,
            at.as_secs_f64()
        );
        self.spawn(client, format!("{}-restarted", victim.label), at)
            .await?;
        println!(
            "process {}-restarted: serving from {:.1} s",
            victim.label,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn logs(&self) -> Vec<PathBuf> {
        self.logs.clone()
    }

    /// None of the processes died by itself.
    fn check_alive(&mut self) -> Invariant {
        let mut dead = Vec::new();
        for process in &mut self.processes {
            match process.server.exited() {
                Ok(None) => {}
                Ok(Some(status)) => dead.push(format!("{} exited: {status}", process.label)),
                Err(err) => dead.push(format!("{}: {err:#}", process.label)),
            }
        }
        Invariant {
            name: "processes alive (but the one killed)",
            figure: if dead.is_empty() {
                format!(
                    "{} of {} running",
                    self.processes.len(),
                    self.processes.len()
                )
            } else {
                dead.join("; ")
            },
            pass: dead.is_empty(),
        }
    }

    fn stop(&mut self) {
        self.live.addrs.write().expect("addrs lock").clear();
        // Dropping a ServerProcess kills it.
        self.processes.clear();
    }
}

// --- GraphQL with fault accounting ---------------------------------------------------------

/// A response ≥ 500, or an `INTERNAL` error inside any response.
struct Fault {
    request_id: String,
    status: u16,
    codes: Vec<String>,
    addr: SocketAddr,
    body: String,
}

#[derive(Default)]
struct Faults {
    faults: Mutex<Vec<Fault>>,
    /// Requests that reached no process: to the killed one, or while none was up.
    unreachable: AtomicU64,
    /// Of those, to a process that was live when the error came back.
    unreachable_live: AtomicU64,
    requests: AtomicU64,
}

enum Reply {
    Data(Value),
    /// Error codes (and the first message) of a response that ran but failed.
    Errors(Vec<String>, String),
    /// No process answered.
    Unreachable(String),
}

#[derive(Clone)]
struct Gql {
    client: Client,
    token: Arc<str>,
    live: Arc<Live>,
    faults: Arc<Faults>,
}

impl Gql {
    /// One request to the `affinity`th live process.
    async fn call(&self, affinity: usize, query: &str, variables: Value) -> Reply {
        let Some(addr) = self.live.pick(affinity) else {
            self.faults.unreachable.fetch_add(1, Ordering::Relaxed);
            return Reply::Unreachable("no live process".into());
        };
        self.faults.requests.fetch_add(1, Ordering::Relaxed);
        let request_id = uuid::Uuid::now_v7().to_string();
        let sent = self
            .client
            .post(format!("http://{addr}/graphql"))
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
            .header("x-request-id", &request_id)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await;
        let answer = match sent {
            Ok(response) => {
                let status = response.status();
                response.bytes().await.map(|body| (status, body))
            }
            Err(err) => Err(err),
        };
        let (status, body) = match answer {
            Ok(answer) => answer,
            Err(err) => {
                self.faults.unreachable.fetch_add(1, Ordering::Relaxed);
                if self.live.is_live(addr) {
                    self.faults.unreachable_live.fetch_add(1, Ordering::Relaxed);
                }
                return Reply::Unreachable(format!("{err:#}"));
            }
        };
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        let errors = parsed
            .as_ref()
            .and_then(|b| b.get("errors"))
            .and_then(Value::as_array);
        let codes: Vec<String> = errors
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e["extensions"]["code"].as_str().unwrap_or("?").to_owned())
                    .collect()
            })
            .unwrap_or_default();
        if status.is_server_error() || codes.iter().any(|c| c == "INTERNAL") {
            self.faults.faults.lock().expect("faults lock").push(Fault {
                request_id,
                status: status.as_u16(),
                codes: codes.clone(),
                addr,
                body: String::from_utf8_lossy(&body).chars().take(300).collect(),
            });
        }
        let message = errors
            .and_then(|e| e.first())
            .and_then(|e| e["message"].as_str())
            .unwrap_or_default()
            .to_owned();
        if !codes.is_empty() {
            return Reply::Errors(codes, message);
        }
        match parsed.as_ref().and_then(|b| b.get("data")) {
            Some(data) if status.is_success() && !data.is_null() => Reply::Data(data.clone()),
            _ => Reply::Errors(
                vec![format!("HTTP {}", status.as_u16())],
                String::from_utf8_lossy(&body).chars().take(200).collect(),
            ),
        }
    }

    /// For setup and checks: retries while no process answers, fails on errors.
    async fn data(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let mut last = String::new();
        for attempt in 0..SETUP_ATTEMPTS {
            match self.call(attempt, query, variables.clone()).await {
                Reply::Data(data) => return Ok(data),
                Reply::Errors(codes, message) => {
                    bail!("{} ({message}) for {query}", codes.join(", "))
                }
                Reply::Unreachable(why) => last = why,
            }
            tokio::time::sleep(POLL).await;
        }
        bail!("no process answered: {last}")
    }
}

fn text(data: &Value, pointer: &str) -> anyhow::Result<String> {
    Ok(common::text_at(data, pointer)?.to_owned())
}

fn int(data: &Value, pointer: &str) -> anyhow::Result<i64> {
    data.pointer(pointer)
        .and_then(Value::as_i64)
        .ok_or_else(|| anyhow!("no integer at {pointer} in {data}"))
}

// --- setup -------------------------------------------------------------------------------

struct Setup {
    api: Gql,
    churn_customer: Arc<str>,
    demo: Arc<Vec<String>>,
    /// Credits of (system, deployment) from the catalog.
    catalog: HashMap<(String, String), i64>,
    /// The log's newest cursor before the demo connections were made.
    start_cursor: Option<String>,
    start_position: i64,
}

impl Setup {
    async fn make(
        client: &Client,
        live: &Arc<Live>,
        faults: &Arc<Faults>,
        receiver: &Receiver,
    ) -> anyhow::Result<Self> {
        let admin = Gql {
            client: client.clone(),
            token: ADMIN_TOKEN.into(),
            live: live.clone(),
            faults: faults.clone(),
        };
        let created = admin
            .data(CREATE_ACCOUNT, json!({ "credits": INITIAL_CREDITS }))
            .await?;
        let api = Gql {
            token: text(&created, "/createAccount/apiKey")?.into(),
            ..admin
        };
        let demo_customer = api
            .data(CREATE_CUSTOMER, json!({ "name": "Demo plant" }))
            .await?;
        let churn_customer = api
            .data(CREATE_CUSTOMER, json!({ "name": "Churn plant" }))
            .await?;
        let catalog = read_catalog(&api).await?;
        for (route, types) in ENDPOINT_TYPES.iter().enumerate() {
            let input = json!({ "input": { "url": receiver.url(route), "eventTypes": types } });
            let endpoint = api.data(CREATE_ENDPOINT, input).await?;
            let secret = text(&endpoint, "/createWebhookEndpoint/secret")?;
            let key = secret.strip_prefix("whsec_").context("whsec_ secret")?;
            receiver.add_secret(
                base64::engine::general_purpose::STANDARD
                    .decode(key)
                    .context("secret")?,
            );
        }
        let demo_customer = text(&demo_customer, "/createCustomer/id")?;
        let mut before = read_log(&api, None, None).await?;
        if before.is_empty() {
            // A cursor to start from: one connection made and undone.
            let credentials = json!({ "api_key": "start", "scale": 1 });
            let variables = json!({ "c": demo_customer, "d": "CLOUD", "creds": credentials });
            let connected = api.data(CONNECT, variables).await?;
            let id = text(&connected, "/connect/connection/id")?;
            api.data(DISCONNECT, json!({ "id": id })).await?;
            before = read_log(&api, None, None).await?;
        }
        let last = before.last().context("no event to start from")?;
        let start_cursor = Some(last.cursor.clone());
        let start_position = last.position;
        let mut demo = Vec::with_capacity(DEMO_CONNECTIONS);
        for index in 0..DEMO_CONNECTIONS {
            let (simulate, deployment) = demo_kind(index);
            let credentials = json!({
                "api_key": format!("soak-{index}"),
                "scale": DEMO_SCALE,
                "simulate": simulate,
            });
            let variables = json!({ "c": demo_customer, "d": deployment, "creds": credentials });
            let connected = api.data(CONNECT, variables).await?;
            demo.push(text(&connected, "/connect/connection/id")?);
        }
        Ok(Self {
            api,
            churn_customer: text(&churn_customer, "/createCustomer/id")?.into(),
            demo: Arc::new(demo),
            catalog,
            start_cursor,
            start_position,
        })
    }
}

/// What the `index`th demo connection simulates, and how it is deployed.
fn demo_kind(index: usize) -> (&'static str, &'static str) {
    let simulate = match index {
        0..12 => "none",
        12..15 => "flaky",
        15..18 => "rate_limited",
        _ => "auth_expired",
    };
    (
        simulate,
        if index % 4 == 1 {
            "ON_PREMISES"
        } else {
            "CLOUD"
        },
    )
}

async fn read_catalog(api: &Gql) -> anyhow::Result<HashMap<(String, String), i64>> {
    let data = api.data(CATALOG, json!({})).await?;
    let mut catalog = HashMap::new();
    for system in data["systems"].as_array().context("systems")? {
        let key = text(system, "/key")?;
        for (field, deployment) in [("cloud", "CLOUD"), ("onPremises", "ON_PREMISES")] {
            if let Some(cost) = system[field].as_i64() {
                catalog.insert((key.clone(), deployment.to_owned()), cost);
            }
        }
    }
    Ok(catalog)
}

// --- the event log -----------------------------------------------------------------------

struct LogEvent {
    id: String,
    cursor: String,
    position: i64,
    kind: String,
}

/// The events after `after` (all when `None`) that match `filter`, oldest first.
async fn read_log(
    api: &Gql,
    filter: Option<&Value>,
    after: Option<&str>,
) -> anyhow::Result<Vec<LogEvent>> {
    let mut events = Vec::new();
    let mut after = after.map_or(Value::Null, |a| Value::String(a.to_owned()));
    loop {
        let variables = json!({ "after": after, "filter": filter });
        let data = api.data(EVENTS_PAGE, variables).await?;
        let page = &data["events"];
        for node in page["nodes"].as_array().context("events nodes")? {
            let cursor = text(node, "/cursor")?;
            events.push(LogEvent {
                id: text(node, "/id")?,
                position: cursor_position(&cursor)?,
                cursor,
                kind: text(node, "/type")?,
            });
        }
        if page["pageInfo"]["hasNextPage"] != true {
            return Ok(events);
        }
        after = page["pageInfo"]["endCursor"].clone();
        ensure!(after.is_string(), "hasNextPage without endCursor");
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

// --- clients -----------------------------------------------------------------------------

/// Outcomes per operation: successes, and failures by code.
#[derive(Default)]
struct Ops {
    counts: Mutex<BTreeMap<&'static str, OpCount>>,
}

#[derive(Default)]
struct OpCount {
    ok: u64,
    unreachable: u64,
    errors: BTreeMap<String, u64>,
    samples: Vec<String>,
}

impl Ops {
    fn record(&self, op: &'static str, reply: &Reply) {
        let mut counts = self.counts.lock().expect("ops lock");
        let count = counts.entry(op).or_default();
        match reply {
            Reply::Data(_) => count.ok += 1,
            Reply::Unreachable(_) => count.unreachable += 1,
            Reply::Errors(codes, message) => {
                let code = codes.join(",");
                if count.samples.len() < 2 && !count.errors.contains_key(&code) {
                    count.samples.push(format!("{code}: {message}"));
                }
                *count.errors.entry(code).or_default() += 1;
            }
        }
    }

    fn report(&self, db: &str) {
        let counts = self.counts.lock().expect("ops lock");
        let total: u64 = counts
            .values()
            .map(|c| c.ok + c.unreachable + c.errors.values().sum::<u64>())
            .sum();
        println!("{db}: client operations: {total}");
        for (op, count) in counts.iter() {
            let errors: Vec<String> = count
                .errors
                .iter()
                .map(|(code, n)| format!("{code} x{n}"))
                .collect();
            println!(
                "  {op}: {} ok, {} unreachable, errors: [{}]",
                count.ok,
                count.unreachable,
                errors.join(", ")
            );
            for sample in &count.samples {
                println!("    e.g. {sample}");
            }
        }
    }
}

/// One of the 32 clients.
struct Worker {
    index: usize,
    gql: Gql,
    demo: Arc<Vec<String>>,
    customer: Arc<str>,
    ops: Arc<Ops>,
    until: Instant,
}

impl Worker {
    async fn run(self) {
        let mut rng = StdRng::seed_from_u64(self.index as u64);
        // This client's own live connections, oldest first.
        let mut held: Vec<String> = Vec::new();
        let mut turn = self.index;
        while Instant::now() < self.until {
            let pause = Duration::from_millis(rng.random_range(THINK_MS));
            tokio::time::sleep(pause).await;
            turn += 1;
            let demo = self.demo[rng.random_range(0..self.demo.len())].clone();
            let roll = rng.random_range(0..100);
            match roll {
                0..12 => {
                    self.op(turn, "read credits", READ_CREDITS, json!({})).await;
                }
                12..26 => {
                    self.op(
                        turn,
                        "read connection",
                        READ_CONNECTION,
                        json!({ "id": demo }),
                    )
                    .await;
                }
                26..38 => {
                    self.op(turn, "read assets", READ_ASSETS, json!({ "id": demo }))
                        .await;
                }
                38..50 => {
                    self.op(turn, "read events", READ_EVENTS, json!({ "id": demo }))
                        .await;
                }
                50..65 => {
                    // The first half connects unless it holds enough, the second half
                    // disconnects unless it holds none.
                    let connect = if roll < 58 {
                        held.len() < CHURN_HELD
                    } else {
                        held.is_empty()
                    };
                    if connect {
                        self.connect(turn, &mut rng, &mut held).await;
                    } else {
                        self.disconnect(turn, &mut held).await;
                    }
                }
                65..85 => {
                    let kind = if rng.random_range(0..4) == 0 {
                        "FULL"
                    } else {
                        "INCREMENTAL"
                    };
                    let variables = json!({ "id": demo, "k": kind });
                    self.op(turn, "triggerSync", TRIGGER, variables).await;
                }
                _ => {
                    self.op(turn, "checkConnection", CHECK, json!({ "id": demo }))
                        .await;
                }
            }
        }
    }

    /// Sends the operation; one that reached no process is sent again to the next live one
    /// (or, while none is up, after a pause), up to `RETRIES` times.
    async fn op(&self, turn: usize, name: &'static str, query: &str, variables: Value) -> Reply {
        let mut attempt = 0;
        loop {
            let reply = self
                .gql
                .call(turn + attempt, query, variables.clone())
                .await;
            self.ops.record(name, &reply);
            if !matches!(reply, Reply::Unreachable(_)) || attempt == RETRIES {
                return reply;
            }
            attempt += 1;
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    async fn connect(&self, turn: usize, rng: &mut StdRng, held: &mut Vec<String>) {
        let deployment = if rng.random_range(0..3) == 0 {
            "ON_PREMISES"
        } else {
            "CLOUD"
        };
        let credentials = json!({ "api_key": format!("churn-{}-{turn}", self.index), "scale": 1 });
        let variables = json!({ "c": &*self.customer, "d": deployment, "creds": credentials });
        if let Reply::Data(data) = self.op(turn, "connect", CONNECT, variables).await
            && let Ok(id) = text(&data, "/connect/connection/id")
        {
            held.push(id);
        }
    }

    /// Disconnects the oldest held connection; one whose answer was lost is tried again later.
    async fn disconnect(&self, turn: usize, held: &mut Vec<String>) {
        let Some(id) = held.first().cloned() else {
            return;
        };
        let reply = self
            .op(turn, "disconnect", DISCONNECT, json!({ "id": id }))
            .await;
        if !matches!(reply, Reply::Unreachable(_)) {
            held.remove(0);
        }
    }
}

// --- webhook receiver --------------------------------------------------------------------

#[derive(Default)]
struct ReceiverLog {
    requests: u64,
    refused: u64,
    /// Requests before the endpoint's secret was known.
    early: u64,
    bad_signatures: u64,
    bad_samples: Vec<String>,
    /// Requests per (endpoint, event id) so far: the attempt number of the next one.
    attempts: HashMap<(usize, String), u32>,
    /// Per endpoint: event id → requests answered 200.
    delivered: Vec<HashMap<String, u32>>,
}

/// The loopback receiver: `/hook/{n}` verifies the signature and answers 500 or 200.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    secrets: Arc<RwLock<Vec<Vec<u8>>>>,
    log: Arc<Mutex<ReceiverLog>>,
}

impl Receiver {
    async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the receiver")?;
        let receiver = Self {
            addr: listener.local_addr()?,
            secrets: Arc::default(),
            log: Arc::new(Mutex::new(ReceiverLog {
                delivered: vec![HashMap::new(); ENDPOINT_TYPES.len()],
                ..ReceiverLog::default()
            })),
        };
        let app = Router::new()
            .route("/hook/{route}", post(receive))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(receiver)
    }

    fn url(&self, route: usize) -> String {
        format!("http://{}/hook/{route}", self.addr)
    }

    /// The secret of the next endpoint created, known as soon as `createWebhookEndpoint` answers.
    fn add_secret(&self, secret: Vec<u8>) {
        self.secrets.write().expect("secrets lock").push(secret);
    }
}

async fn receive(
    State(receiver): State<Receiver>,
    UrlPath(route): UrlPath<usize>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let id = header("webhook-id");
    let verified = receiver
        .secrets
        .read()
        .expect("secrets lock")
        .get(route)
        .map(|secret| {
            verify(
                secret,
                &id,
                &header("webhook-timestamp"),
                &header("webhook-signature"),
                &body,
            )
        });
    let mut log = receiver.log.lock().expect("receiver lock");
    log.requests += 1;
    match verified {
        // A request that beat `createWebhookEndpoint`'s answer here: try again later.
        None => {
            log.early += 1;
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        Some(false) => {
            log.bad_signatures += 1;
            if log.bad_samples.len() < SAMPLES {
                log.bad_samples.push(format!("endpoint {route}, {id}"));
            }
            return StatusCode::BAD_REQUEST;
        }
        Some(true) => {}
    }
    let attempt = {
        let n = log.attempts.entry((route, id.clone())).or_default();
        *n += 1;
        *n
    };
    if refuses(route, &id, attempt) {
        log.refused += 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let Some(delivered) = log.delivered.get_mut(route) else {
        return StatusCode::NOT_FOUND;
    };
    *delivered.entry(id).or_default() += 1;
    StatusCode::OK
}

/// Standard Webhooks: HMAC-SHA256 of `{id}.{timestamp}.{body}`, any `v1,` signature, and a
/// timestamp near this clock.
fn verify(secret: &[u8], id: &str, timestamp: &str, signatures: &str, body: &[u8]) -> bool {
    let Ok(seconds) = timestamp.parse::<i64>() else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - seconds).abs() > SIGNATURE_TOLERANCE_SECS {
        return false;
    }
    signatures.split(' ').any(|signature| {
        let Some(signature) = signature
            .strip_prefix("v1,")
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
            return false;
        };
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        // Constant time.
        mac.verify_slice(&signature).is_ok()
    })
}

/// Whether the receiver answers 500 to this attempt: a fixed hash, true for `FAIL_PERCENT`.
fn refuses(route: usize, id: &str, attempt: u32) -> bool {
    // FNV-1a, then a SplitMix64 finalizer.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id
        .bytes()
        .chain(route.to_le_bytes())
        .chain(attempt.to_le_bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    hash % 100 < FAIL_PERCENT
}

/// The log events endpoint `route` subscribes to, after `start`.
fn wanted_by(route: usize, event: &LogEvent, start: i64) -> bool {
    let types = ENDPOINT_TYPES[route];
    event.position > start
        && event.kind != "WEBHOOK_TEST"
        && (types.is_empty() || types.contains(&event.kind.as_str()))
}

/// What was never received: (endpoint route, event), in log order.
fn webhooks_not_received<'a>(
    receiver: &Receiver,
    log: &'a [LogEvent],
    start: i64,
) -> Vec<(usize, &'a LogEvent)> {
    let received = receiver.log.lock().expect("receiver lock");
    let mut lacking = Vec::new();
    for route in 0..ENDPOINT_TYPES.len() {
        for event in log.iter().filter(|e| wanted_by(route, e, start)) {
            if !received.delivered[route].contains_key(&event.id) {
                lacking.push((route, event));
            }
        }
    }
    lacking
}

fn webhooks_missing(receiver: &Receiver, log: &[LogEvent], start: i64) -> usize {
    let received = receiver.log.lock().expect("receiver lock");
    (0..ENDPOINT_TYPES.len())
        .map(|route| {
            log.iter()
                .filter(|e| wanted_by(route, e, start))
                .filter(|e| !received.delivered[route].contains_key(&e.id))
                .count()
        })
        .sum()
}

fn check_webhooks(receiver: &Receiver, log: &[LogEvent], start: i64) -> Invariant {
    let missing = webhooks_missing(receiver, log, start);
    for (route, event) in webhooks_not_received(receiver, log, start).iter().take(20) {
        println!(
            "  not received: endpoint {route} ({:?}), event {} {} at position {}",
            ENDPOINT_TYPES[*route], event.id, event.kind, event.position
        );
    }
    let expected: usize = (0..ENDPOINT_TYPES.len())
        .map(|route| log.iter().filter(|e| wanted_by(route, e, start)).count())
        .sum();
    let received = receiver.log.lock().expect("receiver lock");
    let duplicates: u64 = received
        .delivered
        .iter()
        .flat_map(|d| d.values())
        .map(|n| u64::from(n.saturating_sub(1)))
        .sum();
    let ids: HashSet<&str> = log.iter().map(|e| e.id.as_str()).collect();
    let positions: HashSet<i64> = log.iter().map(|e| e.position).collect();
    let repeated = (log.len() - ids.len()) + (log.len() - positions.len());
    let ordered = log.windows(2).all(|w| w[0].position < w[1].position);
    let refused_percent = 100.0 * received.refused as f64 / received.requests.max(1) as f64;
    Invariant {
        name: "every event to every endpoint at least once, once in the log",
        figure: format!(
            "{expected} deliveries expected ({} events after the start), missing {missing}; {} requests, {} answered 500 ({refused_percent:.1} %), {duplicates} delivered more than once, {} before the secret was known, {} bad signatures{}; log: {} events, {repeated} repeated ids or positions, {}",
            log.len(),
            received.requests,
            received.refused,
            received.early,
            received.bad_signatures,
            if received.bad_samples.is_empty() {
                String::new()
            } else {
                format!(" ({})", received.bad_samples.join(", "))
            },
            log.len(),
            if ordered { "in order" } else { "OUT OF ORDER" },
        ),
        pass: missing == 0 && received.bad_signatures == 0 && repeated == 0 && ordered,
    }
}

// --- subscribers -------------------------------------------------------------------------

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    /// Positions in the order received.
    positions: Vec<i64>,
    /// Sockets opened after the first.
    reconnects: u64,
    problems: BTreeMap<String, u64>,
}

struct Subscribers {
    /// The distinct filters, and each subscriber's index into them.
    filters: Vec<Value>,
    filter_of: Vec<usize>,
    seen: Vec<Arc<Mutex<Seen>>>,
    tasks: Vec<JoinHandle<()>>,
}

fn subscriber_filter(index: usize, demo: &[String]) -> Value {
    if index.is_multiple_of(ACCOUNT_WIDE_EVERY) {
        Value::Null
    } else if index % 5 < 2 {
        json!({ "types": SUBSCRIBER_TYPES[index % SUBSCRIBER_TYPES.len()] })
    } else {
        json!({ "connectionId": demo[index % demo.len()] })
    }
}

async fn open_subscribers(
    setup: &Setup,
    live: &Arc<Live>,
    stop: &CancellationToken,
) -> Subscribers {
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let mut subscribers = Subscribers {
        filters: Vec::new(),
        filter_of: Vec::new(),
        seen: Vec::new(),
        tasks: Vec::new(),
    };
    let opened = Arc::new(AtomicU64::new(0));
    for index in 0..SUBSCRIBERS {
        let filter = subscriber_filter(index, &setup.demo);
        let position = match subscribers.filters.iter().position(|f| *f == filter) {
            Some(position) => position,
            None => {
                subscribers.filters.push(filter.clone());
                subscribers.filters.len() - 1
            }
        };
        subscribers.filter_of.push(position);
        let seen = Arc::new(Mutex::new(Seen::default()));
        subscribers.seen.push(seen.clone());
        let subscriber = Subscriber {
            index,
            live: live.clone(),
            key: setup.api.token.clone(),
            filter,
            cursor: setup.start_cursor.clone(),
            seen,
            gate: gate.clone(),
            stop: stop.clone(),
            opened: opened.clone(),
        };
        subscribers.tasks.push(tokio::spawn(subscriber.run()));
    }
    while opened.load(Ordering::Relaxed) < SUBSCRIBERS as u64
        && started.elapsed() < HANDSHAKE_TIMEOUT * 4
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "subscribers: {} of {SUBSCRIBERS} subscribed in {:.2} s ({} distinct filters)",
        opened.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        subscribers.filters.len()
    );
    subscribers
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Subscriber {
    index: usize,
    live: Arc<Live>,
    key: Arc<str>,
    filter: Value,
    /// The last cursor seen (at first the start cursor).
    cursor: Option<String>,
    seen: Arc<Mutex<Seen>>,
    gate: Arc<Semaphore>,
    stop: CancellationToken,
    opened: Arc<AtomicU64>,
}

impl Subscriber {
    async fn run(mut self) {
        let mut sockets = 0_u64;
        let mut attempt = self.index;
        while !self.stop.is_cancelled() {
            attempt += 1;
            let Some(addr) = self.live.pick(attempt) else {
                self.pause().await;
                continue;
            };
            let opened = {
                let _permit = self.gate.acquire().await;
                let opening = open(addr, &self.key, &self.filter, self.cursor.as_deref());
                tokio::time::timeout(HANDSHAKE_TIMEOUT, opening).await
            };
            let mut socket = match opened {
                Ok(Ok(socket)) => socket,
                Ok(Err(err)) => {
                    self.problem(format!("open: {}", short(&format!("{err:#}"))));
                    self.pause().await;
                    continue;
                }
                Err(_) => {
                    self.problem("open: timed out".into());
                    continue;
                }
            };
            sockets += 1;
            if sockets == 1 {
                self.opened.fetch_add(1, Ordering::Relaxed);
            } else {
                self.seen.lock().expect("seen lock").reconnects += 1;
            }
            match self.listen(&mut socket).await {
                None => {
                    let _ = socket.close(None).await;
                    return;
                }
                Some(problem) => {
                    self.problem(problem);
                    self.pause().await;
                }
            }
        }
    }

    async fn pause(&self) {
        tokio::select! {
            () = self.stop.cancelled() => {}
            () = tokio::time::sleep(RECONNECT_PAUSE) => {}
        }
    }

    fn problem(&self, problem: String) {
        *self
            .seen
            .lock()
            .expect("seen lock")
            .problems
            .entry(problem)
            .or_default() += 1;
    }

    /// Reads events until `stop` (`None`) or until the subscription ends (why).
    async fn listen(&mut self, socket: &mut Socket) -> Option<String> {
        loop {
            let message = tokio::select! {
                () = self.stop.cancelled() => return None,
                message = socket.next() => message,
            };
            let text = match message {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    return Some(format!(
                        "closed {}",
                        frame.map_or_else(
                            || "without a code".into(),
                            |f| u16::from(f.code).to_string()
                        )
                    ));
                }
                Some(Ok(_)) => continue,
                Some(Err(err)) => {
                    return Some(format!("socket error: {}", short(&err.to_string())));
                }
                None => return Some("socket ended".into()),
            };
            let Ok(message) = serde_json::from_str::<Value>(&text) else {
                return Some("a message that is not JSON".into());
            };
            match message["type"].as_str() {
                Some("next") => {
                    let cursor = message["payload"]["data"]["events"]["cursor"].as_str();
                    let Some(position) = cursor.and_then(|c| cursor_position(c).ok()) else {
                        return Some(format!("next without a cursor: {}", short(&text)));
                    };
                    self.cursor = cursor.map(str::to_owned);
                    self.seen
                        .lock()
                        .expect("seen lock")
                        .positions
                        .push(position);
                }
                Some("ping") => {
                    let pong = Message::Text(json!({ "type": "pong" }).to_string().into());
                    if socket.send(pong).await.is_err() {
                        return Some("pong failed".into());
                    }
                }
                Some("pong") => {}
                Some("error") => {
                    let code = message["payload"][0]["extensions"]["code"]
                        .as_str()
                        .unwrap_or("?");
                    return Some(format!("error {code}"));
                }
                Some("complete") => return Some("completed".into()),
                _ => return Some(format!("unexpected message: {}", short(&text))),
            }
        }
    }
}

fn short(text: &str) -> String {
    text.chars().take(120).collect()
}

/// Connects, authenticates, waits for the ack and subscribes after `cursor`.
async fn open(
    addr: SocketAddr,
    key: &str,
    filter: &Value,
    cursor: Option<&str>,
) -> anyhow::Result<Socket> {
    let mut request = format!("ws://{addr}/graphql/ws").into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut socket, _) = connect_async(request).await?;
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {key}") } });
    socket.send(Message::Text(init.to_string().into())).await?;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                let message: Value = serde_json::from_str(&text)?;
                match message["type"].as_str() {
                    Some("connection_ack") => break,
                    Some("ping") => {
                        let pong = json!({ "type": "pong" }).to_string();
                        socket.send(Message::Text(pong.into())).await?;
                    }
                    _ => bail!("expected connection_ack, got {message}"),
                }
            }
            Some(Ok(Message::Close(frame))) => bail!("closed before the ack: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(err.into()),
            None => bail!("socket ended before the ack"),
        }
    }
    let subscribe = json!({
        "id": "events",
        "type": "subscribe",
        "payload": { "query": SUBSCRIBE, "variables": { "filter": filter, "after": cursor } },
    });
    socket
        .send(Message::Text(subscribe.to_string().into()))
        .await?;
    Ok(socket)
}

/// Per distinct filter, the positions the `events` query holds after the start, up to `end`.
async fn expected_per_filter(
    setup: &Setup,
    subscribers: &Subscribers,
    end: i64,
) -> anyhow::Result<Vec<Vec<i64>>> {
    let mut expected = Vec::with_capacity(subscribers.filters.len());
    for filter in &subscribers.filters {
        let filter = (!filter.is_null()).then_some(filter);
        let events = read_log(&setup.api, filter, setup.start_cursor.as_deref()).await?;
        expected.push(
            events
                .iter()
                .map(|e| e.position)
                .filter(|p| *p <= end)
                .collect(),
        );
    }
    Ok(expected)
}

/// Positions expected by a subscriber that it has not seen.
fn subscriber_missing(seen: &Seen, expected: &[i64]) -> usize {
    let seen: HashSet<i64> = seen.positions.iter().copied().collect();
    expected.iter().filter(|p| !seen.contains(p)).count()
}

fn subscribers_missing(subscribers: &Subscribers, expected: &[Vec<i64>]) -> usize {
    subscribers
        .seen
        .iter()
        .zip(&subscribers.filter_of)
        .map(|(seen, filter)| {
            subscriber_missing(&seen.lock().expect("seen lock"), &expected[*filter])
        })
        .sum()
}

fn check_subscribers(subscribers: &Subscribers, expected: &[Vec<i64>], end: i64) -> Invariant {
    let mut missing = 0;
    let mut short_subscribers = 0;
    let mut duplicates = 0;
    let mut out_of_order = 0;
    let mut foreign = 0;
    let mut reconnects = 0;
    let mut delivered = 0;
    let mut problems: BTreeMap<String, u64> = BTreeMap::new();
    let expected_total: usize = subscribers
        .filter_of
        .iter()
        .map(|f| expected[*f].len())
        .sum();
    for (seen, filter) in subscribers.seen.iter().zip(&subscribers.filter_of) {
        let seen = seen.lock().expect("seen lock");
        let wanted: HashSet<i64> = expected[*filter].iter().copied().collect();
        let lacking = subscriber_missing(&seen, &expected[*filter]);
        missing += lacking;
        short_subscribers += usize::from(lacking > 0);
        let mut got = HashSet::new();
        let mut last = i64::MIN;
        for &position in &seen.positions {
            if position > end {
                continue;
            }
            delivered += 1;
            if !got.insert(position) {
                duplicates += 1;
            } else if !wanted.contains(&position) {
                foreign += 1;
            }
            if position <= last {
                out_of_order += 1;
            }
            last = last.max(position);
        }
        reconnects += seen.reconnects;
        for (problem, n) in &seen.problems {
            *problems.entry(problem.clone()).or_default() += n;
        }
    }
    let mut problems: Vec<_> = problems.into_iter().collect();
    problems.sort_by_key(|p| std::cmp::Reverse(p.1));
    let problems: Vec<String> = problems
        .iter()
        .take(SAMPLES)
        .map(|(p, n)| format!("{p} x{n}"))
        .collect();
    Invariant {
        name: "every subscriber saw every event of its filter, no gap",
        figure: format!(
            "{} subscribers, {expected_total} deliveries expected, {delivered} received; missing {missing} ({short_subscribers} subscribers with a gap), duplicates {duplicates}, foreign {foreign}, out of order {out_of_order}; {reconnects} reconnections with the last cursor; why sockets ended: [{}]",
            subscribers.seen.len(),
            problems.join(", ")
        ),
        pass: missing == 0 && foreign == 0,
    }
}

/// Waits until every webhook and every subscriber has what the log holds, for at most
/// `CATCH_UP_DEADLINE`; returns how long it waited.
async fn catch_up(
    receiver: &Receiver,
    log: &[LogEvent],
    setup: &Setup,
    subscribers: &Subscribers,
    expected: &[Vec<i64>],
) -> Duration {
    let started = Instant::now();
    loop {
        let webhooks = webhooks_missing(receiver, log, setup.start_position);
        let events = subscribers_missing(subscribers, expected);
        if webhooks + events == 0 || started.elapsed() > CATCH_UP_DEADLINE {
            if webhooks + events > 0 {
                println!(
                    "catch-up: gave up after {} s with {webhooks} webhook deliveries and {events} subscriber events missing",
                    CATCH_UP_DEADLINE.as_secs()
                );
            }
            return started.elapsed();
        }
        tokio::time::sleep(POLL).await;
    }
}

// --- runs --------------------------------------------------------------------------------

struct ConnectionRow {
    id: String,
    status: String,
    credit_cost: i64,
    deployment: String,
    system: String,
}

struct Settled {
    connections: Vec<ConnectionRow>,
    runs: usize,
    running: Vec<String>,
    queued: usize,
    waited: Duration,
}

impl Settled {
    fn invariant(&self) -> Invariant {
        Invariant {
            name: "no run left RUNNING without a live lease",
            figure: format!(
                "{} runs; {} RUNNING and {} QUEUED after {:.1} s (lease {SYNC_LEASE_SECS} s){}",
                self.runs,
                self.running.len(),
                self.queued,
                self.waited.as_secs_f64(),
                if self.running.is_empty() {
                    String::new()
                } else {
                    format!(": {}", self.running.join(", "))
                }
            ),
            pass: self.running.is_empty(),
        }
    }
}

/// Waits until no run is QUEUED or RUNNING, for at most `SETTLE_DEADLINE`.
async fn settle_runs(api: &Gql) -> anyhow::Result<Settled> {
    let started = Instant::now();
    loop {
        let (connections, runs) = read_connections(api).await?;
        let running: Vec<String> = runs
            .iter()
            .filter(|(_, status, _)| status == "RUNNING")
            .map(|(id, _, started_at)| format!("{id} (started {started_at})"))
            .collect();
        let queued = runs.iter().filter(|(_, s, _)| s == "QUEUED").count();
        if (running.is_empty() && queued == 0) || started.elapsed() > SETTLE_DEADLINE {
            return Ok(Settled {
                connections,
                runs: runs.len(),
                running,
                queued,
                waited: started.elapsed(),
            });
        }
        tokio::time::sleep(POLL * 2).await;
    }
}

type RunRow = (String, String, String);

/// Every connection, and every run of each: (id, status, startedAt).
async fn read_connections(api: &Gql) -> anyhow::Result<(Vec<ConnectionRow>, Vec<RunRow>)> {
    let mut connections = Vec::new();
    let mut runs = Vec::new();
    let mut after = Value::Null;
    loop {
        let data = api
            .data(CONNECTIONS_PAGE, json!({ "after": after }))
            .await?;
        let page = &data["connections"];
        for node in page["nodes"].as_array().context("connections")? {
            let id = text(node, "/id")?;
            let mut run_page = node["syncRuns"].clone();
            loop {
                for run in run_page["nodes"].as_array().context("syncRuns")? {
                    runs.push((
                        text(run, "/id")?,
                        text(run, "/status")?,
                        run["startedAt"].as_str().unwrap_or("-").to_owned(),
                    ));
                }
                if run_page["pageInfo"]["hasNextPage"] != true {
                    break;
                }
                let variables = json!({ "id": id, "after": run_page["pageInfo"]["endCursor"] });
                run_page = api.data(MORE_RUNS, variables).await?["connection"]["syncRuns"].clone();
            }
            connections.push(ConnectionRow {
                status: text(node, "/status")?,
                credit_cost: int(node, "/creditCost")?,
                deployment: text(node, "/deployment")?,
                system: text(node, "/system/key")?,
                id,
            });
        }
        if page["pageInfo"]["hasNextPage"] != true {
            return Ok((connections, runs));
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
}

// --- credits -----------------------------------------------------------------------------

async fn check_credits(setup: &Setup, connections: &[ConnectionRow]) -> anyhow::Result<Invariant> {
    let balance = setup.api.data(BALANCE, json!({})).await?;
    let at = |field: &str| int(&balance, &format!("/viewer/account/credits/{field}"));
    let (total, used, available) = (at("total")?, at("used")?, at("available")?);
    let mut mismatches = Vec::new();
    let mut live_cost = 0;
    let mut live = 0;
    let mut disconnected = 0;
    let cost_of: HashMap<&str, i64> = connections
        .iter()
        .map(|c| {
            let cost = setup
                .catalog
                .get(&(c.system.clone(), c.deployment.clone()))
                .copied()
                .unwrap_or(-1);
            (c.id.as_str(), cost)
        })
        .collect();
    for connection in connections {
        let cost = cost_of[connection.id.as_str()];
        if cost != connection.credit_cost {
            mismatches.push(format!(
                "{} costs {} but the catalog says {cost}",
                connection.id, connection.credit_cost
            ));
        }
        if connection.status == "DISCONNECTED" {
            disconnected += 1;
        } else {
            live += 1;
            live_cost += cost;
        }
    }
    // The ledger, oldest first: amounts per connection, the running balance.
    let mut entries = 0;
    let mut sum = 0;
    let mut breaks = 0;
    let mut balance_after = None;
    let mut per_connection: HashMap<String, (u32, u32, i64)> = HashMap::new();
    let mut others = 0;
    let mut opening_grant = None;
    let mut after = Value::Null;
    loop {
        let data = setup
            .api
            .data(LEDGER_PAGE, json!({ "after": after }))
            .await?;
        let page = &data["creditLedger"];
        for node in page["nodes"].as_array().context("ledger")? {
            let kind = text(node, "/kind")?;
            let amount = int(node, "/amount")?;
            let after_entry = int(node, "/balanceAfter")?;
            if balance_after.is_some_and(|b: i64| b + amount != after_entry) {
                breaks += 1;
            }
            balance_after = Some(after_entry);
            if entries == 0 {
                opening_grant = Some(kind == "GRANT" && amount == INITIAL_CREDITS);
            }
            entries += 1;
            sum += amount;
            match (kind.as_str(), node["connection"]["id"].as_str()) {
                ("CONNECT", Some(id)) => {
                    let entry = per_connection.entry(id.to_owned()).or_default();
                    entry.0 += 1;
                    entry.2 += amount;
                }
                ("DISCONNECT", Some(id)) => {
                    let entry = per_connection.entry(id.to_owned()).or_default();
                    entry.1 += 1;
                    entry.2 += amount;
                }
                _ => others += amount,
            }
        }
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    // The credits of `createAccount` are either the ledger's first entry or its opening balance.
    let opening = if opening_grant == Some(true) {
        0
    } else {
        INITIAL_CREDITS
    };
    let mut expect = |ok: bool, what: String| {
        if !ok {
            mismatches.push(what);
        }
    };
    expect(
        total == INITIAL_CREDITS,
        format!("total {total} != {INITIAL_CREDITS}"),
    );
    expect(
        used == live_cost,
        format!("used {used} != {live_cost}, the catalog cost of the {live} live connections"),
    );
    expect(
        available == total - used,
        format!("available {available} != total - used"),
    );
    expect(
        opening + sum == available,
        format!("opening {opening} + the ledger's amounts {sum} != available {available}"),
    );
    expect(
        balance_after == Some(available),
        format!("the last balanceAfter {balance_after:?} != available {available}"),
    );
    expect(
        breaks == 0,
        format!("{breaks} entries whose balanceAfter is not the previous one plus their amount"),
    );
    expect(
        opening + others == INITIAL_CREDITS,
        format!("opening {opening} + entries of no connection {others} != {INITIAL_CREDITS}"),
    );
    for connection in connections {
        let (connects, disconnects, net) =
            per_connection.remove(&connection.id).unwrap_or_default();
        let cost = cost_of[connection.id.as_str()];
        let gone = connection.status == "DISCONNECTED";
        let wanted = (1, u32::from(gone), if gone { 0 } else { -cost });
        if (connects, disconnects, net) != wanted {
            mismatches.push(format!(
                "{} ({}): {connects} CONNECT, {disconnects} DISCONNECT, net {net}; expected {wanted:?}",
                connection.id, connection.status
            ));
        }
    }
    for id in per_connection.keys() {
        mismatches.push(format!(
            "ledger entries for {id}, which the connections list lacks"
        ));
    }
    let figure = format!(
        "total {total}, used {used} = catalog cost of {live} live connections {live_cost}, available {available}; ledger {entries} entries adding up to {sum} over {} connections ({disconnected} disconnected); {} mismatches{}",
        connections.len(),
        mismatches.len(),
        if mismatches.is_empty() {
            String::new()
        } else {
            format!(
                ": {}",
                mismatches
                    .iter()
                    .take(SAMPLES)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        }
    );
    Ok(Invariant {
        name: "credits exact against the ledger",
        figure,
        pass: mismatches.is_empty(),
    })
}

// --- 5xx and the logs --------------------------------------------------------------------

fn read_lines(logs: &[PathBuf]) -> Vec<String> {
    logs.iter()
        .flat_map(|path| {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn is_error_line(line: &str) -> bool {
    line.contains("\"level\":\"ERROR\"")
}

/// An ERROR line of the server's own code (not tower-http's note that a response was a
/// 5xx), which names its cause.
fn is_cause(line: &str) -> Option<Value> {
    if !is_error_line(line) {
        return None;
    }
    let parsed: Value = serde_json::from_str(line).ok()?;
    parsed["target"]
        .as_str()
        .is_some_and(|t| t.starts_with("millwright"))
        .then_some(parsed)
}

fn check_faults(faults: &Faults, logs: &[PathBuf]) -> Invariant {
    let lines = read_lines(logs);
    let faults = faults.faults.lock().expect("faults lock");
    let mut status_5xx = 0;
    let mut not_internal = Vec::new();
    let mut uncaused = Vec::new();
    let mut causes: BTreeMap<String, u64> = BTreeMap::new();
    for fault in faults.iter() {
        if fault.status >= 500 {
            status_5xx += 1;
            if fault.codes.is_empty() || fault.codes.iter().any(|c| c != "INTERNAL") {
                not_internal.push(format!(
                    "HTTP {} from {}: {}",
                    fault.status, fault.addr, fault.body
                ));
            }
        }
        let cause = lines
            .iter()
            .filter(|line| line.contains(&fault.request_id))
            .find_map(|line| is_cause(line));
        match cause {
            Some(message) => {
                let what = format!(
                    "{}: {}",
                    message["message"].as_str().unwrap_or("?"),
                    message["error"].as_str().unwrap_or("?")
                );
                *causes.entry(short(&what)).or_default() += 1;
            }
            None => uncaused.push(format!(
                "HTTP {} {:?} request {}",
                fault.status, fault.codes, fault.request_id
            )),
        }
    }
    let internal_in_200 = faults.len() - status_5xx;
    let mut figure = format!(
        "{status_5xx} responses >= 500 ({} not INTERNAL), {internal_in_200} INTERNAL errors in 200 answers; {} without a logged cause",
        not_internal.len(),
        uncaused.len()
    );
    for sample in not_internal.iter().chain(&uncaused).take(SAMPLES) {
        figure.push_str(&format!("; e.g. {sample}"));
    }
    for (cause, n) in &causes {
        figure.push_str(&format!("; cause x{n}: {cause}"));
    }
    Invariant {
        name: "no 5xx that is not INTERNAL with a logged cause",
        figure,
        pass: not_internal.is_empty() && uncaused.is_empty(),
    }
}

/// ERROR and WARN lines per log, and the distinct ERROR messages.
fn report_logs(db: &str, logs: &[PathBuf]) {
    for path in logs {
        let lines = read_lines(std::slice::from_ref(path));
        let errors: Vec<&String> = lines.iter().filter(|l| is_error_line(l)).collect();
        let warnings = lines
            .iter()
            .filter(|l| l.contains("\"level\":\"WARN\""))
            .count();
        let panics = lines.iter().filter(|l| l.contains("panicked")).count();
        let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
        for line in &errors {
            let message: Value = serde_json::from_str(line).unwrap_or_default();
            let what = format!(
                "{} {}",
                message["message"].as_str().unwrap_or("?"),
                message["error"].as_str().unwrap_or("")
            );
            *kinds.entry(short(&what)).or_default() += 1;
        }
        println!(
            "{db}: log {}: {} ERROR, {warnings} WARN, {panics} panics",
            path.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            errors.len()
        );
        for (kind, n) in kinds.iter().take(SAMPLES * 2) {
            println!("  ERROR x{n}: {kind}");
        }
    }
}

// --- RSS ---------------------------------------------------------------------------------

struct RssSample {
    label: String,
    at: Duration,
    kib: u64,
}

/// Every second, the RSS of each live process, until cancelled.
fn sample_rss(
    live: Arc<Live>,
    started: Instant,
) -> (Arc<Mutex<Vec<RssSample>>>, CancellationToken) {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let (into, until) = (samples.clone(), stop.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                () = until.cancelled() => return,
                _ = tick.tick() => {}
            }
            let pids = live.pids.lock().expect("pids lock").clone();
            for (label, pid, _) in pids {
                if let Some(kib) = rss_kib(pid) {
                    into.lock().expect("rss lock").push(RssSample {
                        label,
                        at: started.elapsed(),
                        kib,
                    });
                }
            }
        }
    });
    (samples, stop)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Per process, max ÷ min of the RSS from `from` on (the whole life of one that started later).
fn check_rss(samples: &[RssSample], from: Duration) -> Vec<Invariant> {
    let mut labels: Vec<&str> = Vec::new();
    for sample in samples {
        if !labels.contains(&sample.label.as_str()) {
            labels.push(&sample.label);
        }
    }
    let mut invariants = Vec::new();
    for label in labels {
        let all: Vec<&RssSample> = samples.iter().filter(|s| s.label == label).collect();
        let born = all.first().map_or(Duration::ZERO, |s| s.at);
        if all.last().is_some_and(|s| s.at < from) {
            // The killed process: gone before the window.
            let last = all.last().map_or(0, |s| s.kib);
            println!(
                "RSS: {label}: {:.1} MB when it was killed (not judged)",
                mib(last)
            );
            continue;
        }
        // A process started inside the window is judged once it has warmed up.
        let start = if born > from {
            born + RESTART_WARM_UP
        } else {
            from
        };
        let since_birth = spread(all.iter().copied().filter(|s| s.at >= from));
        let window = spread(all.iter().copied().filter(|s| s.at >= start));
        invariants.push(Invariant {
            name: "RSS flat over the second half (within 10 %)",
            figure: format!(
                "{label}: {}{}",
                window.describe(start),
                if born > from {
                    format!(
                        " (from its restart at {:.0} s, warm-up included: {})",
                        born.as_secs_f64(),
                        since_birth.describe(born)
                    )
                } else {
                    String::new()
                }
            ),
            pass: window.samples > 1 && window.spread() <= RSS_TOLERANCE,
        });
    }
    invariants
}

/// Min, max, first and last of some RSS samples.
struct Spread {
    samples: usize,
    min: u64,
    max: u64,
    first: u64,
    last: u64,
}

fn spread<'a>(samples: impl Iterator<Item = &'a RssSample>) -> Spread {
    let mut spread = Spread {
        samples: 0,
        min: u64::MAX,
        max: 0,
        first: 0,
        last: 0,
    };
    for sample in samples {
        if spread.samples == 0 {
            spread.first = sample.kib;
        }
        spread.samples += 1;
        spread.min = spread.min.min(sample.kib);
        spread.max = spread.max.max(sample.kib);
        spread.last = sample.kib;
    }
    spread
}

impl Spread {
    fn spread(&self) -> f64 {
        self.max as f64 / self.min.max(1) as f64 - 1.0
    }

    fn describe(&self, from: Duration) -> String {
        if self.samples == 0 {
            return "no samples".into();
        }
        format!(
            "{} samples from {:.0} s: min {:.1} MB, max {:.1} MB (+{:.1} %), first {:.1} MB, last {:.1} MB",
            self.samples,
            from.as_secs_f64(),
            mib(self.min),
            mib(self.max),
            self.spread() * 100.0,
            mib(self.first),
            mib(self.last),
        )
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
