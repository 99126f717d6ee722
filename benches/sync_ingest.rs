//! Ingest benchmark for the sync engine.
//!
//! For SQLite (a fresh temp file) and then PostgreSQL (a fresh database on
//! `127.0.0.1:5432`, skipped when unreachable), starts the real server in-process and, over
//! GraphQL, creates an account and a customer, then connects the demo system at a large
//! `scale` without a probe. The connect queues a FULL run of all 8 entity types of the demo
//! (it always syncs all of them, `scale` records each: 200,000, so 1.6 M records); the bench
//! waits for it and reports its duration (`finishedAt - startedAt`), its per-entity counts
//! and records per second. Then it triggers an INCREMENTAL run (the demo moves one
//! generation: about 1 % changed, a few added and deleted) and reports its duration, its
//! changes, and how its time and its changes compare with the full run's. Then the
//! simulated remote moves one generation on its own and a second INCREMENTAL run reads two
//! generations of changes from a store of the same size: about twice the changes, so its
//! time should double if it follows the changes, and stay put if it follows the data size.
//! Peak RSS is the process's `VmHWM` (the server runs in this process), reset at the start
//! of each database.
//!
//! The ceiling: with the server stopped, the same rows (the demo's records of the same
//! generation, unified and hashed as the sync stores them) are inserted into the same
//! `records` table with sea-orm directly, in batches of the page size, one transaction per
//! batch, under a second (empty) connection. Sync records/s are reported as a share of the
//! ceiling's rows/s. The same pass times the simulated remote alone (generating the pages,
//! full and incremental) and the unify and hash work, which shows where the sync's time goes.
//!
//! Flows (issue #19): then 20 enabled flows are saved on WORK_ORDER (CREATED and UPDATED),
//! half of them matching 1 % of the records (emitting a `flow.triggered` event each), and a
//! second connection at the same scale runs its FULL sync with them in the same process:
//! its records/s against the first full run's (no flows), the flows' counters checked
//! (every work order evaluated by every flow, the matching ones matched, no error).
//!
//! PostgreSQL's page writes go through `COPY` (issue #20): its target is at least 50,000
//! records/s and at least 3 × the ceiling measured in the same run, with exact counts.
//!
//! Run with `cargo bench --bench sync_ingest`; everything is reported on stdout, only
//! 127.0.0.1 is used, every wait has a deadline, and the process exits non-zero when a run
//! fails or its counts are wrong. `SYNC_INGEST_SCALE` (both databases) and
//! `SYNC_INGEST_PAGE_SIZE` override the scale and the page size, and
//! `SYNC_INGEST_DATABASES=sqlite` (or `postgres`) measures one database, for exploring.

#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

mod common;

use std::{
    net::SocketAddr,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, ensure};
use chrono::Utc;
use entity::record;
use millwright::{
    catalog::{self, EntityType},
    config::Config,
    connectors::{
        Connector, ReadRequest, RemoteRecord,
        demo::{self, DemoConnector},
    },
    db::{self, Db},
    ids::{self, Kind},
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DbBackend, EntityTrait, PaginatorTrait, QueryFilter, Statement, TransactionTrait,
};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use uuid::Uuid;

use common::{
    Api, Run, Server, http_client, load_average, peak_rss_kib, reset_peak_rss, server_config,
    set_up_account, text_at, thousands, wait_run,
};

const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const POSTGRES_PREFIX: &str = "postgres://postgres@127.0.0.1:5432";
const POSTGRES_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Records per entity type in the demo system; it always syncs all 8 entity types.
const SCALE: u64 = 200_000;
/// Records asked of the remote per page, and rows per batch of the ceiling.
const PAGE_SIZE: usize = 1000;
/// High enough that pacing never waits: the bench measures ingest, not politeness.
const REQUESTS_PER_SECOND: u32 = 100_000;
const DEMO_API_KEY: &str = "bench";
const CREDITS: i64 = 10;

const FULL_DEADLINE: Duration = Duration::from_secs(20 * 60);
const INCREMENTAL_DEADLINE: Duration = Duration::from_secs(10 * 60);
const EMPTY_RUN_DEADLINE: Duration = Duration::from_secs(60);
const CEILING_DEADLINE: Duration = Duration::from_secs(20 * 60);

const TARGET_SQLITE_RECORDS_PER_SECOND: f64 = 50_000.0;
const TARGET_CEILING_PERCENT: f64 = 50.0;
/// PostgreSQL with COPY (issue #20): records/s, and times the ceiling of the same run.
const TARGET_POSTGRES_RECORDS_PER_SECOND: f64 = 50_000.0;
const TARGET_POSTGRES_CEILING_FACTOR: f64 = 3.0;
/// With twice the changes on a store of the same size, the incremental run's own time (the
/// simulated remote's taken out) grows at least this share of the changes' growth.
const TARGET_CHANGE_FOLLOWING: f64 = 0.75;
/// Ingest with 20 flows on the synced entity, as a share of ingest without.
const TARGET_FLOWS_SHARE: f64 = 80.0;
/// Flows in the flows pass, and how many of them match (1 % of the work orders each).
const FLOWS: usize = 20;
const MATCHING_FLOWS: usize = 10;
const CREATE_FLOW: &str = "mutation($input: FlowInput!) { createFlow(input: $input) { id } }";
const FLOW_COUNTS: &str =
    "query($id: ID!) { flow(id: $id) { evaluations matches errors lastError } }";

const CONNECT: &str = "mutation($input: ConnectInput!) {
    connect(input: $input) { connection { id lastSyncRun { id } } }
}";
const TRIGGER: &str = "mutation($id: ID!) {
    triggerSync(connectionId: $id, kind: INCREMENTAL) { id }
}";

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        millwright::telemetry::init(millwright::config::LogFormat::Pretty);
    }
    let mut failed = false;
    let mut summaries = Vec::new();
    // `SYNC_INGEST_DATABASES=sqlite` (or `postgres`) measures one database only.
    let only = std::env::var("SYNC_INGEST_DATABASES").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|list| list.contains(name));
    if wanted("sqlite") {
        match measure_sqlite(&Settings::for_database("sqlite", SCALE)).await {
            Ok(summary) => summaries.push(summary),
            Err(err) => {
                println!("sqlite: FAILED: {err:#}");
                failed = true;
            }
        }
    }
    if wanted("postgres") {
        match measure_postgres(&Settings::for_database("postgres", SCALE)).await {
            Ok(Some(summary)) => summaries.push(summary),
            Ok(None) => {}
            Err(err) => {
                println!("postgres: FAILED: {err:#}");
                failed = true;
            }
        }
    }
    report_targets(&summaries);
    failed |= summaries.iter().any(|s| !s.counts_exact);
    if failed {
        println!("result: FAILED (see the lines above)");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

// --- settings ----------------------------------------------------------------------------

/// What one database's part syncs.
#[derive(Clone)]
struct Settings {
    name: &'static str,
    scale: u64,
    page_size: usize,
    entities: &'static [EntityType],
}

impl Settings {
    fn for_database(name: &'static str, scale: u64) -> Self {
        let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let demo = catalog::find("demo").expect("the demo system is in the catalog");
        Self {
            name,
            scale: number("SYNC_INGEST_SCALE").unwrap_or(scale),
            page_size: number("SYNC_INGEST_PAGE_SIZE").map_or(PAGE_SIZE, |n| n.max(1) as usize),
            entities: demo.entities,
        }
    }

    fn total(&self) -> u64 {
        self.scale * self.entities.len() as u64
    }

    fn describe(&self) {
        let names: Vec<String> = self.entities.iter().map(ToString::to_string).collect();
        println!(
            "{}: setup: demo system at scale {} (records per entity type); the demo always syncs all {} entity types [{}]: {} records per full run; sync_page_size {}, sync_requests_per_second {REQUESTS_PER_SECOND}; {}",
            self.name,
            thousands(self.scale),
            self.entities.len(),
            names.join(", "),
            thousands(self.total()),
            self.page_size,
            load_average(),
        );
        if self.scale != SCALE {
            println!(
                "{}: setup: NOTE scale {} ({} records), not the {} asked for (SYNC_INGEST_SCALE)",
                self.name,
                thousands(self.scale),
                thousands(self.total()),
                thousands(SCALE),
            );
        }
    }
}

// --- databases ---------------------------------------------------------------------------

/// What the final verdicts need from one database.
struct Summary {
    name: &'static str,
    scale: u64,
    records_per_second: f64,
    ceiling_rows_per_second: f64,
    /// The flows pass's records/s as a share of the full run's, in per cent: the whole run,
    /// and its WORK_ORDER pass alone.
    flows_share: f64,
    flows_entity_share: f64,
    counts_exact: bool,
}

async fn measure_sqlite(settings: &Settings) -> anyhow::Result<Summary> {
    let dir: TempDir = tempfile::tempdir().context("temp dir for the database")?;
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    measure(url, settings).await
}

/// `None` when the server is unreachable; the database is dropped whatever happened.
async fn measure_postgres(settings: &Settings) -> anyhow::Result<Option<Summary>> {
    let Some(admin) = connect_postgres_admin().await else {
        println!("postgres: skipped (unreachable)");
        return Ok(None);
    };
    println!("postgres: server: {}", postgres_settings(&admin).await);
    let name = format!("mw_bench_{}", Uuid::now_v7().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .with_context(|| format!("CREATE DATABASE {name}"))?;
    // A panic inside the run is caught by its task, so the database is dropped regardless.
    let url = format!("{POSTGRES_PREFIX}/{name}");
    let settings = settings.clone();
    let outcome = tokio::spawn(async move { measure(url, &settings).await })
        .await
        .map_err(|err| anyhow!("the run panicked: {err}"))
        .and_then(|result| result);
    let dropped = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
    if let Err(err) = dropped {
        println!("postgres: could not drop database {name}: {err}");
    }
    admin.close().await.ok();
    outcome.map(Some)
}

async fn connect_postgres_admin() -> Option<DatabaseConnection> {
    let connecting = Database::connect(POSTGRES_ADMIN_URL);
    match tokio::time::timeout(POSTGRES_CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(admin)) => Some(admin),
        Ok(Err(err)) => {
            println!("postgres: cannot connect to {POSTGRES_ADMIN_URL}: {err}");
            None
        }
        Err(_) => {
            println!("postgres: no answer from {POSTGRES_ADMIN_URL} within 5 s");
            None
        }
    }
}

/// The settings that shape the figures: autovacuum (planner statistics), durability, cache.
async fn postgres_settings(admin: &DatabaseConnection) -> String {
    let sql = "SELECT 'PostgreSQL ' || current_setting('server_version') \
        || ', autovacuum ' || current_setting('autovacuum') \
        || ', synchronous_commit ' || current_setting('synchronous_commit') \
        || ', shared_buffers ' || current_setting('shared_buffers') AS settings";
    let row = admin
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await;
    row.ok()
        .flatten()
        .and_then(|row| row.try_get::<String>("", "settings").ok())
        .unwrap_or_else(|| "settings unknown".into())
}

/// One database: the syncs through the server, then the ceiling with the server stopped.
async fn measure(database_url: String, settings: &Settings) -> anyhow::Result<Summary> {
    let name = settings.name;
    settings.describe();
    let peak_reset = reset_peak_rss();
    let server = Server::start(name, config(database_url.clone(), settings)).await?;
    let synced = run_syncs(name, server.addr, &database_url, settings).await;
    let peak_kib = peak_rss_kib();
    server.stop().await;
    let synced = synced?;
    report_peak_rss(name, peak_kib, peak_reset);
    let ceiling = measure_ceiling(&database_url, synced.empty_connection, settings);
    let ceiling = tokio::time::timeout(CEILING_DEADLINE, ceiling)
        .await
        .map_err(|_| anyhow!("the ceiling did not finish within {CEILING_DEADLINE:?}"))??;
    report_ceiling(name, &ceiling, &synced, settings);
    // The peak is a maximum; the kernel's counters are approximate, so keep the larger read.
    let end_kib = peak_rss_kib().max(peak_kib).unwrap_or_default();
    println!(
        "{name}: done; peak RSS of the process with the ceiling pass included: {:.1} MB; {}",
        end_kib as f64 / 1024.0,
        load_average()
    );
    Ok(Summary {
        name,
        scale: settings.scale,
        records_per_second: synced.full.records_per_second(),
        ceiling_rows_per_second: ceiling.rows_per_second(),
        flows_share: synced.flows.share,
        flows_entity_share: synced.flows.entity_share,
        counts_exact: synced.counts_exact && ceiling.stored == ceiling.rows,
    })
}

// --- server ------------------------------------------------------------------------------

fn config(database_url: String, settings: &Settings) -> Config {
    let mut config = server_config(database_url);
    config.sync.page_size = settings.page_size;
    config.sync.requests_per_second = REQUESTS_PER_SECOND;
    config
}

// --- GraphQL -----------------------------------------------------------------------------

/// Connects the demo system without a probe; the connection and its CONNECT run.
async fn connect(api: &Api, customer_id: &str, scale: u64) -> anyhow::Result<(String, String)> {
    let input = json!({
        "customerId": customer_id, "systemKey": "demo", "validate": false,
        "credentials": { "api_key": DEMO_API_KEY, "scale": scale },
    });
    let data = api
        .data(CONNECT, json!({ "input": input }))
        .await
        .context("connect")?;
    let connection = text_at(&data, "/connect/connection/id")?.to_owned();
    let run = text_at(&data, "/connect/connection/lastSyncRun/id")?.to_owned();
    Ok((connection, run))
}

// --- sync runs ---------------------------------------------------------------------------

/// What the server part of one database produced.
struct Synced {
    full: Run,
    flows: FlowsPass,
    incremental: Run,
    /// The incremental run after the remote moved two generations.
    second: Run,
    empty_connection: Uuid,
    counts_exact: bool,
}

async fn run_syncs(
    name: &str,
    addr: SocketAddr,
    database_url: &str,
    settings: &Settings,
) -> anyhow::Result<Synced> {
    let client = http_client()?;
    let (api, customer_id) = set_up_account(&client, addr, CREDITS).await?;

    let connected = Instant::now();
    let (connection, full_id) = connect(&api, &customer_id, settings.scale).await?;
    let full = wait_run(&api, &full_id, FULL_DEADLINE).await?;
    let full_wall = connected.elapsed();
    let full_exact = check_full(name, &full, settings);
    report_full(name, &full, full_wall, settings);

    let incremental = run_incremental(name, &api, &connection, &full).await?;
    // The remote moves on once more by itself (its state is in the database the server
    // uses): the next run reads two generations of changes.
    let connection_id = ids::decode(Kind::Connection, &connection)
        .map_err(|err| anyhow!("connection id {connection}: {err}"))?;
    let db = Db::connect(&config(database_url.to_owned(), settings)).await?;
    demo_connector(&db, connection_id, settings.scale)
        .begin_sync()
        .await?;
    db.close().await?;
    let second = run_incremental(name, &api, &connection, &full).await?;
    let incremental_exact =
        check_incremental(name, &incremental) & check_incremental(name, &second);

    let flows = run_with_flows(name, &api, &customer_id, settings, (&connection, &full)).await?;

    // The ceiling's rows go under a second connection that holds nothing.
    let (empty, empty_run) = connect(&api, &customer_id, 0).await?;
    let empty_run = wait_run(&api, &empty_run, EMPTY_RUN_DEADLINE).await?;
    ensure!(
        empty_run.status == "SUCCEEDED" && empty_run.records() == 0,
        "the scale-0 connection's run: {} with {} records",
        empty_run.status,
        empty_run.records()
    );
    Ok(Synced {
        counts_exact: full_exact && incremental_exact && flows.exact,
        flows,
        full,
        incremental,
        second,
        empty_connection: ids::decode(Kind::Connection, &empty)
            .map_err(|err| anyhow!("connection id {empty}: {err}"))?,
    })
}

/// The flows pass: what it measured.
struct FlowsPass {
    /// Its records/s as a share of the full run without flows, in per cent.
    share: f64,
    /// The same for the WORK_ORDER pass alone.
    entity_share: f64,
    exact: bool,
}

/// Saves the flows, connects a second demo connection at the same scale (its own simulated
/// remote, at its first generation: the same records as the first full run) and waits for
/// its FULL run, which the flows see.
async fn run_with_flows(
    name: &str,
    api: &Api,
    customer_id: &str,
    settings: &Settings,
    (plain, without): (&str, &Run),
) -> anyhow::Result<FlowsPass> {
    let mut ids = Vec::with_capacity(FLOWS);
    for n in 0..FLOWS {
        // Work order i is titled `Inspect asset {i}`: `endsWith("00")` holds for 1 % of them.
        // The demo has no CANCELLED work order: the other half never matches, after looking
        // at two fields of the urgent quarter.
        let condition = if n < MATCHING_FLOWS {
            format!(r#"record.title.endsWith("00") && record.priority != "NONE" && {n} >= 0"#)
        } else {
            format!(r#"record.priority == "URGENT" && record.status == "CANCELLED" && {n} >= 0"#)
        };
        let input = json!({ "name": format!("bench flow {n}"),
            "trigger": { "entity": "WORK_ORDER", "changes": ["CREATED", "UPDATED"] },
            "condition": condition, "actions": [{ "type": "EMIT_EVENT" }] });
        let data = api
            .data(CREATE_FLOW, json!({ "input": input }))
            .await
            .context("createFlow")?;
        ids.push(text_at(&data, "/createFlow/id")?.to_owned());
    }
    let connected = Instant::now();
    let (with_flows, run_id) = connect(api, customer_id, settings.scale).await?;
    let run = wait_run(api, &run_id, FULL_DEADLINE).await?;
    let wall = connected.elapsed();
    // The WORK_ORDER pass alone: from the end of the pass before it (ASSET) to its own end,
    // as their `records.changed` events say.
    let plain_pass = pass_time(api, plain, "ASSET", "WORK_ORDER").await?;
    let flows_pass = pass_time(api, &with_flows, "ASSET", "WORK_ORDER").await?;
    let entity_share = 100.0 * plain_pass / flows_pass;
    println!(
        "{name}: flows: the WORK_ORDER pass alone ({} records): {:.2} s without flows, {:.2} s \
         with ({} and {} records/s): {entity_share:.1} %",
        thousands(settings.scale),
        plain_pass,
        flows_pass,
        thousands((settings.scale as f64 / plain_pass) as u64),
        thousands((settings.scale as f64 / flows_pass) as u64),
    );
    let mut exact = check_full(name, &run, settings);
    let share = 100.0 * run.records_per_second() / without.records_per_second();
    println!(
        "{name}: flows: FULL run with {FLOWS} flows on WORK_ORDER ({MATCHING_FLOWS} matching 1 %): \
         {} records in {:.2} s = {} records/s (wall {:.2} s); without flows {} records/s: {share:.1} %",
        thousands(run.records()),
        run.duration.as_secs_f64(),
        thousands(run.records_per_second() as u64),
        wall.as_secs_f64(),
        thousands(without.records_per_second() as u64),
    );
    // The flows' counters are saved at the end of each entity pass: they settle within moments.
    let work_orders = settings.scale as i64;
    let matching = (1..=work_orders).filter(|i| i % 100 == 0).count() as i64;
    for (n, id) in ids.iter().enumerate() {
        let expected_matches = if n < MATCHING_FLOWS { matching } else { 0 };
        let mut counts = Value::Null;
        for _ in 0..40 {
            counts = api
                .data(FLOW_COUNTS, json!({ "id": id }))
                .await
                .context("flow")?;
            if counts["flow"]["evaluations"] == work_orders {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let flow = &counts["flow"];
        if flow["evaluations"] != work_orders
            || flow["matches"] != expected_matches
            || flow["errors"] != 0
        {
            println!(
                "{name}: flows: WRONG counters of flow {n}: {flow} (expected {work_orders} \
                 evaluations, {expected_matches} matches, 0 errors)"
            );
            exact = false;
        }
    }
    println!(
        "{name}: flows: counters exact: {} ({} evaluations, {} matches in all)",
        exact,
        thousands(FLOWS as u64 * work_orders as u64),
        thousands(MATCHING_FLOWS as u64 * matching as u64),
    );
    Ok(FlowsPass {
        share,
        entity_share,
        exact,
    })
}

/// Seconds between the `records.changed` events of a connection's first full run that end
/// the passes `before` and `entity`.
async fn pass_time(api: &Api, connection: &str, before: &str, entity: &str) -> anyhow::Result<f64> {
    let data = api
        .data(
            "query($c: ID!) { events(first: 8, filter: {types: [RECORDS_CHANGED], connectionId: $c}) {
                nodes { occurredAt data } } }",
            json!({ "c": connection }),
        )
        .await
        .context("events")?;
    let at = |name: &str| -> anyhow::Result<chrono::DateTime<Utc>> {
        let node = data["events"]["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["data"]["entity"] == name))
            .ok_or_else(|| anyhow!("no records.changed event of {name}"))?;
        let text = node["occurredAt"].as_str().unwrap_or_default();
        Ok(chrono::DateTime::parse_from_rfc3339(text)?.with_timezone(&Utc))
    };
    Ok((at(entity)? - at(before)?).as_seconds_f64())
}

async fn run_incremental(
    name: &str,
    api: &Api,
    connection: &str,
    full: &Run,
) -> anyhow::Result<Run> {
    let triggered = Instant::now();
    let data = api
        .data(TRIGGER, json!({ "id": connection }))
        .await
        .context("triggerSync")?;
    let run_id = text_at(&data, "/triggerSync/id")?.to_owned();
    let run = wait_run(api, &run_id, INCREMENTAL_DEADLINE).await?;
    report_incremental(name, &run, triggered.elapsed(), full);
    Ok(run)
}

/// A FULL run on a fresh store adds every record of every entity type, and nothing else.
fn check_full(name: &str, run: &Run, settings: &Settings) -> bool {
    let mut problems = Vec::new();
    if (run.status.as_str(), run.kind.as_str(), run.trigger.as_str())
        != ("SUCCEEDED", "FULL", "CONNECT")
    {
        problems.push(format!(
            "status {} kind {} trigger {} (error {:?})",
            run.status, run.kind, run.trigger, run.error
        ));
    }
    if run.entities.len() != settings.entities.len() {
        problems.push(format!(
            "{} entity types in the run, {} expected",
            run.entities.len(),
            settings.entities.len()
        ));
    }
    for e in &run.entities {
        if (e.added, e.updated, e.deleted, e.unchanged, e.skipped) != (settings.scale, 0, 0, 0, 0) {
            problems.push(format!(
                "{}: added {} updated {} deleted {} unchanged {} skipped {} (expected {} added)",
                e.entity, e.added, e.updated, e.deleted, e.unchanged, e.skipped, settings.scale
            ));
        }
    }
    report_problems(name, "full run", &problems)
}

/// An INCREMENTAL run reads only what changed: nothing unchanged, nothing skipped.
fn check_incremental(name: &str, run: &Run) -> bool {
    let mut problems = Vec::new();
    if (run.status.as_str(), run.kind.as_str()) != ("SUCCEEDED", "INCREMENTAL") {
        problems.push(format!(
            "status {} kind {} (error {:?})",
            run.status, run.kind, run.error
        ));
    }
    let (unchanged, skipped) = (run.sum(|e| e.unchanged), run.sum(|e| e.skipped));
    if unchanged + skipped > 0 {
        problems.push(format!("unchanged {unchanged}, skipped {skipped}"));
    }
    if run.changes() == 0 {
        problems.push("no changes".into());
    }
    report_problems(name, "incremental run", &problems)
}

fn report_problems(name: &str, what: &str, problems: &[String]) -> bool {
    for problem in problems {
        println!("{name}: {what}: WRONG: {problem}");
    }
    problems.is_empty()
}

fn report_full(name: &str, run: &Run, wall: Duration, settings: &Settings) {
    println!(
        "{name}: full run ({} {}, all {} entity types at scale {}): {} in {:.2} s (finishedAt - startedAt; {:.2} s from connect to seen finished), {} records, {} records/s",
        run.trigger,
        run.kind,
        settings.entities.len(),
        thousands(settings.scale),
        run.status,
        run.duration.as_secs_f64(),
        wall.as_secs_f64(),
        thousands(run.records()),
        thousands(run.records_per_second() as u64),
    );
    report_entities(name, run);
}

fn report_entities(name: &str, run: &Run) {
    for e in &run.entities {
        println!(
            "{name}:   {:<15} added {:>7} updated {:>6} deleted {:>6} unchanged {:>7}",
            e.entity, e.added, e.updated, e.deleted, e.unchanged
        );
    }
}

fn report_incremental(name: &str, run: &Run, wall: Duration, full: &Run) {
    println!(
        "{name}: incremental run ({} {}): {} in {:.3} s (finishedAt - startedAt; {:.2} s from trigger to seen finished), {} changes (added {}, updated {}, deleted {}), {} changes/s",
        run.trigger,
        run.kind,
        run.status,
        run.duration.as_secs_f64(),
        wall.as_secs_f64(),
        thousands(run.changes()),
        run.sum(|e| e.added),
        run.sum(|e| e.updated),
        run.sum(|e| e.deleted),
        thousands(run.records_per_second() as u64),
    );
    report_entities(name, run);
    let time_share = run.duration.as_secs_f64() / full.duration.as_secs_f64();
    let change_share = run.changes() as f64 / full.records() as f64;
    let factor = time_share / change_share;
    println!(
        "{name}: incremental / full: time {:.2} %, changes / total records {:.2} %, time share / change share {factor:.2} (1 if a change cost what an appended record costs, {:.0} if the run read the whole data set; the test of following the changes is the run with twice the changes below)",
        100.0 * time_share,
        100.0 * change_share,
        1.0 / change_share,
    );
}

// --- memory ------------------------------------------------------------------------------

fn report_peak_rss(name: &str, peak_kib: Option<u64>, reset: bool) {
    let since = if reset {
        "since the start of this database's part (VmHWM reset through /proc/self/clear_refs)"
    } else {
        "since the bench started (VmHWM could not be reset)"
    };
    match peak_kib {
        Some(kib) => println!(
            "{name}: peak RSS of the process (server in-process, with the bench client): {:.1} MB, {since}",
            kib as f64 / 1024.0
        ),
        None => println!("{name}: peak RSS: VmHWM not readable"),
    }
}

// --- ceiling -----------------------------------------------------------------------------

/// Times of the ceiling pass, and of the work around it that the sync also does.
#[derive(Default)]
struct Ceiling {
    rows: u64,
    batches: u64,
    /// Generating the full pages in the simulated remote.
    remote_full: Duration,
    /// Reading the next generation's changes from the simulated remote (incremental).
    remote_incremental: Duration,
    incremental_records: u64,
    /// The same for the two generations the second incremental run read.
    remote_second: Duration,
    second_records: u64,
    /// Unifying, hashing and building the rows.
    transform: Duration,
    /// INSERT and COMMIT: the ceiling.
    insert: Duration,
    stored: u64,
}

impl Ceiling {
    fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.insert.as_secs_f64()
    }
}

/// A plain sea-orm pool on the bench database, with the server's SQLite settings.
async fn connect_plain(url: &str) -> anyhow::Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(url.to_owned());
    options.max_connections(2).sqlx_logging(false);
    if url.starts_with("sqlite:") {
        let cache_mib = Config::default().database.sqlite_cache_mib;
        options.map_sqlx_sqlite_opts(move |opts| db::sqlite_settings(opts, cache_mib));
    }
    Database::connect(options)
        .await
        .context("connect with sea-orm")
}

fn demo_connector(db: &Db, remote_id: Uuid, scale: u64) -> DemoConnector {
    let mut credentials = Map::new();
    credentials.insert("api_key".into(), DEMO_API_KEY.into());
    credentials.insert("scale".into(), scale.into());
    DemoConnector::new(db, remote_id, &credentials)
}

/// The same remote data as the synced connection (same API key and scale, generation 0),
/// inserted under `connection_id` in batches of the page size.
async fn measure_ceiling(
    url: &str,
    connection_id: Uuid,
    settings: &Settings,
) -> anyhow::Result<Ceiling> {
    let db = connect_plain(url).await?;
    // The empty connection's simulated remote, started over at generation 0 with the
    // synced connection's API key and scale.
    let remote_db = Db::connect(&config(url.to_owned(), settings)).await?;
    demo::forget(remote_db.conn(), connection_id).await?;
    let connector = demo_connector(&remote_db, connection_id, settings.scale);
    connector.begin_sync().await?;
    let mut ceiling = Ceiling::default();
    let mut marks = Vec::new();
    let pass = ids::new_id();
    for &entity in settings.entities {
        let mark = ingest_entity(
            &db,
            &connector,
            connection_id,
            entity,
            pass,
            settings,
            &mut ceiling,
        )
        .await
        .with_context(|| format!("ceiling for {entity}"))?;
        marks.push((entity, mark));
    }
    // The next generation, as the first incremental run saw it, then two more, as the
    // second saw them: the remote's share of their time.
    connector.begin_sync().await?;
    let mut next_marks = Vec::new();
    for (entity, mark) in marks {
        let (time, records, mark) = read_changes(&connector, entity, mark, settings).await?;
        ceiling.remote_incremental += time;
        ceiling.incremental_records += records;
        next_marks.push((entity, mark));
    }
    connector.begin_sync().await?;
    connector.begin_sync().await?;
    for (entity, mark) in next_marks {
        let (time, records, _) = read_changes(&connector, entity, mark, settings).await?;
        ceiling.remote_second += time;
        ceiling.second_records += records;
    }
    demo::forget(remote_db.conn(), connection_id).await?;
    remote_db.close().await.ok();
    ceiling.stored = record::Entity::find()
        .filter(record::Column::ConnectionId.eq(connection_id))
        .count(&db)
        .await
        .context("count the ceiling's rows")?;
    db.close().await.ok();
    Ok(ceiling)
}

/// One entity type, page by page; the remote's modification mark at its end.
async fn ingest_entity(
    db: &DatabaseConnection,
    connector: &DemoConnector,
    connection_id: Uuid,
    entity: EntityType,
    pass: Uuid,
    settings: &Settings,
    ceiling: &mut Ceiling,
) -> anyhow::Result<Option<String>> {
    let mut request = ReadRequest {
        page_size: settings.page_size,
        ..Default::default()
    };
    loop {
        let started = Instant::now();
        let page = connector.read_page(entity, &request).await?;
        ceiling.remote_full += started.elapsed();

        let started = Instant::now();
        let rows = page
            .records
            .into_iter()
            .map(|remote| row(connector, connection_id, entity, remote, pass))
            .collect::<anyhow::Result<Vec<_>>>()?;
        ceiling.transform += started.elapsed();

        let started = Instant::now();
        ceiling.rows += insert_batch(db, rows).await?;
        ceiling.insert += started.elapsed();
        ceiling.batches += 1;

        match page.next_cursor {
            Some(cursor) => request.cursor = Some(cursor),
            None => return Ok(page.high_water_mark),
        }
    }
}

/// A row as the sync stores a new record: unified fields, the remote record, its hash.
fn row(
    connector: &DemoConnector,
    connection_id: Uuid,
    entity: EntityType,
    remote: RemoteRecord,
    pass: Uuid,
) -> anyhow::Result<record::ActiveModel> {
    let hash = content_hash(&remote.data);
    let unified = connector
        .unify(entity, &remote.data)
        .map_err(|why| anyhow!("unify {}: {why}", remote.key))?;
    let now = Utc::now();
    Ok(record::ActiveModel {
        id: Set(ids::new_id()),
        connection_id: Set(connection_id),
        entity: Set(entity),
        key: Set(remote.key),
        data: Set(unified),
        remote_data: Set(Some(remote.data)),
        content_hash: Set(hash),
        remote_created_at: Set(remote.created_at),
        remote_updated_at: Set(remote.updated_at),
        first_seen_at: Set(now),
        modified_at: Set(now),
        deleted_at: Set(None),
        seen_pass: Set(Some(pass)),
    })
}

/// The record store's content hash: the first 16 bytes of SHA-256 of the JSON text, in hex.
fn content_hash(remote: &Value) -> String {
    let digest = Sha256::digest(remote.to_string().as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

async fn insert_batch(
    db: &DatabaseConnection,
    rows: Vec<record::ActiveModel>,
) -> anyhow::Result<u64> {
    let count = rows.len() as u64;
    if count == 0 {
        return Ok(0);
    }
    let txn = db.begin().await?;
    record::Entity::insert_many(rows)
        .exec_without_returning(&txn)
        .await?;
    txn.commit().await?;
    Ok(count)
}

/// Reads one entity type's changes since `mark`, timing the simulated remote alone: the
/// time, the records read and the mark at the end.
async fn read_changes(
    connector: &DemoConnector,
    entity: EntityType,
    mark: Option<String>,
    settings: &Settings,
) -> anyhow::Result<(Duration, u64, Option<String>)> {
    let mut request = ReadRequest {
        modified_since: mark,
        page_size: settings.page_size,
        ..Default::default()
    };
    let (mut time, mut records) = (Duration::ZERO, 0);
    loop {
        let started = Instant::now();
        let page = connector.read_page(entity, &request).await?;
        time += started.elapsed();
        records += page.records.len() as u64;
        match page.next_cursor {
            Some(cursor) => request.cursor = Some(cursor),
            None => return Ok((time, records, page.high_water_mark)),
        }
    }
}

fn report_ceiling(name: &str, ceiling: &Ceiling, synced: &Synced, settings: &Settings) {
    let secs = |d: Duration| d.as_secs_f64();
    println!(
        "{name}: ceiling: plain sea-orm INSERT of {} rows in {} batches of {} (one transaction each) into the same records table: {:.2} s, {} rows/s ({} rows stored{})",
        thousands(ceiling.rows),
        ceiling.batches,
        settings.page_size,
        secs(ceiling.insert),
        thousands(ceiling.rows_per_second() as u64),
        thousands(ceiling.stored),
        if ceiling.stored == ceiling.rows {
            ""
        } else {
            ": WRONG"
        },
    );
    let full = &synced.full;
    let share = 100.0 * full.records_per_second() / ceiling.rows_per_second();
    println!(
        "{name}: sync / ceiling: {} / {} = {share:.1} % (target >= {TARGET_CEILING_PERCENT:.0} %: {})",
        thousands(full.records_per_second() as u64),
        thousands(ceiling.rows_per_second() as u64),
        verdict(share >= TARGET_CEILING_PERCENT),
    );
    let outside = ceiling.remote_full + ceiling.transform + ceiling.insert;
    println!(
        "{name}: where the full run's {:.2} s could go, measured alone: simulated remote generating the pages {:.2} s, unify + hash + rows {:.2} s, INSERT + COMMIT {:.2} s; sum {:.2} s, the rest (upsert instead of INSERT, sync bookkeeping per page, overheads) {:.2} s",
        secs(full.duration),
        secs(ceiling.remote_full),
        secs(ceiling.transform),
        secs(ceiling.insert),
        secs(outside),
        secs(full.duration) - secs(outside),
    );
    report_incremental_costs(name, ceiling, synced);
}

/// Each incremental run's time without the simulated remote, per change; and the second
/// (two generations) against the first (one) on a store of the same size.
fn report_incremental_costs(name: &str, ceiling: &Ceiling, synced: &Synced) {
    let secs = |d: Duration| d.as_secs_f64();
    let full = &synced.full;
    let per_record = 1e6 * secs(full.duration) / full.records().max(1) as f64;
    let runs = [
        (
            "one generation",
            &synced.incremental,
            ceiling.remote_incremental,
            ceiling.incremental_records,
        ),
        (
            "two generations",
            &synced.second,
            ceiling.remote_second,
            ceiling.second_records,
        ),
    ];
    let mut own = Vec::new();
    for (what, run, remote, read) in runs {
        let rest = secs(run.duration) - secs(remote);
        own.push(rest);
        println!(
            "{name}: incremental ({what}): the simulated remote alone takes {:.3} s to find {} changed records (it walks every record's history: the part that grows with the data size and the generations) of the run's {:.3} s; the other {rest:.3} s are {:.0} us per change, against {per_record:.0} us per record in the full run",
            secs(remote),
            thousands(read),
            secs(run.duration),
            1e6 * rest / run.changes().max(1) as f64,
        );
    }
    let (first, second) = (&synced.incremental, &synced.second);
    let change_ratio = second.changes() as f64 / first.changes().max(1) as f64;
    let own_ratio = own[1] / own[0];
    println!(
        "{name}: same store size, two generations of changes against one: changes x{change_ratio:.2} ({} -> {}), run time x{:.2} ({:.3} s -> {:.3} s), without the simulated remote x{own_ratio:.2} (x{change_ratio:.2} if the time follows the changes, x1 if it follows the data size; at least {:.2}: {})",
        thousands(first.changes()),
        thousands(second.changes()),
        secs(second.duration) / secs(first.duration),
        secs(first.duration),
        secs(second.duration),
        TARGET_CHANGE_FOLLOWING * change_ratio,
        verdict(own_ratio >= TARGET_CHANGE_FOLLOWING * change_ratio),
    );
}

// --- verdicts ----------------------------------------------------------------------------

fn report_targets(summaries: &[Summary]) {
    for s in summaries {
        println!(
            "summary {}: scale {}, {} records/s, ceiling {} rows/s, {:.1} % of the ceiling, counts {}",
            s.name,
            thousands(s.scale),
            thousands(s.records_per_second as u64),
            thousands(s.ceiling_rows_per_second as u64),
            100.0 * s.records_per_second / s.ceiling_rows_per_second,
            if s.counts_exact { "exact" } else { "WRONG" },
        );
    }
    for s in summaries {
        let share = 100.0 * s.records_per_second / s.ceiling_rows_per_second;
        println!(
            "target: sync at least {TARGET_CEILING_PERCENT:.0} % of the ceiling on {}: {share:.1} %, {}",
            s.name,
            verdict(share >= TARGET_CEILING_PERCENT)
        );
    }
    for s in summaries {
        println!(
            "target: ingest with {FLOWS} flows on the synced entity at least \
             {TARGET_FLOWS_SHARE:.0} % of the rate without on {}: the WORK_ORDER pass {:.1} %, \
             {}; the whole run (flows on one of 8 entity types) {:.1} %",
            s.name,
            s.flows_entity_share,
            verdict(s.flows_entity_share >= TARGET_FLOWS_SHARE),
            s.flows_share,
        );
    }
    if let Some(s) = summaries.iter().find(|s| s.name == "postgres") {
        let factor = s.records_per_second / s.ceiling_rows_per_second;
        let met = s.records_per_second >= TARGET_POSTGRES_RECORDS_PER_SECOND
            && factor >= TARGET_POSTGRES_CEILING_FACTOR
            && s.counts_exact;
        println!(
            "target: PostgreSQL with COPY (scale {}): at least {} records/s and at least {:.0} x the plain batched INSERT ceiling of the same run, counts exact: {} records/s, {factor:.2} x the ceiling's {} rows/s, counts {}: {}",
            thousands(s.scale),
            thousands(TARGET_POSTGRES_RECORDS_PER_SECOND as u64),
            TARGET_POSTGRES_CEILING_FACTOR,
            thousands(s.records_per_second as u64),
            thousands(s.ceiling_rows_per_second as u64),
            if s.counts_exact { "exact" } else { "WRONG" },
            verdict(met),
        );
    }
    match summaries.iter().find(|s| s.name == "sqlite") {
        Some(s) => println!(
            "target: at least {} records/s on SQLite (scale {}): {} records/s, {}",
            thousands(TARGET_SQLITE_RECORDS_PER_SECOND as u64),
            thousands(s.scale),
            thousands(s.records_per_second as u64),
            verdict(s.records_per_second >= TARGET_SQLITE_RECORDS_PER_SECOND)
        ),
        None => println!(
            "target: at least {} records/s on SQLite: NOT met (no figure)",
            thousands(TARGET_SQLITE_RECORDS_PER_SECOND as u64)
        ),
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}
