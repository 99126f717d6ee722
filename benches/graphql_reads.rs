//! Load benchmark for GraphQL reads.
//!
//! Seeds a fresh SQLite database with one account and 10,000 customers, starts the real server
//! in-process next to a plain axum JSON handler over the same domain query (the ceiling), and
//! drives both with 64 concurrent clients for 10 seconds each: requests per second, p50 and p99
//! latency, errors, and GraphQL throughput as a share of plain. Then it starts the real binary
//! five times to measure time to ready and its idle resident memory.
//!
//! Run with `cargo bench --bench graphql_reads`; everything is reported on stdout and only
//! 127.0.0.1 is used.

#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

mod common;

use std::{
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use entity::customer;
use millwright::{
    accounts,
    config::Config,
    customers,
    db::Db,
    ids::{self, Kind},
    pagination::PageRequest,
};
use reqwest::{
    Client,
    header::{AUTHORIZATION, CONTENT_TYPE},
};
use sea_orm::{ActiveValue::Set, EntityTrait, PaginatorTrait};
use serde::{Deserialize, Serialize, de::IgnoredAny};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use common::{Server, ServerProcess, pooled_http_client, server_config};

const CUSTOMERS: usize = 10_000;
const INSERT_BATCH: usize = 500;
const PAGE: usize = 50;
const CLIENTS: usize = 64;
const WARM_UP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(10);
/// The measured time of each target is cut into this many alternating slices.
const SLICES: u32 = 5;
const QUERY: &str =
    r#"{"query":"{ customers(first: 50) { edges { node { id name externalId } } } }"}"#;

const STARTS: usize = 5;
const IDLE_BEFORE_RSS: Duration = Duration::from_secs(2);

const TARGET_RATIO_PERCENT: f64 = 60.0;
const TARGET_STARTUP_MS: f64 = 500.0;
const TARGET_IDLE_RSS_MB: f64 = 40.0;

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir for the database");
    let fixture = seed(dir.path()).await;
    let token = CancellationToken::new();
    let client = pooled_http_client(CLIENTS).expect("HTTP client");

    let server = Server::start("server", fixture.config.clone())
        .await
        .expect("start the server");
    let graphql_addr = server.addr;
    let plain_addr = start_plain(fixture.db.clone(), fixture.account_id, token.clone()).await;

    let graphql = Target::Graphql {
        url: format!("http://{graphql_addr}/graphql"),
        authorization: format!("Bearer {}", fixture.key),
    };
    let plain = Target::Plain {
        url: format!("http://{plain_addr}/customers"),
    };
    let (graphql, plain) = load_interleaved(&client, graphql, plain).await;
    report_load(&graphql, &plain);

    report_process(&measure_process(&client).await);

    drop(client);
    token.cancel();
    server.stop().await;
}

// --- setup -------------------------------------------------------------------------------

struct Fixture {
    config: Config,
    db: Db,
    account_id: Uuid,
    key: String,
}

/// A fresh migrated database holding one account and its customers.
async fn seed(dir: &Path) -> Fixture {
    let started = Instant::now();
    let config = server_config(format!(
        "sqlite://{}?mode=rwc",
        dir.join("bench.db").display()
    ));
    let db = Db::connect(&config).await.expect("connect to SQLite");
    db.migrate().await.expect("migrate");
    let created = accounts::create_account(&db, "bench", 0)
        .await
        .expect("create the account");
    insert_customers(&db, created.account.id).await;
    let seeded = customer::Entity::find()
        .count(db.conn())
        .await
        .expect("count customers");
    assert_eq!(seeded, CUSTOMERS as u64, "every customer inserted");
    println!(
        "setup: {seeded} customers seeded in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Fixture {
        config,
        db,
        account_id: created.account.id,
        key: created.key,
    }
}

async fn insert_customers(db: &Db, account_id: Uuid) {
    let indices: Vec<usize> = (0..CUSTOMERS).collect();
    for batch in indices.chunks(INSERT_BATCH) {
        let txn = db.begin_write().await.expect("begin a write");
        let rows = batch.iter().map(|&i| new_customer(account_id, i));
        customer::Entity::insert_many(rows)
            .exec_without_returning(&*txn)
            .await
            .expect("insert customers");
        txn.commit().await.expect("commit customers");
    }
}

fn new_customer(account_id: Uuid, index: usize) -> customer::ActiveModel {
    let now = chrono::Utc::now();
    customer::ActiveModel {
        id: Set(ids::new_id()),
        account_id: Set(account_id),
        external_id: Set(Some(format!("ext-{index}"))),
        name: Set(format!("Customer {index:05}")),
        created_at: Set(now),
        updated_at: Set(now),
        deleted_at: Set(None),
    }
}

// --- servers -----------------------------------------------------------------------------

async fn bind_local() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("listener address");
    (listener, addr)
}

#[derive(Clone)]
struct PlainState {
    db: Db,
    account_id: Uuid,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PlainCustomer {
    id: String,
    name: String,
    external_id: Option<String>,
}

impl From<customer::Model> for PlainCustomer {
    fn from(model: customer::Model) -> Self {
        Self {
            id: ids::encode(Kind::Customer, model.id),
            name: model.name,
            external_id: model.external_id,
        }
    }
}

/// The ceiling: the same domain query behind a bare JSON route, without GraphQL or auth.
async fn start_plain(db: Db, account_id: Uuid, token: CancellationToken) -> SocketAddr {
    let (listener, addr) = bind_local().await;
    let app = Router::new()
        .route("/customers", get(plain_customers))
        .with_state(PlainState { db, account_id });
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
    });
    addr
}

async fn plain_customers(
    State(state): State<PlainState>,
) -> Result<Json<Vec<PlainCustomer>>, StatusCode> {
    let page = customers::list(
        state.db.conn(),
        state.account_id,
        None,
        PageRequest::first(PAGE as u64),
    )
    .await
    .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(Json(
        page.items.into_iter().map(PlainCustomer::from).collect(),
    ))
}

// --- load --------------------------------------------------------------------------------

enum Target {
    Graphql { url: String, authorization: String },
    Plain { url: String },
}

#[derive(Deserialize)]
struct GraphqlBody {
    data: Option<CustomersData>,
}

#[derive(Deserialize)]
struct CustomersData {
    customers: Edges,
}

#[derive(Deserialize)]
struct Edges {
    edges: Vec<IgnoredAny>,
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::Graphql { .. } => "graphql",
            Target::Plain { .. } => "plain",
        }
    }

    /// Sends one request; true when it answered 200 with a full page.
    async fn hit(&self, client: &Client) -> bool {
        match self {
            Target::Graphql { url, authorization } => {
                let sent = client
                    .post(url)
                    .header(AUTHORIZATION, authorization)
                    .header(CONTENT_TYPE, "application/json")
                    .body(QUERY)
                    .send()
                    .await;
                let Some(response) = sent.ok().filter(|r| r.status().is_success()) else {
                    return false;
                };
                let body = response.json::<GraphqlBody>().await;
                body.ok()
                    .and_then(|b| b.data)
                    .is_some_and(|d| d.customers.edges.len() == PAGE)
            }
            Target::Plain { url } => {
                let sent = client.get(url).send().await;
                let Some(response) = sent.ok().filter(|r| r.status().is_success()) else {
                    return false;
                };
                let body = response.json::<Vec<IgnoredAny>>().await;
                body.is_ok_and(|rows| rows.len() == PAGE)
            }
        }
    }
}

/// What a set of clients saw: latencies of successful requests, failures, wall time.
#[derive(Default)]
struct Sample {
    latencies: Vec<Duration>,
    errors: u64,
    elapsed: Duration,
}

impl Sample {
    fn absorb(&mut self, other: Sample) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.elapsed += other.elapsed;
    }
}

struct Summary {
    name: &'static str,
    requests: usize,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// A warm-up of each target that is thrown away, then alternating slices of both targets,
/// so that both see the same machine conditions (a 2-core VM's speed drifts over seconds).
async fn load_interleaved(client: &Client, graphql: Target, plain: Target) -> (Summary, Summary) {
    let (graphql, plain) = (Arc::new(graphql), Arc::new(plain));
    run_clients(client, &graphql, WARM_UP).await;
    run_clients(client, &plain, WARM_UP).await;
    let (mut graphql_total, mut plain_total) = (Sample::default(), Sample::default());
    for _ in 0..SLICES {
        graphql_total.absorb(run_clients(client, &graphql, MEASURE / SLICES).await);
        plain_total.absorb(run_clients(client, &plain, MEASURE / SLICES).await);
    }
    let summaries = (
        summarize(graphql.name(), graphql_total),
        summarize(plain.name(), plain_total),
    );
    for summary in [&summaries.0, &summaries.1] {
        println!(
            "{}: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, errors {} ({} requests in {} s as {SLICES} slices, {CLIENTS} clients)",
            summary.name,
            summary.per_second,
            summary.p50_ms,
            summary.p99_ms,
            summary.errors,
            summary.requests,
            MEASURE.as_secs(),
        );
    }
    summaries
}

async fn run_clients(client: &Client, target: &Arc<Target>, length: Duration) -> Sample {
    let started = Instant::now();
    let deadline = started + length;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(client_loop(client.clone(), target.clone(), deadline)))
        .collect();
    let mut total = Sample::default();
    for task in tasks {
        let part = task.await.expect("client task");
        total.latencies.extend(part.latencies);
        total.errors += part.errors;
    }
    total.elapsed = started.elapsed();
    total
}

async fn client_loop(client: Client, target: Arc<Target>, deadline: Instant) -> Sample {
    let mut sample = Sample::default();
    while Instant::now() < deadline {
        let sent = Instant::now();
        if target.hit(&client).await {
            sample.latencies.push(sent.elapsed());
        } else {
            sample.errors += 1;
        }
    }
    sample
}

fn summarize(name: &'static str, mut sample: Sample) -> Summary {
    sample.latencies.sort_unstable();
    let requests = sample.latencies.len() + sample.errors as usize;
    Summary {
        name,
        requests,
        per_second: sample.latencies.len() as f64 / sample.elapsed.as_secs_f64(),
        p50_ms: percentile_ms(&sample.latencies, 50),
        p99_ms: percentile_ms(&sample.latencies, 99),
        errors: sample.errors,
    }
}

/// Nearest-rank percentile of sorted latencies, in milliseconds.
fn percentile_ms(sorted: &[Duration], percent: usize) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted[rank - 1].as_secs_f64() * 1000.0
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

fn report_load(graphql: &Summary, plain: &Summary) {
    let ratio = 100.0 * graphql.per_second / plain.per_second;
    let met = ratio >= TARGET_RATIO_PERCENT;
    println!(
        "ratio graphql/plain: {ratio:.1} % (target GraphQL >= {TARGET_RATIO_PERCENT:.0} % of plain: {})",
        verdict(met)
    );
}

// --- process -----------------------------------------------------------------------------

/// A `millwright serve` child and the directory of its database.
struct Instance {
    process: ServerProcess,
    _dir: TempDir,
}

struct ProcessFigures {
    startups_ms: Vec<f64>,
    idle_rss_mb: f64,
}

async fn measure_process(client: &Client) -> ProcessFigures {
    let mut startups_ms = Vec::with_capacity(STARTS);
    let mut last = None;
    for _ in 0..STARTS {
        if let Some(previous) = last.take() {
            drop(previous);
        }
        let (instance, startup) = start_binary(client).await;
        startups_ms.push(startup.as_secs_f64() * 1000.0);
        last = Some(instance);
    }
    let last = last.expect("at least one start");
    tokio::time::sleep(IDLE_BEFORE_RSS).await;
    let idle_rss_mb = rss_kib(last.process.pid()) as f64 / 1024.0;
    drop(last);
    ProcessFigures {
        startups_ms,
        idle_rss_mb,
    }
}

/// Spawns `millwright serve` on a fresh database; returns it with the time until ready.
async fn start_binary(client: &Client) -> (Instance, Duration) {
    let dir = tempfile::tempdir().expect("temp dir for the database");
    let database_url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
    let (process, startup) = ServerProcess::start(client, &database_url, &[], None)
        .await
        .expect("start millwright serve");
    (Instance { process, _dir: dir }, startup)
}

/// Resident memory of a process, from `/proc/<pid>/status`.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

fn report_process(figures: &ProcessFigures) {
    let mut sorted = figures.startups_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let (min, median, max) = (
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
    );
    let each: Vec<String> = figures
        .startups_ms
        .iter()
        .map(|ms| format!("{ms:.1}"))
        .collect();
    println!(
        "startup to ready: min {min:.1} ms, median {median:.1} ms, max {max:.1} ms over {STARTS} starts [{}] (target < {TARGET_STARTUP_MS:.0} ms, every start: {})",
        each.join(", "),
        verdict(max < TARGET_STARTUP_MS)
    );
    println!(
        "idle RSS: {:.1} MB after {} s idle (target < {TARGET_IDLE_RSS_MB:.0} MB: {})",
        figures.idle_rss_mb,
        IDLE_BEFORE_RSS.as_secs(),
        verdict(figures.idle_rss_mb < TARGET_IDLE_RSS_MB)
    );
}
