//! Full-sync throughput of the real connectors against their protocol fixtures.
//!
//! For each system in turn (demo, maintainx, ibm_maximo, sap_s4hana, sap_ecc) the bench
//! starts a fresh server in-process on a fresh SQLite database (a temp dir), creates an
//! account and a customer over GraphQL and connects the system without a probe; the
//! connect queues a FULL run, which the bench waits for. The real systems read their
//! fixture (`millwright-fixtures`, in this process, over loopback HTTP) holding N assets
//! and N work orders (and the few records of every other entity type of
//! `Sizes::with_assets_and_work_orders`); the demo generates N / 4 records of each of its 8
//! entity types, 2 N in all, on the same store. records/s = every record the run handled /
//! the run's own `finishedAt - startedAt`; each real connector's is compared with the
//! demo's. To tell the fixture's share (it renders its answers in this process) from the
//! connector's, its logged requests are then sent again with a bare client, answers read
//! but not parsed ("remote alone"; the run minus it is a bound: the engine reads the next
//! page while it writes one). Peak RSS is the process's `VmHWM` (server, fixture and
//! bench client together), reset before each system (what an earlier system freed but the
//! allocator kept is in it: the RSS at the reset is printed). A run that did not succeed or
//! did not add exactly the fixture's records per entity type makes the process exit
//! non-zero.
//!
//! Run with `cargo bench --bench connectors`. `--records N` (after `--`) or
//! `CONNECTORS_RECORDS` sets N (50,000), `CONNECTORS_PAGE_SIZE` the server's
//! `sync_page_size` (its default, 500), `CONNECTORS_SYSTEMS=demo,maintainx` a subset.

#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

mod common;

use std::{net::SocketAddr, process::ExitCode, time::Duration, time::Instant};

use anyhow::{Context as _, anyhow, ensure};
use millwright::{
    catalog::{self, EntityType},
    config::Config,
};
use millwright_fixtures::{
    API_KEY, Fixture, Kind, SAP_CLIENT, SAP_PASSWORD, SAP_USER,
    data::{Entity, Sizes},
};
use serde_json::{Value, json};

use common::{
    Run, Server, http_client, load_average, peak_rss_kib, reset_peak_rss, server_config,
    set_up_account, text_at, thousands, wait_run,
};

/// Assets and work orders in each fixture.
const RECORDS: u32 = 50_000;
/// High enough that pacing never waits: the bench measures ingest, not politeness.
const REQUESTS_PER_SECOND: u32 = 100_000;
const CREDITS: i64 = 100;
const RUN_DEADLINE: Duration = Duration::from_secs(20 * 60);
const TARGET_DEMO_PERCENT: f64 = 50.0;
const TARGET_PEAK_RSS_MB: f64 = 300.0;

const CONNECT: &str = "mutation($input: ConnectInput!) {
    connect(input: $input) { connection { id lastSyncRun { id } } }
}";

/// The systems in the order synced: catalog key, deployment, fixture (none for the demo).
type System = (&'static str, &'static str, Option<Kind>);
const SYSTEMS: [System; 5] = [
    ("demo", "CLOUD", None),
    ("maintainx", "CLOUD", Some(Kind::MaintainX)),
    ("ibm_maximo", "CLOUD", Some(Kind::Maximo)),
    ("sap_s4hana", "CLOUD", Some(Kind::SapS4Hana)),
    ("sap_ecc", "ON_PREMISES", Some(Kind::SapEcc)),
];

struct Settings {
    records: u32,
    page_size: usize,
    systems: Option<String>,
}

impl Settings {
    fn from_env() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let flag = args
            .windows(2)
            .find(|w| w[0] == "--records")
            .map(|w| w[1].clone());
        let var = |name: &str| std::env::var(name).ok();
        let number = |text: Option<String>| text.and_then(|t| t.replace('_', "").parse().ok());
        Self {
            records: number(flag.or_else(|| var("CONNECTORS_RECORDS"))).unwrap_or(RECORDS),
            page_size: number(var("CONNECTORS_PAGE_SIZE"))
                .map_or(Config::default().sync.page_size, |n: u32| n.max(1) as usize),
            systems: var("CONNECTORS_SYSTEMS"),
        }
    }
}

/// One system's full run on one database.
struct Outcome {
    system: &'static str,
    records: u64,
    run_secs: f64,
    /// records / run_secs.
    rate: f64,
    /// Replaying the fixture's requests without the server: see `replay`.
    remote_secs: Option<f64>,
    peak_mb: Option<f64>,
    exact: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        millwright::telemetry::init(millwright::config::LogFormat::Pretty);
    }
    let settings = Settings::from_env();
    println!(
        "setup: {} assets and {} work orders per fixture, demo at scale {} (x 8 entity types); sync_page_size {}, sync_requests_per_second {REQUESTS_PER_SECOND}; SQLite; {}",
        thousands(settings.records.into()),
        thousands(settings.records.into()),
        thousands(demo_scale(&settings)),
        settings.page_size,
        load_average(),
    );
    let mut outcomes = Vec::new();
    let mut failed = false;
    for system in SYSTEMS {
        let only = settings.systems.as_deref();
        if only.is_some_and(|only| !only.contains(system.0)) {
            continue;
        }
        match measure(system, &settings).await {
            Ok(outcome) => {
                failed |= !outcome.exact;
                outcomes.push(outcome);
            }
            Err(err) => {
                println!("{}: FAILED: {err:#}", system.0);
                failed = true;
            }
        }
    }
    report_targets(&outcomes);
    if failed {
        println!("result: FAILED (see the lines above)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn demo_scale(settings: &Settings) -> u64 {
    u64::from(settings.records / 4).max(1)
}

async fn measure(system: System, settings: &Settings) -> anyhow::Result<Outcome> {
    let (key, _, kind) = system;
    let reset = reset_peak_rss();
    let start_mb = peak_rss_kib().unwrap_or_default() as f64 / 1024.0;
    let sizes = Sizes::with_assets_and_work_orders(settings.records);
    let fixture = match kind {
        Some(kind) => Some(Fixture::start(kind, sizes).await),
        None => None,
    };
    let dir = tempfile::tempdir().context("temp dir for the database")?;
    let mut config = server_config(format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("db").display()
    ));
    config.connectors.allow_private_targets = true;
    config.sync.page_size = settings.page_size;
    config.sync.requests_per_second = REQUESTS_PER_SECOND;
    let server = Server::start(key, config).await?;
    let credentials = match (&fixture, kind) {
        (Some(f), Some(Kind::MaintainX | Kind::Maximo)) => {
            json!({ "api_key": API_KEY, "base_url": f.base_url() })
        }
        (Some(f), _) => json!({
            "base_url": f.base_url(), "auth": "basic", "username": SAP_USER,
            "password": SAP_PASSWORD, "sap_client": SAP_CLIENT,
        }),
        (None, _) => json!({ "api_key": "bench", "scale": demo_scale(settings) }),
    };
    let synced = sync(server.addr, system, credentials).await;
    let peak_kib = peak_rss_kib();
    server.stop().await;
    let (run, wall) = synced?;

    let expected: Vec<(EntityType, u64)> = catalog::find(key)
        .ok_or_else(|| anyhow!("{key} is not in the catalog"))?
        .entities
        .iter()
        .map(|&entity| match &fixture {
            Some(f) => (entity, f.remote.data().count(fixture_entity(entity)) as u64),
            None => (entity, demo_scale(settings)),
        })
        .collect();
    let exact = check(key, &run, &expected);
    let run_secs = run.duration.as_secs_f64();
    let remote = match &fixture {
        Some(f) => {
            let served = f.remote.requests().len() as u64;
            let secs = replay(f)
                .await
                .context("replaying the fixture's requests")?;
            Some((served, secs))
        }
        None => None,
    };
    println!(
        "{key}: FULL run {}: {} records in {run_secs:.2} s (finishedAt - startedAt; {:.2} s from connect to seen finished) = {} records/s; {}; peak RSS {:.1} MB ({start_mb:.1} MB at the reset{}); {}",
        run.status,
        thousands(run.records()),
        wall.as_secs_f64(),
        thousands((run.records() as f64 / run_secs) as u64),
        remote.map_or("remote in process".into(), |(served, secs)| format!(
            "remote alone (its {} requests again, answers read, not parsed) {secs:.2} s = {:.1} % of the run",
            thousands(served),
            100.0 * secs / run_secs
        )),
        peak_kib.map_or(f64::NAN, |kib| kib as f64 / 1024.0),
        if reset { "" } else { ", VmHWM NOT reset" },
        load_average(),
    );
    let added: Vec<String> = run
        .entities
        .iter()
        .map(|e| format!("{} {}", e.entity, thousands(e.added)))
        .collect();
    println!("{key}: added: {}", added.join(", "));
    Ok(Outcome {
        system: key,
        records: run.records(),
        run_secs,
        rate: run.records() as f64 / run_secs,
        remote_secs: remote.map(|(_, secs)| secs),
        peak_mb: peak_kib.map(|kib| kib as f64 / 1024.0),
        exact,
    })
}

/// Creates an account and a customer, connects the system without a probe and waits for the
/// connect's FULL run: the run, and the time from connect to seeing it finished.
async fn sync(
    addr: SocketAddr,
    system: System,
    credentials: Value,
) -> anyhow::Result<(Run, Duration)> {
    let client = http_client()?;
    let (api, customer_id) = set_up_account(&client, addr, CREDITS).await?;
    let (key, deployment, _) = system;
    let input = json!({
        "customerId": customer_id, "systemKey": key, "deployment": deployment,
        "validate": false, "credentials": credentials,
    });
    let connected = Instant::now();
    let data = api
        .data(CONNECT, json!({ "input": input }))
        .await
        .context("connect")?;
    let run_id = text_at(&data, "/connect/connection/lastSyncRun/id")?;
    let run = wait_run(&api, run_id, RUN_DEADLINE).await?;
    Ok((run, connected.elapsed()))
}

fn fixture_entity(entity: EntityType) -> Entity {
    match entity {
        EntityType::Site => Entity::Site,
        EntityType::Location => Entity::Location,
        EntityType::Asset => Entity::Asset,
        EntityType::WorkOrder => Entity::WorkOrder,
        EntityType::Part => Entity::Part,
        EntityType::PurchaseOrder => Entity::PurchaseOrder,
        EntityType::Vendor => Entity::Vendor,
        EntityType::User => Entity::User,
    }
}

/// A FULL run on a fresh store adds every remote record of every entity type, nothing else.
fn check(name: &str, run: &Run, expected: &[(EntityType, u64)]) -> bool {
    let mut got: Vec<_> = run
        .entities
        .iter()
        .map(|e| {
            (
                e.entity.clone(),
                [e.added, e.updated, e.deleted, e.unchanged, e.skipped],
            )
        })
        .collect();
    let mut want: Vec<_> = expected
        .iter()
        .map(|(e, n)| (e.to_string(), [*n, 0, 0, 0, 0]))
        .collect();
    got.sort_unstable();
    want.sort_unstable();
    let ok = (run.status.as_str(), run.kind.as_str()) == ("SUCCEEDED", "FULL") && got == want;
    if !ok {
        println!(
            "{name}: WRONG: status {} kind {} (error {:?}); (entity, [added, updated, deleted, unchanged, skipped]) {got:?}, expected {want:?}",
            run.status, run.kind, run.error
        );
    }
    ok
}

fn report_targets(outcomes: &[Outcome]) {
    let Some(demo) = outcomes.iter().find(|o| o.system == "demo").map(|o| o.rate) else {
        println!("target: no demo figure to compare with: FAIL");
        return;
    };
    let (mut shares, mut peaks) = (Vec::new(), Vec::new());
    let (mut fast, mut small) = (true, true);
    for o in outcomes {
        let share = 100.0 * o.rate / demo;
        let remote = o.remote_secs.map_or(String::new(), |secs| {
            let own = o.records as f64 / (o.run_secs - secs);
            format!(
                ", remote alone {secs:.2} s, run minus it {:.1} % of demo",
                100.0 * own / demo
            )
        });
        let peak = o.peak_mb.unwrap_or(f64::NAN);
        println!(
            "summary {:<10}: {:>7} records in {:>6.2} s, {:>6} records/s, {share:5.1} % of demo{remote}, peak RSS {peak:.1} MB, counts {}",
            o.system,
            thousands(o.records),
            o.run_secs,
            thousands(o.rate as u64),
            if o.exact { "exact" } else { "WRONG" },
        );
        if o.system != "demo" {
            fast &= share >= TARGET_DEMO_PERCENT;
            shares.push(format!("{} {share:.1} %", o.system));
        }
        small &= peak < TARGET_PEAK_RSS_MB;
        peaks.push(format!("{} {peak:.1} MB", o.system));
    }
    let verdict = |met: bool| if met { "PASS" } else { "FAIL" };
    println!(
        "target: every real connector at least {TARGET_DEMO_PERCENT:.0} % of demo's records/s: {}: {}",
        shares.join(", "),
        verdict(fast),
    );
    println!(
        "target: peak RSS under {TARGET_PEAK_RSS_MB:.0} MB: {}: {}",
        peaks.join(", "),
        verdict(small),
    );
}

/// The remote alone: the fixture's logged requests again, one after another, through a bare
/// client that reads but does not parse the answers: the fixture's own share of the run
/// (it runs in this process) with loopback HTTP. Maximo's stable paging names its result
/// set by an id the first page hands out: the replay follows its own.
async fn replay(fixture: &Fixture) -> anyhow::Result<f64> {
    let client = http_client()?;
    let stable_id = |text: &str| -> Option<String> {
        let rest = text.split("stableId=").nth(1)?;
        Some(
            rest.chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect(),
        )
    };
    let mut stable: Option<String> = None;
    let started = Instant::now();
    for line in fixture.remote.requests() {
        let mut target = line.strip_prefix("GET ").context("not a GET")?.to_owned();
        if let (Some(logged), Some(ours)) = (stable_id(&target), &stable) {
            target = target.replace(&logged, ours);
        }
        let request = client.get(format!("http://{}{target}", fixture.addr));
        let request = match fixture.kind {
            Kind::MaintainX => request.bearer_auth(API_KEY),
            Kind::Maximo => request.header("apikey", API_KEY),
            Kind::SapS4Hana | Kind::SapEcc => request.basic_auth(SAP_USER, Some(SAP_PASSWORD)),
        };
        let response = request.header("accept", "application/json").send().await?;
        let status = response.status();
        let body = response.text().await?;
        ensure!(status.is_success(), "{target}: HTTP {status}: {body:.300}");
        stable = stable_id(&body).or(stable);
    }
    Ok(started.elapsed().as_secs_f64())
}
