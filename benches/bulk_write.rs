//! Bulk-write throughput: 10,000 work orders created by one `bulkWrite` in batches of 100,
//! no delay, to the demo system and to the MaintainX fixture over loopback.
//!
//! For each database (`BULK_DB=sqlite|postgres|both`, SQLite by default; PostgreSQL is a
//! fresh database created from `MILLWRIGHT_TEST_POSTGRES_URL` or
//! `postgres://postgres@127.0.0.1:5432/test` and dropped after) a server starts in this
//! process, an account connects the demo system and the MaintainX fixture (in this
//! process), waits for their first syncs, then writes N work orders to each (`BULK_RECORDS`,
//! 10,000). records/s = N / the operation's own `finishedAt - startedAt`. An operation that
//! did not succeed for every record, or a fixture that did not gain exactly N work orders,
//! makes the process exit non-zero.
//!
//! The MaintainX figure is compared with the fixture's plain request ceiling, measured in
//! the same run on a second fixture of the same starting size: N `POST /v1/workorders` of
//! the same bodies sent one after another by a bare client (one request at a time, as one
//! operation's batches are sent). Targets: demo at
//! least 5,000 records/s; MaintainX at least 50 % of the ceiling.
//!
//! Run with `cargo bench --bench bulk_write`.

#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

mod common;

use std::{process::ExitCode, time::Duration, time::Instant};

use anyhow::{Context as _, anyhow, ensure};
use chrono::DateTime;
use millwright_fixtures::{API_KEY, Fixture, Kind, data::Sizes};
use serde_json::{Value, json};

use common::{
    Api, ScratchPostgres, Server, http_client, load_average, server_config, set_up_account, text_at,
};

const RECORDS: usize = 10_000;
const BATCH_SIZE: usize = 100;
/// High enough that the connection's outbound rate limit never waits.
const REQUESTS_PER_SECOND: u32 = 1_000_000;
const DEADLINE: Duration = Duration::from_secs(15 * 60);
const POLL: Duration = Duration::from_millis(100);
const TARGET_DEMO_RATE: f64 = 5_000.0;
const TARGET_CEILING_PERCENT: f64 = 50.0;

const CONNECT: &str = "mutation($input: ConnectInput!) {
    connect(input: $input) { connection { id lastSyncRun { id } } } }";
const BULK_WRITE: &str = "mutation($input: BulkWriteInput!) { bulkWrite(input: $input) { id } }";
const OPERATION: &str = "query($id: ID!) { bulkOperation(id: $id) {
    status total processed succeeded failed startedAt finishedAt } }";
const SYNC_STATUS: &str = "query($id: ID!) { syncRun(id: $id) { status } }";

/// One measured operation.
struct Measured {
    rate: f64,
    secs: f64,
}

/// One database's figures.
struct Figures {
    demo: Measured,
    maintainx: Measured,
    ceiling: Measured,
}

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        millwright::telemetry::init(millwright::config::LogFormat::Pretty);
    }
    let records = std::env::var("BULK_RECORDS")
        .ok()
        .and_then(|n| n.replace('_', "").parse().ok())
        .unwrap_or(RECORDS);
    let which = std::env::var("BULK_DB").unwrap_or_else(|_| "sqlite".to_owned());
    println!(
        "setup: {records} work orders per operation, batches of {BATCH_SIZE}, no delay; {}",
        load_average()
    );
    let mut passed = true;
    for db in ["sqlite", "postgres"] {
        if which != db && which != "both" {
            continue;
        }
        let outcome = match db {
            "sqlite" => on_sqlite(records).await,
            _ => on_postgres(records).await,
        };
        passed &= report(db, outcome);
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn report(db: &str, outcome: anyhow::Result<Figures>) -> bool {
    let figures = match outcome {
        Ok(figures) => figures,
        Err(err) => {
            println!("{db}: FAILED: {err:#}");
            return false;
        }
    };
    let share = 100.0 * figures.maintainx.rate / figures.ceiling.rate;
    println!(
        "{db}: demo {:.0} records/s ({:.2} s) [target >= {TARGET_DEMO_RATE:.0}]",
        figures.demo.rate, figures.demo.secs
    );
    println!(
        "{db}: maintainx {:.0} records/s ({:.2} s); fixture ceiling {:.0} requests/s ({:.2} s); {share:.1} % of the ceiling [target >= {TARGET_CEILING_PERCENT:.0} %]",
        figures.maintainx.rate, figures.maintainx.secs, figures.ceiling.rate, figures.ceiling.secs
    );
    let met = figures.demo.rate >= TARGET_DEMO_RATE && share >= TARGET_CEILING_PERCENT;
    println!("{db}: targets {}", if met { "met" } else { "MISSED" });
    met
}

async fn on_sqlite(records: usize) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("bulk.db").display());
    measure("sqlite", &url, records).await
}

async fn on_postgres(records: usize) -> anyhow::Result<Figures> {
    let scratch = ScratchPostgres::create("mw_bulk").await?;
    let url = scratch.url.clone();
    let outcome = tokio::spawn(async move { measure("postgres", &url, records).await })
        .await
        .map_err(|err| anyhow!("the measurement panicked: {err}"))
        .and_then(|r| r);
    scratch.drop().await;
    outcome
}

async fn measure(db: &str, url: &str, records: usize) -> anyhow::Result<Figures> {
    let mut config = server_config(url.to_owned());
    config.sync.requests_per_second = REQUESTS_PER_SECOND;
    config.connectors.allow_private_targets = true;
    let server = Server::start(db, config).await?;
    let outcome = Box::pin(measure_on(&server, records)).await;
    server.stop().await;
    outcome
}

async fn measure_on(server: &Server, records: usize) -> anyhow::Result<Figures> {
    let client = http_client()?;
    let (api, customer) = set_up_account(&client, server.addr, 100).await?;
    let demo = connect(
        &api,
        json!({ "customerId": customer, "systemKey": "demo",
                "credentials": { "api_key": "bench-demo-key", "scale": 10 } }),
    )
    .await?;
    let fixture = Fixture::start(Kind::MaintainX, Sizes::small()).await;
    let maintainx = connect(
        &api,
        json!({ "customerId": customer, "systemKey": "maintainx",
                "credentials": { "api_key": API_KEY, "base_url": fixture.base_url() } }),
    )
    .await?;
    let bodies: Vec<Value> = (0..records)
        .map(|i| json!({ "title": format!("Bulk work order {i}"), "priority": "HIGH" }))
        .collect();
    let demo_figure = write(&api, &demo, &bodies).await.context("demo")?;
    let before = fixture.remote.data().work_orders.len();
    let maintainx_figure = write(&api, &maintainx, &bodies)
        .await
        .context("maintainx")?;
    let gained = fixture.remote.data().work_orders.len() - before;
    ensure!(
        gained == records,
        "the fixture gained {gained} work orders, not {records}"
    );
    // On a fixture of its own, of the same size as the one written to: a fixture's creates
    // slow down as it grows, and the bulk write's fixture has grown by the time it ends.
    let ceiling = ceiling(
        &Fixture::start(Kind::MaintainX, Sizes::small()).await,
        records,
    )
    .await?;
    Ok(Figures {
        demo: demo_figure,
        maintainx: maintainx_figure,
        ceiling,
    })
}

/// Connects and waits for the connection's first sync: the connection id.
async fn connect(api: &Api, input: Value) -> anyhow::Result<String> {
    let data = api.data(CONNECT, json!({ "input": input })).await?;
    let id = text_at(&data, "/connect/connection/id")?.to_owned();
    let run = text_at(&data, "/connect/connection/lastSyncRun/id")?.to_owned();
    let started = Instant::now();
    loop {
        let data = api.data(SYNC_STATUS, json!({ "id": run })).await?;
        let status = text_at(&data, "/syncRun/status")?;
        if status != "QUEUED" && status != "RUNNING" {
            ensure!(status == "SUCCEEDED", "the first sync ended {status}");
            return Ok(id);
        }
        ensure!(started.elapsed() < DEADLINE, "the first sync did not end");
        tokio::time::sleep(POLL).await;
    }
}

/// One `bulkWrite` of `bodies` to `connection`, waited for.
async fn write(api: &Api, connection: &str, bodies: &[Value]) -> anyhow::Result<Measured> {
    let input = json!({ "connectionId": connection, "entity": "WORK_ORDER",
        "operation": "CREATE", "records": bodies, "batchSize": BATCH_SIZE });
    let data = api.data(BULK_WRITE, json!({ "input": input })).await?;
    let id = text_at(&data, "/bulkWrite/id")?.to_owned();
    let started = Instant::now();
    let op = loop {
        let data = api.data(OPERATION, json!({ "id": id })).await?;
        let op = data["bulkOperation"].clone();
        let status = op["status"].as_str().unwrap_or_default();
        if status != "QUEUED" && status != "RUNNING" {
            break op;
        }
        ensure!(started.elapsed() < DEADLINE, "the operation did not end");
        tokio::time::sleep(POLL).await;
    };
    ensure!(
        op["status"] == "SUCCEEDED" && op["succeeded"] == bodies.len(),
        "the operation ended {op}"
    );
    let at = |field: &str| -> anyhow::Result<DateTime<chrono::FixedOffset>> {
        Ok(DateTime::parse_from_rfc3339(text_at(&op, field)?)?)
    };
    let secs = (at("/finishedAt")? - at("/startedAt")?).as_seconds_f64();
    Ok(Measured {
        rate: bodies.len() as f64 / secs,
        secs,
    })
}

/// The fixture's plain ceiling: `records` creates sent one after another by a bare client.
async fn ceiling(fixture: &Fixture, records: usize) -> anyhow::Result<Measured> {
    let client = http_client()?;
    let url = format!("{}/workorders", fixture.base_url());
    let started = Instant::now();
    for i in 0..records {
        let body = json!({ "title": format!("Plain work order {i}"), "priority": "HIGH" });
        let response = client
            .post(&url)
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(status.is_success(), "HTTP {status}: {text:.300}");
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Measured {
        rate: records as f64 / secs,
        secs,
    })
}
