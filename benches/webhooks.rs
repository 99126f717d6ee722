//! Load benchmark for outbound webhooks.
//!
//! Live run: starts the real server in-process on a fresh SQLite file, with one account and
//! four webhook endpoints (all event types) pointing at a loopback axum receiver
//! (`/hook/0..3`) that answers 200 at once and records, for every request, its wall-clock
//! time of receipt and its `webhook-id`. It then commits 20,000 `credits.changed` events as
//! fast as it can (200 batched GraphQL requests of 100 `grantCredits` each, from 4 concurrent
//! senders) and waits until the 80,000 expected deliveries have arrived (at most 5 minutes):
//!
//! - deliveries per second: 80,000 ÷ the time from the first grant sent to the last delivery
//!   received;
//! - latency from commit to receipt, p50 / p99 / max: receipt time minus the event's
//!   `occurredAt` (read back over GraphQL, set just before its commit), matched by
//!   `webhook-id` = event id;
//! - duplicates (one `webhook-id` received twice by one endpoint) and missing deliveries;
//! - where the time goes, from the database: event → delivery row (dispatch), delivery row →
//!   the attempt's start (claim, loading the event, waiting for a permit), → receipt (signing,
//!   sending); SQL statements per delivery from `/metrics`; how busy the
//!   machine and this process were (`/proc`).
//!
//! Backlog run: the same on a second fresh file, but the events are committed by a server
//! with its workers off, then a server with workers is started on that file: how fast 80,000
//! queued deliveries drain when no API writes compete for SQLite's write lock.
//!
//! Then the ceiling: a plain reqwest loop posting a body of the same size with the same
//! headers to the same receiver, with as many concurrent senders as the server has delivery
//! workers (32), for 80,000 requests or 10 seconds; the median of 3 rounds. The live rate is
//! reported as a share of it.
//!
//! Paced run (issue #20): on a fresh database, 16 clients send single `grantCredits`
//! requests on a fixed schedule of 625 a second for 10 seconds (2,500 deliveries a second to
//! the 4 endpoints); each delivery's latency is measured from its request's scheduled send
//! time to its receipt (matched by the balance the request returned, which the event carries
//! as `data.available`), so a server that falls behind is charged for the wait. The request's
//! own time is reported beside it. Target on PostgreSQL: p99 at most 50 ms.
//!
//! Two processes (issue #20, PostgreSQL only): the live run with one `millwright serve`
//! process on a fresh database, then with two on another, an account on each committing the
//! same events at once (160,000 deliveries); then the backlog drain with one process, and
//! with two started together on the backlog (timed from the first delivery to the last). Deliveries/s of two against one: on 2 cores the
//! two share the machine, so what is shown is that nothing serializes them (two not below
//! one). `WEBHOOKS_RUNS=processes` runs only these, `WEBHOOKS_RUNS=drains` only their drains;
//! `WEBHOOKS_PROCESS_LOGS=DIR` writes each process's output to a file in `DIR`, and
//! `BENCH_SERVER_BIN=PATH` runs another build of the server in them (to compare two builds
//! on the same machine in one session).
//!
//! All of it runs on SQLite (a fresh temp file) and then on PostgreSQL (a fresh database on
//! `MILLWRIGHT_TEST_POSTGRES_URL` or `127.0.0.1:5432`); `WEBHOOKS_DATABASES=sqlite` (or
//! `postgres`) measures one, and `WEBHOOKS_RUNS=paced` runs only the paced run (for
//! exploring). Targets: SQLite at least 2,000 deliveries/s live; PostgreSQL
//! paced p99 at most 50 ms and a backlog drain of at least 10,000 deliveries/s.
//!
//! Run with `cargo bench --bench webhooks` (about 6 minutes); everything is reported on
//! stdout, only 127.0.0.1 is used, and the process exits non-zero when a delivery is missing
//! or duplicated.

#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

mod common;

use std::{
    collections::HashMap,
    net::SocketAddr,
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};
use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use chrono::{DateTime, Utc};
use entity::{event, webhook_attempt, webhook_delivery, webhook_endpoint};
use millwright::config::Config;
use reqwest::{Client, header::CONTENT_TYPE};
use sea_orm::{Database, DatabaseConnection, EntityTrait};
use serde::Deserialize;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpListener;
use uuid::Uuid;

use common::{
    Api, ScratchPostgres, Server, ServerProcess, create_account, pooled_http_client, server_config,
};

const ENDPOINTS: usize = 4;
const BATCHES: usize = 200;
const GRANTS_PER_BATCH: usize = 100;
const EVENTS: usize = BATCHES * GRANTS_PER_BATCH;
const EXPECTED: usize = EVENTS * ENDPOINTS;
const GRANT_SENDERS: usize = 4;
const EVENTS_PAGE: usize = 100;

const DELIVERY_DEADLINE: Duration = Duration::from_secs(300);
/// Give up earlier when nothing arrives for this long (longer than the 60 s lease).
const STALL_DEADLINE: Duration = Duration::from_secs(90);
const WAIT_POLL: Duration = Duration::from_millis(10);
/// After the last expected delivery, late duplicates are still counted for this long.
const DUPLICATE_GRACE: Duration = Duration::from_secs(2);

const CEILING_REQUESTS: usize = EXPECTED;
const CEILING_LENGTH: Duration = Duration::from_secs(10);
const CEILING_ROUNDS: usize = 3;

const TARGET_DELIVERIES_PER_SECOND: f64 = 2_000.0;
const TARGET_CEILING_PERCENT: f64 = 30.0;

/// The paced run: single grants at this rate, from this many clients, for this long.
const PACED_GRANTS_PER_SECOND: f64 = 625.0;
const PACED_CLIENTS: usize = 16;
const PACED_LENGTH: Duration = Duration::from_secs(10);
const TARGET_POSTGRES_P99_MS: f64 = 50.0;
const TARGET_POSTGRES_DRAIN: f64 = 10_000.0;

const CREATE_ENDPOINT: &str = "mutation($input: CreateWebhookEndpointInput!) {
    createWebhookEndpoint(input: $input) { endpoint { id } } }";
const GRANT: &str = "mutation($id: ID!) { grantCredits(accountId: $id, amount: 1) { total } }";
const EVENTS_QUERY: &str = "query($after: String) {
    events(first: 100, after: $after, filter: {types: [CREDITS_CHANGED]}) {
        nodes { id occurredAt }
        pageInfo { hasNextPage endCursor }
    }
}";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            println!("result: FAILED (deliveries missing or duplicated, see above)");
            ExitCode::FAILURE
        }
        Err(err) => {
            println!("result: FAILED: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The whole bench; true when every delivery arrived exactly once.
async fn run() -> anyhow::Result<bool> {
    let receiver = Receiver::start().await?;
    let only = std::env::var("WEBHOOKS_DATABASES").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|only| only.contains(name));
    let runs = std::env::var("WEBHOOKS_RUNS").ok();
    let paced_only = runs.as_deref() == Some("paced");
    if let Some(which @ ("processes" | "drains")) = runs.as_deref() {
        let processes = measure_processes(&receiver, which == "processes").await?;
        report_processes(&processes);
        return Ok(processes.exact);
    }
    let mut results = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if !wanted(backend.name()) {
            continue;
        }
        let name = backend.name();
        report_config(backend, &config(String::new()));
        if paced_only {
            println!("-- {name} paced: single grants on a schedule, latency from each request");
            measure_paced(backend, &receiver).await?;
            continue;
        }
        println!("-- {name} live: events committed while the workers deliver");
        let live = measure_live(backend, &receiver).await?;
        println!("-- {name} paced: single grants on a schedule, latency from each request");
        let paced = measure_paced(backend, &receiver).await?;
        println!(
            "-- {name} backlog: the same events committed with the workers off, then delivered"
        );
        let (backlog, costs) = measure_backlog(backend, &receiver).await?;
        results.push((backend, live, paced, backlog, costs));
    }
    if paced_only {
        return Ok(true);
    }
    let processes = if wanted(Backend::Postgres.name()) {
        Some(measure_processes(&receiver, true).await?)
    } else {
        None
    };
    println!("-- ceiling: a plain reqwest loop to the same receiver");
    let ceiling = measure_ceiling(&receiver).await?;
    let mut exact = processes.as_ref().is_none_or(|p| p.exact);
    for (backend, live, paced, backlog, costs) in &results {
        println!("-- {}", backend.name());
        report_cpu_bound(costs, &ceiling);
        report_targets(*backend, live, paced, backlog, &ceiling);
        exact &= live.exact() && paced.figures.exact() && backlog.exact();
    }
    if let Some(processes) = &processes {
        report_processes(processes);
    }
    Ok(exact)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A fresh database for one run, gone when [`FreshDatabase::drop`] is awaited.
struct FreshDatabase {
    url: String,
    _dir: Option<TempDir>,
    postgres: Option<ScratchPostgres>,
}

impl FreshDatabase {
    async fn create(backend: Backend) -> anyhow::Result<Self> {
        Ok(match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().context("temp dir for the database")?;
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("bench.db").display()
                );
                Self {
                    url,
                    _dir: Some(dir),
                    postgres: None,
                }
            }
            Backend::Postgres => {
                let scratch = ScratchPostgres::create("mw_bench_webhooks").await?;
                Self {
                    url: scratch.url.clone(),
                    _dir: None,
                    postgres: Some(scratch),
                }
            }
        })
    }

    async fn drop(self) {
        if let Some(postgres) = self.postgres {
            postgres.drop().await;
        }
    }
}

// --- server ------------------------------------------------------------------------------

fn config(database_url: String) -> Config {
    let mut config = server_config(database_url);
    config.webhooks.allow_private_targets = true;
    config.http.max_batch_size = GRANTS_PER_BATCH;
    config.http.max_query_complexity = 5000;
    if let Some(n) = std::env::var("WEBHOOKS_DB_CONNECTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        config.database.max_connections = n;
    }
    config
}

fn report_config(backend: Backend, config: &Config) {
    println!(
        "server: {}, webhook_workers {}, webhook_max_in_flight_per_endpoint {}, database_max_connections {}, webhook_lease_secs {}",
        backend.name(),
        config.webhooks.workers,
        config.webhooks.max_in_flight_per_endpoint,
        config.database.max_connections,
        config.webhooks.lease_secs,
    );
}

// --- receiver ----------------------------------------------------------------------------

/// One request as the receiver saw it.
struct Receipt {
    route: usize,
    webhook_id: String,
    at: DateTime<Utc>,
    instant: Instant,
    body: Bytes,
}

/// The loopback webhook receiver: `/hook/{n}` answers 200 and records the request.
#[derive(Clone)]
struct Receiver {
    receipts: Arc<Mutex<Vec<Receipt>>>,
    count: Arc<AtomicUsize>,
    addr: SocketAddr,
}

impl Receiver {
    async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the receiver")?;
        let receiver = Receiver {
            receipts: Arc::new(Mutex::new(Vec::with_capacity(EXPECTED))),
            count: Arc::new(AtomicUsize::new(0)),
            addr: listener.local_addr()?,
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

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Everything received so far; the receiver starts empty again.
    fn take(&self) -> Vec<Receipt> {
        let mut receipts = self.receipts.lock().expect("receipts lock");
        self.count.store(0, Ordering::SeqCst);
        std::mem::take(&mut *receipts)
    }
}

async fn receive(
    State(receiver): State<Receiver>,
    Path(route): Path<usize>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let at = Utc::now();
    let instant = Instant::now();
    let webhook_id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    receiver
        .receipts
        .lock()
        .expect("receipts lock")
        .push(Receipt {
            route,
            webhook_id,
            at,
            instant,
            body,
        });
    receiver.count.fetch_add(1, Ordering::SeqCst);
    StatusCode::OK
}

// --- GraphQL -----------------------------------------------------------------------------

fn check_errors(response: &Value) -> anyhow::Result<()> {
    match response.get("errors") {
        Some(errors) => bail!("GraphQL errors: {errors}"),
        None => Ok(()),
    }
}

/// One account and its endpoints, one per receiver route; returns (admin, account, account id).
async fn set_up(
    client: &Client,
    addr: SocketAddr,
    receiver: &Receiver,
) -> anyhow::Result<(Api, Api, String)> {
    let created = create_account(client, addr, "bench", 0).await?;
    for route in 0..ENDPOINTS {
        let input = json!({ "input": { "url": receiver.url(route), "eventTypes": [] } });
        created.api.data(CREATE_ENDPOINT, input).await?;
    }
    Ok((Api::admin(client, addr), created.api, created.id))
}

// --- the measured run --------------------------------------------------------------------

/// What the server run produced.
struct ServerFigures {
    deliveries_per_second: f64,
    missing: usize,
    duplicates: usize,
    unexpected: usize,
}

impl ServerFigures {
    fn exact(&self) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.unexpected == 0
    }
}

/// Events committed while the workers deliver: the headline figures.
async fn measure_live(backend: Backend, receiver: &Receiver) -> anyhow::Result<ServerFigures> {
    let database = FreshDatabase::create(backend).await?;
    let measured = match Server::start("server", config(database.url.clone())).await {
        Ok(server) => {
            let measured = live_run(server.addr, receiver, &database.url).await;
            server.stop().await;
            measured
        }
        Err(err) => Err(err),
    };
    database.drop().await;
    measured
}

async fn live_run(
    addr: SocketAddr,
    receiver: &Receiver,
    database_url: &str,
) -> anyhow::Result<ServerFigures> {
    let client = pooled_http_client(GRANT_SENDERS * 2)?;
    let (admin, account, account_id) = set_up(&client, addr, receiver).await?;
    let statements_before = db_statements(&client, addr).await?;
    let cpu = CpuClock::now();
    let grants = commit_events(&admin, &account_id).await?;
    let waited = wait_for_deliveries(receiver, grants.started).await;
    cpu.report("grants and deliveries");
    tokio::time::sleep(DUPLICATE_GRACE).await;
    let statements = db_statements(&client, addr).await? - statements_before;
    let receipts = receiver.take();
    let occurred = read_events(&account).await?;
    let tally = Tally::of(&receipts, &occurred);
    let figures = report_tally(
        &tally,
        &waited,
        grants.started,
        "the first grant sent",
        EVENTS,
    );
    report_overlap(&grants, &receipts, &waited, &tally);
    println!(
        "latency commit -> receipt: {} ({} deliveries)",
        spread(&tally.latencies_ms),
        tally.latencies_ms.len()
    );
    report_timeline(&receipts, grants.started);
    report_statements(statements, tally.unique, "grants included");
    let stages = Stages::read(database_url, &receipts).await?;
    stages.report();
    Ok(figures)
}

/// What this process's CPU spent, measured in the backlog run where the two are apart: per
/// grant committed (server, bench client), and per delivery drained (server, receiver).
struct CpuCosts {
    per_grant: Duration,
    per_delivery: Duration,
}

/// The same events committed with the workers off, then a server with workers started on
/// that database: how fast a backlog drains, without grants competing for the write lock.
async fn measure_backlog(
    backend: Backend,
    receiver: &Receiver,
) -> anyhow::Result<(ServerFigures, CpuCosts)> {
    let database = FreshDatabase::create(backend).await?;
    let measured = backlog_run(&database.url, receiver).await;
    database.drop().await;
    measured
}

async fn backlog_run(
    database_url: &str,
    receiver: &Receiver,
) -> anyhow::Result<(ServerFigures, CpuCosts)> {
    let database_url = database_url.to_owned();
    let mut quiet = config(database_url.clone());
    quiet.process.workers = false;
    let server = Server::start("server", quiet).await?;
    let produced = produce_backlog(server.addr, receiver).await;
    server.stop().await;
    let (key, grant_cpu) = produced?;
    ensure!(
        receiver.count() == 0,
        "deliveries sent with the workers off"
    );
    let started = Instant::now();
    let server = Server::start("server", config(database_url)).await?;
    let drained = drain_backlog(server.addr, receiver, key, started).await;
    server.stop().await;
    let (figures, delivery_cpu) = drained?;
    let costs = CpuCosts {
        per_grant: Duration::from_secs_f64(grant_cpu / EVENTS as f64),
        per_delivery: Duration::from_secs_f64(delivery_cpu / EXPECTED as f64),
    };
    Ok((figures, costs))
}

/// Account, endpoints and events on a server without workers; returns the account's key and
/// the CPU seconds the grants took.
async fn produce_backlog(addr: SocketAddr, receiver: &Receiver) -> anyhow::Result<(String, f64)> {
    let client = pooled_http_client(GRANT_SENDERS * 2)?;
    let (admin, account, account_id) = set_up(&client, addr, receiver).await?;
    let cpu = CpuClock::now();
    commit_events(&admin, &account_id).await?;
    let used = cpu.report("grants, workers off");
    Ok((account.token().to_owned(), used))
}

async fn drain_backlog(
    addr: SocketAddr,
    receiver: &Receiver,
    key: String,
    started: Instant,
) -> anyhow::Result<(ServerFigures, f64)> {
    let cpu = CpuClock::now();
    let waited = wait_for_deliveries(receiver, started).await;
    let used = cpu.report("draining");
    tokio::time::sleep(DUPLICATE_GRACE).await;
    let client = pooled_http_client(GRANT_SENDERS * 2)?;
    let statements = db_statements(&client, addr).await?;
    let receipts = receiver.take();
    let account = Api::new(&client, addr, &key);
    let occurred = read_events(&account).await?;
    let tally = Tally::of(&receipts, &occurred);
    let figures = report_tally(&tally, &waited, started, "the server's start", EVENTS);
    report_timeline(&receipts, started);
    report_statements(statements, tally.unique, "migration and dispatch included");
    Ok((figures, used))
}

/// When the grants were sent and committed.
struct Grants {
    started: Instant,
    committed: Instant,
}

/// Commits `EVENTS` events: batches of grants from a few concurrent senders.
async fn commit_events(admin: &Api, account_id: &str) -> anyhow::Result<Grants> {
    let batch: Vec<Value> = (0..GRANTS_PER_BATCH)
        .map(|_| json!({ "query": GRANT, "variables": { "id": account_id } }))
        .collect();
    let batch = Arc::new(Value::Array(batch));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let senders: Vec<_> = (0..GRANT_SENDERS)
        .map(|_| tokio::spawn(send_batches(admin.clone(), batch.clone(), next.clone())))
        .collect();
    for sender in senders {
        sender.await.context("grant sender")??;
    }
    let committed = Instant::now();
    println!(
        "grants: {EVENTS} events committed in {:.2} s ({:.0} events/s; {BATCHES} requests of {GRANTS_PER_BATCH} grants, {GRANT_SENDERS} senders)",
        (committed - started).as_secs_f64(),
        EVENTS as f64 / (committed - started).as_secs_f64(),
    );
    Ok(Grants { started, committed })
}

async fn send_batches(admin: Api, batch: Arc<Value>, next: Arc<AtomicUsize>) -> anyhow::Result<()> {
    while next.fetch_add(1, Ordering::SeqCst) < BATCHES {
        let responses = admin.post(&batch).await?;
        let responses = responses
            .as_array()
            .ok_or_else(|| anyhow!("a batch answered {responses}"))?;
        ensure!(
            responses.len() == GRANTS_PER_BATCH,
            "a batch of {GRANTS_PER_BATCH} answered {} responses",
            responses.len()
        );
        responses.iter().try_for_each(check_errors)?;
    }
    Ok(())
}

/// How the wait for deliveries ended.
struct Waited {
    complete: bool,
    elapsed: Duration,
}

/// Waits until `EXPECTED` requests arrived, nothing arrived for a while, or the deadline.
async fn wait_for_deliveries(receiver: &Receiver, started: Instant) -> Waited {
    wait_for(receiver, EXPECTED, started).await
}

/// Waits until `expected` requests arrived, nothing arrived for a while, or the deadline.
async fn wait_for(receiver: &Receiver, expected: usize, started: Instant) -> Waited {
    let mut last_count = 0;
    let mut last_progress = Instant::now();
    loop {
        let count = receiver.count();
        if count >= expected {
            return Waited {
                complete: true,
                elapsed: started.elapsed(),
            };
        }
        if count != last_count {
            (last_count, last_progress) = (count, Instant::now());
        }
        if started.elapsed() >= DELIVERY_DEADLINE || last_progress.elapsed() >= STALL_DEADLINE {
            return Waited {
                complete: false,
                elapsed: started.elapsed(),
            };
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventNode {
    id: String,
    occurred_at: DateTime<Utc>,
}

/// Every `credits.changed` event of the account: id → `occurredAt`.
async fn read_events(account: &Api) -> anyhow::Result<HashMap<String, DateTime<Utc>>> {
    let mut occurred = HashMap::with_capacity(EVENTS);
    let mut after = Value::Null;
    loop {
        let data = account
            .data(EVENTS_QUERY, json!({ "after": after }))
            .await?;
        let page = &data["events"];
        let nodes: Vec<EventNode> = serde_json::from_value(page["nodes"].clone())?;
        ensure!(nodes.len() <= EVENTS_PAGE, "a page larger than asked");
        occurred.extend(nodes.into_iter().map(|n| (n.id, n.occurred_at)));
        if page["pageInfo"]["hasNextPage"] != json!(true) {
            return Ok(occurred);
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
}

async fn db_statements(client: &Client, addr: SocketAddr) -> anyhow::Result<u64> {
    let text = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|line| line.strip_prefix("millwright_db_statements_total "))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| anyhow!("no millwright_db_statements_total in /metrics"))
}

// --- figures -----------------------------------------------------------------------------

/// The receipts matched against the events.
struct Tally {
    /// Distinct (endpoint, event) pairs received.
    unique: usize,
    duplicates: usize,
    /// Requests whose `webhook-id` is not one of the account's events.
    unexpected: usize,
    missing: usize,
    events: usize,
    /// Commit to receipt of the first receipt of each pair, in ms, sorted.
    latencies_ms: Vec<f64>,
    /// When the last pair was first received.
    last: Option<Instant>,
}

impl Tally {
    fn of(receipts: &[Receipt], occurred: &HashMap<String, DateTime<Utc>>) -> Self {
        let mut seen: HashMap<(usize, &str), usize> = HashMap::with_capacity(EXPECTED);
        let mut latencies_ms = Vec::with_capacity(EXPECTED);
        let (mut unexpected, mut last) = (0, None::<Instant>);
        for receipt in receipts {
            let Some(committed) = occurred.get(&receipt.webhook_id) else {
                unexpected += 1;
                continue;
            };
            let times = seen
                .entry((receipt.route, receipt.webhook_id.as_str()))
                .or_default();
            *times += 1;
            if *times == 1 {
                latencies_ms.push(millis(receipt.at - *committed));
                last = Some(last.map_or(receipt.instant, |l| l.max(receipt.instant)));
            }
        }
        latencies_ms.sort_by(f64::total_cmp);
        let unique = seen.len();
        Tally {
            unique,
            duplicates: seen.values().map(|n| n - 1).sum(),
            unexpected,
            missing: (occurred.len() * ENDPOINTS).saturating_sub(unique),
            events: occurred.len(),
            latencies_ms,
            last,
        }
    }
}

fn millis(delta: chrono::TimeDelta) -> f64 {
    delta.num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], percent: usize) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn spread(sorted: &[f64]) -> String {
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(sorted, 50),
        percentile(sorted, 99),
        sorted.last().copied().unwrap_or(f64::NAN)
    )
}

/// Rate and correctness; the rate is over `from` to the last first receipt.
fn report_tally(
    tally: &Tally,
    waited: &Waited,
    from: Instant,
    what: &str,
    events: usize,
) -> ServerFigures {
    let expected = events * ENDPOINTS;
    let span = match (waited.complete, tally.last) {
        (true, Some(last)) => last - from,
        _ => waited.elapsed,
    };
    let deliveries_per_second = tally.unique as f64 / span.as_secs_f64();
    println!(
        "deliveries: {} of {expected} received in {:.2} s from {what}: {deliveries_per_second:.0} deliveries/s{}",
        tally.unique,
        span.as_secs_f64(),
        if waited.complete {
            ""
        } else {
            " (INCOMPLETE: gave up waiting)"
        },
    );
    println!(
        "correctness: {} events, duplicates {}, missing {}, unexpected {}",
        tally.events, tally.duplicates, tally.missing, tally.unexpected
    );
    ServerFigures {
        deliveries_per_second,
        missing: tally.missing + events.saturating_sub(tally.events) * ENDPOINTS,
        duplicates: tally.duplicates,
        unexpected: tally.unexpected,
    }
}

/// How many deliveries arrived while the grants were still committing, and after.
fn report_overlap(grants: &Grants, receipts: &[Receipt], waited: &Waited, tally: &Tally) {
    let during = receipts
        .iter()
        .filter(|r| r.instant <= grants.committed)
        .count();
    let end = tally.last.unwrap_or(grants.started + waited.elapsed);
    let after = end.saturating_duration_since(grants.committed);
    let body_bytes = receipts.iter().map(|r| r.body.len()).sum::<usize>() / receipts.len().max(1);
    println!(
        "deliveries: {during} received while the grants were committing, {} in the {:.2} s after; body {body_bytes} bytes on average",
        receipts.len() - during,
        after.as_secs_f64(),
    );
}

/// Requests received in each second after the first grant was sent.
fn report_timeline(receipts: &[Receipt], started: Instant) {
    let mut per_second: Vec<usize> = Vec::new();
    for receipt in receipts {
        let second = receipt.instant.saturating_duration_since(started).as_secs() as usize;
        if per_second.len() <= second {
            per_second.resize(second + 1, 0);
        }
        per_second[second] += 1;
    }
    let each: Vec<String> = per_second.iter().map(usize::to_string).collect();
    println!("deliveries per second of the run: [{}]", each.join(", "));
}

fn report_statements(statements: u64, deliveries: usize, what: &str) {
    println!(
        "SQL statements: {statements} ({:.1} per delivery, {what})",
        statements as f64 / deliveries.max(1) as f64
    );
}

// --- CPU ---------------------------------------------------------------------------------

/// CPU time of the machine and of this process, in clock ticks of all CPUs together.
struct CpuClock {
    machine_busy: u64,
    machine_total: u64,
    process: u64,
    started: Instant,
}

impl CpuClock {
    /// Zeros when `/proc` cannot be read: the report then says nothing useful but no harm.
    fn now() -> Self {
        let (machine_busy, machine_total) = machine_ticks().unwrap_or_default();
        Self {
            machine_busy,
            machine_total,
            process: process_ticks().unwrap_or_default(),
            started: Instant::now(),
        }
    }

    /// Since `self`: how busy the machine was, and how much of that was this process.
    /// Returns the CPU time this process used, in seconds (all its threads).
    fn report(&self, what: &str) -> f64 {
        let now = Self::now();
        let total = now.machine_total.saturating_sub(self.machine_total).max(1) as f64;
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let busy = 100.0 * now.machine_busy.saturating_sub(self.machine_busy) as f64 / total;
        let ours = 100.0 * now.process.saturating_sub(self.process) as f64 / total;
        println!(
            "cpu ({what}): machine {busy:.0} % busy of {cpus} vCPUs, this process {ours:.0} %, other processes {:.0} %",
            (busy - ours).max(0.0)
        );
        ours / 100.0 * cpus as f64 * self.started.elapsed().as_secs_f64()
    }
}

/// (busy, total) from the first line of `/proc/stat`; iowait counts as idle.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some((total - idle, total))
}

/// utime + stime of this process, from `/proc/self/stat`.
fn process_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

// --- where the time goes -----------------------------------------------------------------

/// Per delivery, from the database rows and the receipts: the stages in ms, sorted.
struct Stages {
    /// Event `occurred_at` → delivery `created_at`.
    dispatch: Vec<f64>,
    /// Delivery `created_at` → the first attempt's `attempted_at` (claimed, a permit free).
    to_attempt: Vec<f64>,
    /// The first attempt's `attempted_at` → receipt (signing, sending).
    to_receipt: Vec<f64>,
    attempts: usize,
    deliveries: usize,
}

impl Stages {
    async fn read(database_url: &str, receipts: &[Receipt]) -> anyhow::Result<Self> {
        let db = Database::connect(database_url).await?;
        let stages = Self::from_rows(&db, receipts).await;
        db.close().await?;
        stages
    }

    async fn from_rows(db: &DatabaseConnection, receipts: &[Receipt]) -> anyhow::Result<Self> {
        let events: HashMap<i64, event::Model> = event::Entity::find()
            .all(db)
            .await?
            .into_iter()
            .map(|e| (e.position, e))
            .collect();
        let routes: HashMap<Uuid, usize> = webhook_endpoint::Entity::find()
            .all(db)
            .await?
            .into_iter()
            .filter_map(|e| Some((e.id, e.url.rsplit('/').next()?.parse().ok()?)))
            .collect();
        let mut first_attempt: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
        let attempts = webhook_attempt::Entity::find().all(db).await?;
        for attempt in &attempts {
            let at = first_attempt
                .entry(attempt.delivery_id)
                .or_insert(attempt.attempted_at);
            *at = (*at).min(attempt.attempted_at);
        }
        let mut received: HashMap<(usize, &str), DateTime<Utc>> = HashMap::new();
        for receipt in receipts {
            received
                .entry((receipt.route, receipt.webhook_id.as_str()))
                .or_insert(receipt.at);
        }
        let deliveries = webhook_delivery::Entity::find().all(db).await?;
        let mut stages = Stages {
            dispatch: Vec::new(),
            to_attempt: Vec::new(),
            to_receipt: Vec::new(),
            attempts: attempts.len(),
            deliveries: deliveries.len(),
        };
        for delivery in &deliveries {
            let Some(event) = events.get(&delivery.event_position) else {
                continue;
            };
            stages
                .dispatch
                .push(millis(delivery.created_at - event.occurred_at));
            let id = millwright::ids::encode(millwright::ids::Kind::Event, event.id);
            let key = routes
                .get(&delivery.endpoint_id)
                .map(|&route| (route, id.as_str()));
            let Some(at) = key.and_then(|k| received.get(&k)) else {
                continue;
            };
            if let Some(attempted) = first_attempt.get(&delivery.id) {
                stages
                    .to_attempt
                    .push(millis(*attempted - delivery.created_at));
                stages.to_receipt.push(millis(*at - *attempted));
            }
        }
        for stage in [
            &mut stages.dispatch,
            &mut stages.to_attempt,
            &mut stages.to_receipt,
        ] {
            stage.sort_by(f64::total_cmp);
        }
        Ok(stages)
    }

    fn report(&self) {
        println!(
            "stages ({} delivery rows, {} attempt rows):",
            self.deliveries, self.attempts
        );
        println!(
            "  event committed -> delivery row (dispatcher): {}",
            spread(&self.dispatch)
        );
        println!(
            "  delivery row -> attempt started (claim, load the event, wait for a permit): {}",
            spread(&self.to_attempt)
        );
        println!(
            "  attempt started -> received (sign, send): {}",
            spread(&self.to_receipt)
        );
    }
}

// --- ceiling -----------------------------------------------------------------------------

/// What the plain loop achieved in one round.
struct Ceiling {
    per_second: f64,
    requests: usize,
    errors: usize,
    elapsed: Duration,
}

/// A few rounds of the plain loop; the median round is the ceiling (one round takes about
/// 2 s, so a burst of other load on the machine moves it a lot).
async fn measure_ceiling(receiver: &Receiver) -> anyhow::Result<Ceiling> {
    let workers = Config::default().webhooks.workers;
    let client = pooled_http_client(workers)?;
    let body = Bytes::from(sample_body());
    let mut rounds = Vec::with_capacity(CEILING_ROUNDS);
    for _ in 0..CEILING_ROUNDS {
        let round = ceiling_round(receiver, &client, &body, workers).await?;
        println!(
            "ceiling round: {:.0} requests/s ({} requests of {} bytes in {:.2} s, {workers} senders, errors {})",
            round.per_second,
            round.requests,
            body.len(),
            round.elapsed.as_secs_f64(),
            round.errors,
        );
        rounds.push(round);
    }
    rounds.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
    let median = rounds.swap_remove(CEILING_ROUNDS / 2);
    println!(
        "ceiling: {:.0} requests/s (median of {CEILING_ROUNDS} rounds)",
        median.per_second
    );
    Ok(median)
}

/// A body of the size the server sends, with the same headers, from as many concurrent
/// senders as the server has delivery workers, for `CEILING_REQUESTS` or `CEILING_LENGTH`.
async fn ceiling_round(
    receiver: &Receiver,
    client: &Client,
    body: &Bytes,
    workers: usize,
) -> anyhow::Result<Ceiling> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let sender = CeilingSender {
                client: client.clone(),
                receiver: receiver.clone(),
                body: body.clone(),
                next: next.clone(),
                deadline: started + CEILING_LENGTH,
            };
            tokio::spawn(sender.run())
        })
        .collect();
    let mut errors = 0;
    for task in tasks {
        errors += task.await.context("ceiling sender")?;
    }
    let elapsed = started.elapsed();
    let requests = receiver.take().len();
    Ok(Ceiling {
        per_second: requests as f64 / elapsed.as_secs_f64(),
        requests,
        errors,
        elapsed,
    })
}

/// A `credits.changed` body as the server builds it.
fn sample_body() -> Vec<u8> {
    let body = json!({
        "id": "evt_0192f0c2a1b27c3d8e9f0a1b2c3d4e5f",
        "type": "credits.changed",
        "timestamp": "2026-11-27T12:00:00Z",
        "account_id": "acc_0192f0c2a1b27c3d8e9f0a1b2c3d4e5f",
        "customer_id": null,
        "connection_id": null,
        "data": { "amount": 1, "available": 12345, "kind": "GRANT" },
    });
    serde_json::to_vec(&body).expect("JSON serializes")
}

struct CeilingSender {
    client: Client,
    receiver: Receiver,
    body: Bytes,
    next: Arc<AtomicUsize>,
    deadline: Instant,
}

impl CeilingSender {
    /// Posts until the shared count or the deadline is reached; returns its errors.
    async fn run(self) -> usize {
        let mut errors = 0;
        loop {
            let n = self.next.fetch_add(1, Ordering::SeqCst);
            if n >= CEILING_REQUESTS || Instant::now() >= self.deadline {
                return errors;
            }
            let timestamp = Utc::now().timestamp().to_string();
            let sent = self
                .client
                .post(self.receiver.url(n % ENDPOINTS))
                .header(CONTENT_TYPE, "application/json")
                .header("webhook-id", format!("msg_ceiling_{n}"))
                .header("webhook-timestamp", timestamp)
                .header(
                    "webhook-signature",
                    "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
                )
                .body(self.body.clone())
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => {
                    // Read the answer, as the server does.
                    if response.bytes().await.is_err() {
                        errors += 1;
                    }
                }
                _ => errors += 1,
            }
        }
    }
}

// --- verdict -----------------------------------------------------------------------------

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

/// Whether this machine could carry the live run at the target share at all: the live rate
/// is `ENDPOINTS` deliveries per grant, and both the grants and the deliveries need CPU.
fn report_cpu_bound(costs: &CpuCosts, ceiling: &Ceiling) {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let deliveries = TARGET_CEILING_PERCENT / 100.0 * ceiling.per_second;
    let grants = deliveries / ENDPOINTS as f64;
    let needed =
        deliveries * costs.per_delivery.as_secs_f64() + grants * costs.per_grant.as_secs_f64();
    println!(
        "cpu per grant {:.0} us (workers off: server, GraphQL client), per delivery {:.0} us (draining: server, receiver); {TARGET_CEILING_PERCENT:.0} % of the ceiling live = {deliveries:.0} deliveries/s from {grants:.0} grants/s would need {needed:.2} of the {cpus} vCPUs",
        costs.per_grant.as_secs_f64() * 1e6,
        costs.per_delivery.as_secs_f64() * 1e6,
    );
}

/// The targets: on SQLite the rate, for the live run (bound by how fast the API commits the
/// events) and for the backlog drain (the delivery pipeline alone); on PostgreSQL (#20) the
/// paced run's p99 and the drain.
fn report_targets(
    backend: Backend,
    live: &ServerFigures,
    paced: &Paced,
    backlog: &ServerFigures,
    ceiling: &Ceiling,
) {
    let name = backend.name();
    for (run, figures) in [("live", live), ("backlog drain", backlog)] {
        let rate = figures.deliveries_per_second;
        let share = 100.0 * rate / ceiling.per_second;
        println!("{name} {run}: {rate:.0} deliveries/s, {share:.1} % of the ceiling");
    }
    let p99 = percentile(&paced.latencies_ms, 99);
    println!(
        "{name} paced: {:.0} deliveries/s, latency request -> receipt p50 {:.1} ms, p99 {p99:.1} ms",
        paced.figures.deliveries_per_second,
        percentile(&paced.latencies_ms, 50),
    );
    match backend {
        Backend::Sqlite => {
            for (run, figures) in [("live", live), ("backlog drain", backlog)] {
                let rate = figures.deliveries_per_second;
                let share = 100.0 * rate / ceiling.per_second;
                println!(
                    "target: at least {TARGET_DELIVERIES_PER_SECOND:.0} deliveries/s on SQLite ({run}): {rate:.0}/s, {}",
                    verdict(rate >= TARGET_DELIVERIES_PER_SECOND)
                );
                println!(
                    "target: at least {TARGET_CEILING_PERCENT:.0} % of the ceiling ({run}): {share:.1} %, {}",
                    verdict(share >= TARGET_CEILING_PERCENT)
                );
            }
        }
        Backend::Postgres => {
            let rate = PACED_GRANTS_PER_SECOND * ENDPOINTS as f64;
            println!(
                "target: p99 at most {TARGET_POSTGRES_P99_MS:.0} ms at {rate:.0} deliveries/s on PostgreSQL: {p99:.1} ms, {}",
                verdict(p99 <= TARGET_POSTGRES_P99_MS)
            );
            let drain = backlog.deliveries_per_second;
            println!(
                "target: PostgreSQL drain at least {TARGET_POSTGRES_DRAIN:.0} deliveries/s: {drain:.0}/s, {}",
                verdict(drain >= TARGET_POSTGRES_DRAIN)
            );
        }
    }
}

// --- paced -------------------------------------------------------------------------------

/// The paced run's figures.
struct Paced {
    figures: ServerFigures,
    /// Scheduled send of the request -> receipt, per delivery, in ms, sorted.
    latencies_ms: Vec<f64>,
}

/// One paced grant: when it was due, and the balance it answered (its event's `available`).
struct Sent {
    due: Instant,
    answered: Instant,
    balance: i64,
}

async fn measure_paced(backend: Backend, receiver: &Receiver) -> anyhow::Result<Paced> {
    let database = FreshDatabase::create(backend).await?;
    let measured = match Server::start("server", config(database.url.clone())).await {
        Ok(server) => {
            let measured = paced_run(server.addr, receiver, &database.url).await;
            server.stop().await;
            measured
        }
        Err(err) => Err(err),
    };
    database.drop().await;
    measured
}

async fn paced_run(
    addr: SocketAddr,
    receiver: &Receiver,
    database_url: &str,
) -> anyhow::Result<Paced> {
    let client = pooled_http_client(PACED_CLIENTS)?;
    let (admin, account, account_id) = set_up(&client, addr, receiver).await?;
    let grants = (PACED_GRANTS_PER_SECOND * PACED_LENGTH.as_secs_f64()) as usize;
    let expected = grants * ENDPOINTS;
    let next = Arc::new(AtomicUsize::new(0));
    let cpu = CpuClock::now();
    let started = Instant::now();
    let clients: Vec<_> = (0..PACED_CLIENTS)
        .map(|_| {
            let (admin, account_id, next) = (admin.clone(), account_id.clone(), next.clone());
            tokio::spawn(async move {
                let mut sent = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= grants {
                        return anyhow::Ok(sent);
                    }
                    let due = started + Duration::from_secs_f64(n as f64 / PACED_GRANTS_PER_SECOND);
                    tokio::time::sleep_until(due.into()).await;
                    let data = admin.data(GRANT, json!({ "id": account_id })).await?;
                    let balance = data["grantCredits"]["total"]
                        .as_i64()
                        .ok_or_else(|| anyhow!("a grant answered {data}"))?;
                    sent.push(Sent {
                        due,
                        answered: Instant::now(),
                        balance,
                    });
                }
            })
        })
        .collect();
    let mut sent = Vec::with_capacity(grants);
    for client in clients {
        sent.extend(client.await.context("paced client")??);
    }
    let waited = wait_for(receiver, expected, started).await;
    cpu.report("paced grants and deliveries");
    tokio::time::sleep(DUPLICATE_GRACE).await;
    let receipts = receiver.take();
    let occurred = read_events(&account).await?;
    let tally = Tally::of(&receipts, &occurred);
    let figures = report_tally(&tally, &waited, started, "the first grant due", grants);
    let due: HashMap<i64, Instant> = sent.iter().map(|s| (s.balance, s.due)).collect();
    let mut requests: Vec<f64> = sent
        .iter()
        .map(|s| (s.answered - s.due).as_secs_f64() * 1000.0)
        .collect();
    requests.sort_by(f64::total_cmp);
    let mut seen = std::collections::HashSet::new();
    let mut latencies_ms = Vec::with_capacity(expected);
    for receipt in &receipts {
        if !seen.insert((receipt.route, receipt.webhook_id.as_str())) {
            continue;
        }
        let balance = serde_json::from_slice::<Value>(&receipt.body)
            .ok()
            .and_then(|body| body["data"]["available"].as_i64());
        if let Some(due) = balance.and_then(|b| due.get(&b)) {
            latencies_ms.push((receipt.instant - *due).as_secs_f64() * 1000.0);
        }
    }
    latencies_ms.sort_by(f64::total_cmp);
    println!(
        "paced: {grants} grants due at {PACED_GRANTS_PER_SECOND:.0}/s from {PACED_CLIENTS} clients; request due -> answered: {}",
        spread(&requests)
    );
    println!(
        "paced: latency request due -> receipt: {} ({} deliveries matched)",
        spread(&latencies_ms),
        latencies_ms.len()
    );
    report_timeline(&receipts, started);
    let stages = Stages::read(database_url, &receipts).await?;
    stages.report();
    Ok(Paced {
        figures,
        latencies_ms,
    })
}

// --- two processes -----------------------------------------------------------------------

/// Two-process figures (issue #20), deliveries/s: one process, then two on the database.
struct Processes {
    /// One process and two, live (`None`: not run).
    live: Option<(f64, f64)>,
    /// One process and two, draining a backlog.
    drain: (f64, f64),
    exact: bool,
}

/// `millwright serve` processes on one PostgreSQL database, as the bench's in-process server
/// is set up (no line per request logged, as the in-process server logs nowhere).
async fn start_processes(
    client: &Client,
    database_url: &str,
    count: usize,
    workers: bool,
) -> anyhow::Result<Vec<ServerProcess>> {
    let connections = std::env::var("WEBHOOKS_DB_CONNECTIONS").unwrap_or_default();
    let batch = GRANTS_PER_BATCH.to_string();
    let mut settings = vec![
        ("MILLWRIGHT_WEBHOOK_ALLOW_PRIVATE_TARGETS", "true"),
        ("MILLWRIGHT_MAX_BATCH_SIZE", batch.as_str()),
        ("MILLWRIGHT_MAX_QUERY_COMPLEXITY", "5000"),
        ("MILLWRIGHT_API_REQUESTS_PER_SECOND", "1000000"),
        ("MILLWRIGHT_API_BURST", "1000000"),
        ("MILLWRIGHT_HEALTH_CHECK_INTERVAL_SECS", "3600"),
        ("MILLWRIGHT_WORKERS", if workers { "true" } else { "false" }),
        ("RUST_LOG", "warn"),
    ];
    if !connections.is_empty() {
        settings.push(("MILLWRIGHT_DATABASE_MAX_CONNECTIONS", connections.as_str()));
    }
    // Started together: a drain is timed from here, and neither process gets a head start.
    // `WEBHOOKS_PROCESS_LOGS=DIR`: each process's output to a file there, for exploring.
    let logs = std::env::var_os("WEBHOOKS_PROCESS_LOGS").map(std::path::PathBuf::from);
    let log = |n: usize| {
        logs.as_ref()
            .map(|dir| dir.join(format!("process-{}-{n}.log", Utc::now().timestamp_millis())))
    };
    let logs: Vec<_> = (0..count).map(log).collect();
    let started = futures_util::future::join_all(
        logs.iter()
            .map(|log| ServerProcess::start(client, database_url, &settings, log.as_deref())),
    )
    .await;
    started
        .into_iter()
        .map(|started| started.map(|(process, _)| process))
        .collect()
}

/// Live runs on fresh databases: an account on one process committing `EVENTS` events, then
/// an account on each of two processes doing so at once; then the same as backlog drains
/// (only these without `live`).
async fn measure_processes(receiver: &Receiver, live: bool) -> anyhow::Result<Processes> {
    let mut exact = true;
    let mut rates = Vec::new();
    for drain in [false, true].into_iter().filter(|drain| *drain || live) {
        for count in [1, 2] {
            let run = if drain { "backlog drain" } else { "live" };
            println!("-- postgres, {count} server process(es): {run}");
            let database = FreshDatabase::create(Backend::Postgres).await?;
            let figures = if drain {
                processes_drain(&database.url, count, receiver).await
            } else {
                processes_live(&database.url, count, receiver).await
            };
            database.drop().await;
            let figures = figures?;
            exact &= figures.exact();
            rates.push(figures.deliveries_per_second);
        }
    }
    let drain = (rates[rates.len() - 2], rates[rates.len() - 1]);
    Ok(Processes {
        live: live.then(|| (rates[0], rates[1])),
        drain,
        exact,
    })
}

/// `count` processes, an account with its endpoints on each, all committing at once.
async fn processes_live(
    database_url: &str,
    count: usize,
    receiver: &Receiver,
) -> anyhow::Result<ServerFigures> {
    let client = pooled_http_client(GRANT_SENDERS * 2 * count)?;
    let processes = start_processes(&client, database_url, count, true).await?;
    let mut accounts = Vec::new();
    for process in &processes {
        accounts.push(set_up(&client, process.addr, receiver).await?);
    }
    let cpu = CpuClock::now();
    let started = Instant::now();
    let committed = futures_util::future::join_all(
        accounts
            .iter()
            .map(|(admin, _, account_id)| commit_events(admin, account_id)),
    )
    .await;
    committed.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let waited = wait_for(receiver, EXPECTED * count, started).await;
    cpu.report("grants and deliveries, bench process");
    tokio::time::sleep(DUPLICATE_GRACE).await;
    let receipts = receiver.take();
    let mut occurred = HashMap::with_capacity(EVENTS * count);
    for (_, account, _) in &accounts {
        occurred.extend(read_events(account).await?);
    }
    let tally = Tally::of(&receipts, &occurred);
    let figures = report_tally(
        &tally,
        &waited,
        started,
        "the first grant sent",
        EVENTS * count,
    );
    println!(
        "latency commit -> receipt: {} ({} deliveries)",
        spread(&tally.latencies_ms),
        tally.latencies_ms.len()
    );
    Ok(figures)
}

/// `EVENTS` events committed by a process without workers, then `count` processes with
/// workers started together on the database: how fast they drain it.
async fn processes_drain(
    database_url: &str,
    count: usize,
    receiver: &Receiver,
) -> anyhow::Result<ServerFigures> {
    let client = pooled_http_client(GRANT_SENDERS * 2)?;
    let quiet = start_processes(&client, database_url, 1, false).await?;
    let (admin, account, account_id) = set_up(&client, quiet[0].addr, receiver).await?;
    commit_events(&admin, &account_id).await?;
    drop(quiet);
    ensure!(
        receiver.count() == 0,
        "deliveries sent with the workers off"
    );
    let key = account.token().to_owned();
    let started = Instant::now();
    let processes = start_processes(&client, database_url, count, true).await?;
    let cpu = CpuClock::now();
    let waited = wait_for_deliveries(receiver, started).await;
    cpu.report("draining, bench process");
    tokio::time::sleep(DUPLICATE_GRACE).await;
    let receipts = receiver.take();
    let account = Api::new(&client, processes[0].addr, &key);
    let occurred = read_events(&account).await?;
    let tally = Tally::of(&receipts, &occurred);
    // From the first delivery: the processes' start (one, or two at once, the second
    // waiting for the first's migration check) is not the drain.
    let first = receipts.iter().map(|r| r.instant).min().unwrap_or(started);
    println!(
        "first delivery {:.2} s after the processes were started",
        (first - started).as_secs_f64()
    );
    let figures = report_tally(&tally, &waited, first, "the first delivery", EVENTS);
    report_timeline(&receipts, started);
    Ok(figures)
}

/// Issue #20: two processes on one database, against one (on this machine the two share its
/// cores: what is shown is that nothing serializes them, the two together not below one).
fn report_processes(processes: &Processes) {
    let live = processes.live.map(|(one, two)| ("live", one, two));
    let (one, two) = processes.drain;
    for (run, one, two) in live.into_iter().chain([("backlog drain", one, two)]) {
        println!(
            "target: PostgreSQL two processes not below one ({run}): {two:.0} vs {one:.0} deliveries/s = {:.2} x, {}",
            two / one,
            verdict(two >= one)
        );
    }
}
