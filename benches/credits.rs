//! Load benchmark for connections and their credits.
//!
//! For SQLite (a fresh temp file) and then PostgreSQL (a fresh database on
//! `127.0.0.1:5432`, skipped when unreachable), starts the real server in-process, creates an
//! account with 100,000 credits and one customer over GraphQL, and drives it with 32
//! concurrent clients for 10 seconds (after a 1 second warm-up that is not counted). Each
//! client loops `connect` to the demo system (tier 1, CLOUD: 1 credit, no probe) then
//! `disconnect`: connects and disconnects per second, p50 and p99 latency of each, errors.
//! Then it checks the accounting over GraphQL: the balance is back to where it started and
//! the credit ledger holds exactly one CONNECT and one DISCONNECT entry per connection, with
//! amounts and running balances that add up.
//!
//! Then the same again with two accounts at once (a fresh account each, `CLIENTS` clients
//! each, at the same time): their connects/s together against one account's (issue #20: on
//! PostgreSQL at least 1.6 times, which nothing shared by every account may prevent; SQLite
//! has one writer and is reported for comparison), each account's accounting checked.
//!
//! On PostgreSQL, then two `millwright serve` processes on the same database: one account on
//! one process, then an account on each process at once (issue #20: on 2 cores the two share
//! the machine, so what is shown is that nothing serializes them: together not below one).
//!
//! Run with `cargo bench --bench credits`; everything is reported on stdout, only 127.0.0.1
//! is used, and the process exits non-zero when the accounting is not exact.
//! `CREDITS_DB_CONNECTIONS` overrides the in-process server's pool size (default: the
//! server's own), for exploring.

#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

mod common;

use std::{
    net::SocketAddr,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::{Value, json};
use tempfile::TempDir;

use common::{Api, Server, pooled_http_client, server_config, set_up_account};

const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const POSTGRES_PREFIX: &str = "postgres://postgres@127.0.0.1:5432";
const POSTGRES_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const INITIAL_CREDITS: i64 = 100_000;
/// What one connection to the demo system costs: tier 1, CLOUD.
const CONNECT_COST: i64 = 1;
const CLIENTS: usize = 32;
const WARM_UP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(10);
/// Distinct error messages kept per database, to show what went wrong.
const ERROR_SAMPLES: usize = 5;

const TARGET_SQLITE_CONNECTS_PER_SECOND: f64 = 500.0;
/// PostgreSQL, two accounts at once against one (issue #20).
const TARGET_TWO_ACCOUNTS_RATIO: f64 = 1.6;

const CONNECT: &str = "mutation($c: ID!) {
    connect(input: {customerId: $c, systemKey: \"demo\", credentials: {api_key: \"k\", scale: 1}, validate: false}) {
        connection { id }
    }
}";
const DISCONNECT: &str = "mutation($id: ID!) { disconnect(id: $id) { status } }";
const BALANCE: &str = "{ viewer { account { credits { total used available } } } }";
const LEDGER_PAGE: &str = "query($after: String) {
    creditLedger(first: 100, after: $after) {
        nodes { kind amount balanceAfter }
        pageInfo { hasNextPage endCursor }
    }
}";

#[tokio::main]
async fn main() -> ExitCode {
    let mut failed = false;
    let mut sqlite_rate = None;
    match measure_sqlite().await {
        Ok(outcome) => {
            sqlite_rate = Some(outcome.connects_per_second);
            failed |= !outcome.exact;
        }
        Err(err) => {
            println!("sqlite: FAILED: {err:#}");
            failed = true;
        }
    }
    let mut postgres = None;
    match measure_postgres().await {
        Ok(Some(outcome)) => {
            failed |= !outcome.exact;
            postgres = Some(outcome);
        }
        Ok(None) => {}
        Err(err) => {
            println!("postgres: FAILED: {err:#}");
            failed = true;
        }
    }
    report_target(sqlite_rate);
    report_postgres_targets(sqlite_rate, postgres.as_ref());
    if failed {
        println!("result: FAILED (see the lines above)");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn report_target(sqlite_rate: Option<f64>) {
    let Some(rate) = sqlite_rate else {
        println!(
            "target: at least {TARGET_SQLITE_CONNECTS_PER_SECOND:.0} connects/s on SQLite: NOT met (no figure)"
        );
        return;
    };
    let met = rate >= TARGET_SQLITE_CONNECTS_PER_SECOND;
    println!(
        "target: at least {TARGET_SQLITE_CONNECTS_PER_SECOND:.0} connects/s on SQLite: {rate:.0} connects/s, {}",
        if met { "met" } else { "NOT met" }
    );
}

// --- databases ---------------------------------------------------------------------------

/// What `main` needs from one database's run.
struct Outcome {
    connects_per_second: f64,
    /// Two accounts at once, together.
    two_accounts_per_second: f64,
    /// PostgreSQL: one `millwright serve` process, then two at once (an account each).
    processes: Option<(f64, f64)>,
    exact: bool,
}

/// Issue #20: two `millwright serve` processes on the PostgreSQL database. One account on
/// process A alone, then an account on each at once: connects/s of one against both.
async fn two_processes(url: &str) -> anyhow::Result<(f64, f64)> {
    let client = pooled_http_client(2 * CLIENTS)?;
    let settings = [
        ("MILLWRIGHT_API_REQUESTS_PER_SECOND", "1000000"),
        ("MILLWRIGHT_API_BURST", "1000000"),
        ("MILLWRIGHT_HEALTH_CHECK_INTERVAL_SECS", "3600"),
        // As the in-process server, which logs nowhere: no line per request to format.
        ("RUST_LOG", "warn"),
    ];
    let (a, _) = common::ServerProcess::start(&client, url, &settings, None).await?;
    let (b, _) = common::ServerProcess::start(&client, url, &settings, None).await?;
    println!("postgres: -- two server processes on the database; process A alone first");
    let one = load_and_check("  process A alone", a.addr).await?;
    let (on_a, on_b) = tokio::join!(
        load_and_check("  process A", a.addr),
        load_and_check("  process B", b.addr)
    );
    let (on_a, on_b) = (on_a?, on_b?);
    ensure!(
        one.exact && on_a.exact && on_b.exact,
        "the accounting of the two-process run is not exact"
    );
    let both = on_a.connects_per_second + on_b.connects_per_second;
    println!(
        "postgres: two processes at once: {both:.1} connects/s together ({:.1} + {:.1}), {:.2} x one process's {:.1}",
        on_a.connects_per_second,
        on_b.connects_per_second,
        both / one.connects_per_second,
        one.connects_per_second,
    );
    Ok((one.connects_per_second, both))
}

/// Issue #20: PostgreSQL at least as fast as SQLite with one account, and two accounts at
/// once at least 1.6 times one.
fn report_postgres_targets(sqlite_rate: Option<f64>, postgres: Option<&Outcome>) {
    let Some(postgres) = postgres else {
        println!("target: PostgreSQL figures: NOT met (no figure)");
        return;
    };
    let one = postgres.connects_per_second;
    if let Some(sqlite) = sqlite_rate {
        println!(
            "target: PostgreSQL at least as fast as SQLite (one account): {one:.0} vs {sqlite:.0} connects/s, {}",
            if one >= sqlite { "met" } else { "NOT met" }
        );
    }
    if let Some((alone, both)) = postgres.processes {
        println!(
            "target: PostgreSQL two processes at once not below one (nothing serializes them): {both:.0} vs {alone:.0} connects/s, {}",
            if both >= alone { "met" } else { "NOT met" }
        );
    }
    let ratio = postgres.two_accounts_per_second / one;
    println!(
        "target: PostgreSQL two accounts at once at least {TARGET_TWO_ACCOUNTS_RATIO} x one: {:.0} vs {one:.0} connects/s = {ratio:.2} x, {}",
        postgres.two_accounts_per_second,
        if ratio >= TARGET_TWO_ACCOUNTS_RATIO {
            "met"
        } else {
            "NOT met"
        }
    );
}

async fn measure_sqlite() -> anyhow::Result<Outcome> {
    let dir: TempDir = tempfile::tempdir().context("temp dir for the database")?;
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    measure("sqlite", url).await
}

/// `None` when the server is unreachable; the database is dropped whatever happened.
async fn measure_postgres() -> anyhow::Result<Option<Outcome>> {
    let Some(admin) = connect_postgres_admin().await else {
        println!("postgres: skipped (unreachable)");
        return Ok(None);
    };
    let name = format!("mw_bench_{}", uuid::Uuid::now_v7().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .with_context(|| format!("CREATE DATABASE {name}"))?;
    // A panic inside the run is caught by its task, so the database is dropped regardless.
    let url = format!("{POSTGRES_PREFIX}/{name}");
    let run = tokio::spawn(async move {
        let mut outcome = measure("postgres", url.clone()).await?;
        outcome.processes = Some(two_processes(&url).await?);
        anyhow::Ok(outcome)
    });
    let outcome = run
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

/// One database: server up, account and customer, load, figures, accounting, server down.
async fn measure(name: &'static str, database_url: String) -> anyhow::Result<Outcome> {
    let mut config = server_config(database_url);
    if let Some(n) = std::env::var("CREDITS_DB_CONNECTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        config.database.max_connections = n;
    }
    let server = Server::start(name, config).await?;
    let result = one_then_two(name, server.addr).await;
    server.stop().await;
    result
}

/// One account, then two at once.
async fn one_then_two(name: &'static str, addr: SocketAddr) -> anyhow::Result<Outcome> {
    let one = load_and_check(name, addr).await?;
    println!("{name}: -- two accounts at once, {CLIENTS} clients each");
    let (a, b) = tokio::join!(
        load_and_check("  account A", addr),
        load_and_check("  account B", addr)
    );
    let (a, b) = (a?, b?);
    let two = a.connects_per_second + b.connects_per_second;
    println!(
        "{name}: two accounts at once: {two:.1} connects/s together ({:.1} + {:.1}), {:.2} x one account's {:.1}",
        a.connects_per_second,
        b.connects_per_second,
        two / one.connects_per_second,
        one.connects_per_second,
    );
    Ok(Outcome {
        connects_per_second: one.connects_per_second,
        two_accounts_per_second: two,
        processes: None,
        exact: one.exact && a.exact && b.exact,
    })
}

async fn load_and_check(name: &str, addr: SocketAddr) -> anyhow::Result<Outcome> {
    let client = pooled_http_client(CLIENTS)?;
    let (api, customer_id) = set_up_account(&client, addr, INITIAL_CREDITS).await?;
    let api = Arc::new(api);
    let tally = run_load(&api, &customer_id).await;
    let figures = Figures::of(&tally);
    report_load(name, &figures, &tally);
    let balance = balance(&api).await?;
    let ledger = read_ledger(&api).await?;
    let mismatches = check_accounting(&balance, &ledger, &tally);
    report_accounting(name, &balance, &ledger, &mismatches);
    Ok(Outcome {
        connects_per_second: figures.connects_per_second,
        two_accounts_per_second: 0.0,
        processes: None,
        exact: mismatches.is_empty(),
    })
}

// --- GraphQL -----------------------------------------------------------------------------

fn text_at<'a>(data: &'a Value, pointer: &str) -> Result<&'a str, String> {
    common::text_at(data, pointer).map_err(|err| err.to_string())
}

fn number_at(data: &Value, pointer: &str) -> anyhow::Result<i64> {
    data.pointer(pointer)
        .and_then(Value::as_i64)
        .ok_or_else(|| anyhow!("no integer at {pointer} in {data}"))
}

// --- load --------------------------------------------------------------------------------

/// The counted part of the run: operations that complete inside it are measured.
#[derive(Clone, Copy)]
struct Window {
    from: Instant,
    until: Instant,
}

impl Window {
    fn counts(&self, finished: Instant) -> bool {
        (self.from..=self.until).contains(&finished)
    }
}

/// What the clients saw. Latencies cover the measured window; the counts cover the whole
/// run (warm-up and the last iterations included), since the ledger holds all of it.
#[derive(Default)]
struct Tally {
    connect_latencies: Vec<Duration>,
    disconnect_latencies: Vec<Duration>,
    connects_ok: u64,
    disconnects_ok: u64,
    connect_errors: u64,
    disconnect_errors: u64,
    error_samples: Vec<String>,
}

impl Tally {
    fn absorb(&mut self, other: Tally) {
        self.connect_latencies.extend(other.connect_latencies);
        self.disconnect_latencies.extend(other.disconnect_latencies);
        self.connects_ok += other.connects_ok;
        self.disconnects_ok += other.disconnects_ok;
        self.connect_errors += other.connect_errors;
        self.disconnect_errors += other.disconnect_errors;
        for sample in other.error_samples {
            self.sample_error(sample);
        }
    }

    fn sample_error(&mut self, message: String) {
        if self.error_samples.len() < ERROR_SAMPLES && !self.error_samples.contains(&message) {
            self.error_samples.push(message);
        }
    }

    fn errors(&self) -> u64 {
        self.connect_errors + self.disconnect_errors
    }
}

/// All clients, warm-up then the measured window; each stops starting loops at its end.
async fn run_load(api: &Arc<Api>, customer_id: &str) -> Tally {
    let from = Instant::now() + WARM_UP;
    let window = Window {
        from,
        until: from + MEASURE,
    };
    let customer_id: Arc<str> = customer_id.into();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(client_loop(api.clone(), customer_id.clone(), window)))
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        match task.await {
            Ok(part) => total.absorb(part),
            Err(err) => {
                total.connect_errors += 1;
                total.sample_error(format!("client task failed: {err}"));
            }
        }
    }
    total
}

async fn client_loop(api: Arc<Api>, customer_id: Arc<str>, window: Window) -> Tally {
    let mut tally = Tally::default();
    while Instant::now() < window.until {
        let Some(id) = connect_once(&api, &customer_id, window, &mut tally).await else {
            continue;
        };
        disconnect_once(&api, &id, window, &mut tally).await;
    }
    tally
}

async fn connect_once(
    api: &Api,
    customer_id: &str,
    window: Window,
    tally: &mut Tally,
) -> Option<String> {
    let started = Instant::now();
    let answer = api.call(CONNECT, json!({ "c": customer_id })).await;
    let finished = Instant::now();
    let id = answer.and_then(|data| text_at(&data, "/connect/connection/id").map(str::to_owned));
    match id {
        Ok(id) => {
            tally.connects_ok += 1;
            if window.counts(finished) {
                tally.connect_latencies.push(finished - started);
            }
            Some(id)
        }
        Err(err) => {
            tally.connect_errors += 1;
            tally.sample_error(format!("connect: {err}"));
            None
        }
    }
}

async fn disconnect_once(api: &Api, id: &str, window: Window, tally: &mut Tally) {
    let started = Instant::now();
    let answer = api.call(DISCONNECT, json!({ "id": id })).await;
    let finished = Instant::now();
    let status = answer.and_then(|data| text_at(&data, "/disconnect/status").map(str::to_owned));
    match status.as_deref() {
        Ok("DISCONNECTED") => {
            tally.disconnects_ok += 1;
            if window.counts(finished) {
                tally.disconnect_latencies.push(finished - started);
            }
        }
        Ok(other) => {
            tally.disconnect_errors += 1;
            tally.sample_error(format!("disconnect: status {other}"));
        }
        Err(err) => {
            tally.disconnect_errors += 1;
            tally.sample_error(format!("disconnect: {err}"));
        }
    }
}

struct Figures {
    connects: usize,
    disconnects: usize,
    connects_per_second: f64,
    disconnects_per_second: f64,
    connect_p50_ms: f64,
    connect_p99_ms: f64,
    disconnect_p50_ms: f64,
    disconnect_p99_ms: f64,
}

impl Figures {
    fn of(tally: &Tally) -> Self {
        let mut connects = tally.connect_latencies.clone();
        let mut disconnects = tally.disconnect_latencies.clone();
        connects.sort_unstable();
        disconnects.sort_unstable();
        let seconds = MEASURE.as_secs_f64();
        Self {
            connects: connects.len(),
            disconnects: disconnects.len(),
            connects_per_second: connects.len() as f64 / seconds,
            disconnects_per_second: disconnects.len() as f64 / seconds,
            connect_p50_ms: percentile_ms(&connects, 50),
            connect_p99_ms: percentile_ms(&connects, 99),
            disconnect_p50_ms: percentile_ms(&disconnects, 50),
            disconnect_p99_ms: percentile_ms(&disconnects, 99),
        }
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

fn report_load(name: &str, figures: &Figures, tally: &Tally) {
    println!(
        "{name}: connects/s {:.1}, disconnects/s {:.1} ({} connects, {} disconnects completed in {} s, {CLIENTS} clients, after {} s warm-up)",
        figures.connects_per_second,
        figures.disconnects_per_second,
        figures.connects,
        figures.disconnects,
        MEASURE.as_secs(),
        WARM_UP.as_secs(),
    );
    println!(
        "{name}: connect latency p50 {:.2} ms, p99 {:.2} ms",
        figures.connect_p50_ms, figures.connect_p99_ms
    );
    println!(
        "{name}: disconnect latency p50 {:.2} ms, p99 {:.2} ms",
        figures.disconnect_p50_ms, figures.disconnect_p99_ms
    );
    println!(
        "{name}: errors {} (connect {}, disconnect {}; whole run incl. warm-up: {} connects and {} disconnects succeeded)",
        tally.errors(),
        tally.connect_errors,
        tally.disconnect_errors,
        tally.connects_ok,
        tally.disconnects_ok,
    );
    for sample in &tally.error_samples {
        println!("{name}: error sample: {sample}");
    }
}

// --- accounting --------------------------------------------------------------------------

struct Balance {
    total: i64,
    used: i64,
    available: i64,
}

async fn balance(api: &Api) -> anyhow::Result<Balance> {
    let data = api
        .data(BALANCE, json!({}))
        .await
        .context("viewer credits")?;
    let at = |field: &str| number_at(&data, &format!("/viewer/account/credits/{field}"));
    Ok(Balance {
        total: at("total")?,
        used: at("used")?,
        available: at("available")?,
    })
}

/// The whole credit ledger, folded as it is read (oldest first).
#[derive(Default)]
struct Ledger {
    entries: u64,
    connects: u64,
    disconnects: u64,
    /// GRANT entries other than one for the credits of `createAccount` opening the ledger.
    other_entries: u64,
    /// A GRANT of the initial credits as the very first entry.
    opens_with_grant: bool,
    connect_disconnect_sum: i64,
    sum: i64,
    /// CONNECT entries not of `-CONNECT_COST`, DISCONNECT entries not of `+CONNECT_COST`.
    wrong_amounts: u64,
    /// Entries whose `balanceAfter` is not the previous one plus their amount.
    balance_breaks: u64,
    last_balance: Option<i64>,
}

impl Ledger {
    fn add(&mut self, kind: &str, amount: i64, balance_after: i64) {
        if self.entries == 0 {
            self.opens_with_grant = kind == "GRANT" && amount == INITIAL_CREDITS;
        }
        let opening = self.last_balance.unwrap_or(if self.opens_with_grant {
            0
        } else {
            INITIAL_CREDITS
        });
        if balance_after != opening + amount {
            self.balance_breaks += 1;
        }
        match kind {
            "CONNECT" => {
                self.connects += 1;
                self.connect_disconnect_sum += amount;
                self.wrong_amounts += u64::from(amount != -CONNECT_COST);
            }
            "DISCONNECT" => {
                self.disconnects += 1;
                self.connect_disconnect_sum += amount;
                self.wrong_amounts += u64::from(amount != CONNECT_COST);
            }
            _ if self.entries == 0 && self.opens_with_grant => {}
            _ => self.other_entries += 1,
        }
        self.entries += 1;
        self.sum += amount;
        self.last_balance = Some(balance_after);
    }

    /// Credits the account held before the first entry: those of `createAccount`, unless the
    /// ledger books them as its opening GRANT.
    fn opening_balance(&self) -> i64 {
        if self.opens_with_grant {
            0
        } else {
            INITIAL_CREDITS
        }
    }
}

async fn read_ledger(api: &Api) -> anyhow::Result<Ledger> {
    let mut ledger = Ledger::default();
    let mut after = Value::Null;
    loop {
        let data = api
            .data(LEDGER_PAGE, json!({ "after": after }))
            .await
            .context("creditLedger")?;
        let page = &data["creditLedger"];
        let Some(nodes) = page["nodes"].as_array() else {
            bail!("no creditLedger nodes in {data}");
        };
        for node in nodes {
            let kind = node["kind"].as_str().unwrap_or("?");
            ledger.add(
                kind,
                number_at(node, "/amount")?,
                number_at(node, "/balanceAfter")?,
            );
        }
        if page["pageInfo"]["hasNextPage"] != json!(true) {
            return Ok(ledger);
        }
        after = page["pageInfo"]["endCursor"].clone();
        ensure!(after.is_string(), "hasNextPage without endCursor: {data}");
    }
}

/// Every way the balance and the ledger disagree with each other or with what clients saw.
fn check_accounting(balance: &Balance, ledger: &Ledger, tally: &Tally) -> Vec<String> {
    let mut mismatches = Vec::new();
    let mut expect = |ok: bool, what: String| {
        if !ok {
            mismatches.push(what);
        }
    };
    expect(
        balance.total == INITIAL_CREDITS,
        format!("total {} != {INITIAL_CREDITS}", balance.total),
    );
    expect(balance.used == 0, format!("used {} != 0", balance.used));
    expect(
        balance.available == INITIAL_CREDITS,
        format!("available {} != {INITIAL_CREDITS}", balance.available),
    );
    expect(
        ledger.connect_disconnect_sum == 0,
        format!(
            "sum of CONNECT and DISCONNECT amounts {} != 0",
            ledger.connect_disconnect_sum
        ),
    );
    expect(
        ledger.connects == tally.connects_ok,
        format!(
            "{} CONNECT entries != {} successful connects",
            ledger.connects, tally.connects_ok
        ),
    );
    expect(
        ledger.disconnects == tally.connects_ok,
        format!(
            "{} DISCONNECT entries != {} successful connects",
            ledger.disconnects, tally.connects_ok
        ),
    );
    expect(
        ledger.opening_balance() + ledger.sum == balance.available,
        format!(
            "opening balance {} + sum of all amounts {} != available {}",
            ledger.opening_balance(),
            ledger.sum,
            balance.available
        ),
    );
    expect(
        ledger.last_balance.unwrap_or(ledger.opening_balance()) == balance.available,
        format!(
            "last balanceAfter {:?} != available {}",
            ledger.last_balance, balance.available
        ),
    );
    expect(
        ledger.wrong_amounts == 0,
        format!(
            "{} CONNECT/DISCONNECT entries not of {CONNECT_COST} credit",
            ledger.wrong_amounts
        ),
    );
    expect(
        ledger.balance_breaks == 0,
        format!(
            "{} entries whose balanceAfter != previous balanceAfter + amount",
            ledger.balance_breaks
        ),
    );
    expect(
        ledger.other_entries == 0,
        format!(
            "{} GRANT/ADJUSTMENT entries besides an opening grant",
            ledger.other_entries
        ),
    );
    mismatches
}

fn report_accounting(name: &str, balance: &Balance, ledger: &Ledger, mismatches: &[String]) {
    println!(
        "{name}: credits total {}, used {}, available {}; ledger {} entries: {} CONNECT, {} DISCONNECT, sum of amounts {}",
        balance.total,
        balance.used,
        balance.available,
        ledger.entries,
        ledger.connects,
        ledger.disconnects,
        ledger.sum,
    );
    if ledger.opens_with_grant {
        println!(
            "{name}: ledger opens with a GRANT of the {INITIAL_CREDITS} credits of createAccount"
        );
    } else {
        println!(
            "{name}: ledger has no GRANT entry for the {INITIAL_CREDITS} credits of createAccount: it starts from {INITIAL_CREDITS}, so the sum of all amounts must be available - {INITIAL_CREDITS}"
        );
    }
    if mismatches.is_empty() {
        println!("{name}: accounting: exact");
    } else {
        for mismatch in mismatches {
            println!("{name}: accounting: MISMATCH: {mismatch}");
        }
    }
}
