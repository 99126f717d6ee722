//! What the benches share: the bench server's configuration and secrets, starting it in
//! this process and stopping it, an HTTP client, a GraphQL client with an account, sync runs
//! as GraphQL reports them, the process's peak RSS and the report's number formatting.

#![allow(dead_code, reason = "each bench uses its own part")]
#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::{
    fs::File,
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};
use chrono::{DateTime, Utc};
use millwright::{
    config::{Config, Secret},
    limits::RateLimit,
};
use reqwest::{Client, StatusCode, header::AUTHORIZATION};
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

const READY_POLL: Duration = Duration::from_millis(5);
const READY_DEADLINE: Duration = Duration::from_secs(30);
const SERVER_STOP_DEADLINE: Duration = Duration::from_secs(15);

pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
/// base64 of 32 bytes: the credentials key of the bench server.
pub const ENCRYPTION_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const RUN_POLL: Duration = Duration::from_millis(250);

const CREATE_ACCOUNT: &str = "mutation($name: String!, $credits: Int) {
    createAccount(input: {name: $name, credits: $credits}) { apiKey account { id } }
}";
const CREATE_CUSTOMER: &str = "mutation { createCustomer(input: {name: \"Plant\"}) { id } }";
const CANCEL: &str = "mutation($id: ID!) { cancelSyncRun(id: $id) { status } }";
const SYNC_RUN: &str = "query($id: ID!) { syncRun(id: $id) {
    id status kind trigger startedAt finishedAt recordsAdded recordsUpdated recordsDeleted
    entities { entity added updated deleted unchanged skipped } error { code message }
} }";

/// The server running in this process (`millwright::run`).
pub type ServerTask = JoinHandle<anyhow::Result<()>>;

/// The bench server's settings: `database_url`, a free port on loopback, the bench secrets,
/// and no health checks (they would only add load). Each bench adds its own.
pub fn server_config(database_url: String) -> Config {
    let mut config = Config::default();
    config.database.url = database_url;
    config.http.listen = "127.0.0.1:0".parse().expect("a socket address");
    config.security.admin_token = Some(Secret::new(ADMIN_TOKEN));
    config.security.encryption_key = Some(Secret::new(ENCRYPTION_KEY));
    config.connectors.health_check_interval_secs = 3600;
    // Rate limiting on (every request pays for it), high enough never to refuse the load.
    config.rate_limits.api_requests_per_second = RateLimit::MAX;
    config.rate_limits.api_burst = RateLimit::MAX;
    config
}

/// The real server in this process, as the binary runs it.
pub struct Server {
    pub addr: SocketAddr,
    name: String,
    shutdown: CancellationToken,
    task: ServerTask,
}

impl Server {
    /// Starts `millwright::run` on `config` and waits until it is ready; `name` labels what
    /// it reports when it stops.
    pub async fn start(name: &str, config: Config) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.http.listen)
            .await
            .context("bind 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(Box::pin(millwright::run(
            config,
            listener,
            shutdown.clone(),
        )));
        let server = Self {
            addr,
            name: name.to_owned(),
            shutdown,
            task,
        };
        if let Err(err) = wait_ready(&http_client()?, addr, READY_DEADLINE).await {
            server.stop().await;
            return Err(err);
        }
        Ok(server)
    }

    /// Shuts the server down and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        stop_server(&self.name, self.task).await;
    }
}

/// Polls `/readyz` until it answers 200, for at most `deadline`.
pub async fn wait_ready(
    client: &Client,
    addr: SocketAddr,
    deadline: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let response = client.get(format!("http://{addr}/readyz")).send().await;
        if response.is_ok_and(|r| r.status() == StatusCode::OK) {
            return Ok(());
        }
        ensure!(
            started.elapsed() < deadline,
            "server not ready within {} s",
            deadline.as_secs()
        );
        tokio::time::sleep(READY_POLL).await;
    }
}

/// Waits for a shut-down server to finish, and says how it ended if not cleanly.
pub async fn stop_server(name: &str, server: ServerTask) {
    match tokio::time::timeout(SERVER_STOP_DEADLINE, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => println!("{name}: server stopped with error: {err:#}"),
        Ok(Err(err)) => println!("{name}: server task failed: {err}"),
        Err(_) => println!(
            "{name}: server did not stop within {} s",
            SERVER_STOP_DEADLINE.as_secs()
        ),
    }
}

/// `millwright serve` as a child process, for figures of the server alone (its memory, its
/// CPU, its time to ready); killed when dropped.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Spawns the server binary (`BENCH_SERVER_BIN`, or this build's) on `database_url` with
    /// the bench secrets and the extra `settings` (`MILLWRIGHT_*` variables), its output to
    /// `log` (or nowhere); returns it once ready, with the time from spawn to ready.
    pub async fn start(
        client: &Client,
        database_url: &str,
        settings: &[(&str, &str)],
        log: Option<&Path>,
    ) -> anyhow::Result<(Self, Duration)> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let (stdout, stderr) = match log {
            Some(path) => {
                let file = File::create(path).context("server log file")?;
                (Stdio::from(file.try_clone()?), Stdio::from(file))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        // `BENCH_SERVER_BIN`: another build of the server (say, the previous commit's), to
        // compare two builds in one session on the same machine.
        let binary = std::env::var_os("BENCH_SERVER_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_millwright").into());
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .env("MILLWRIGHT_DATABASE_URL", database_url)
            .env("MILLWRIGHT_LISTEN", addr.to_string())
            .env("MILLWRIGHT_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("MILLWRIGHT_ENCRYPTION_KEY", ENCRYPTION_KEY)
            .envs(settings.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let started = Instant::now();
        let child = command.spawn().context("spawn millwright serve")?;
        let mut server = Self { child, addr };
        server.wait_ready(client).await?;
        Ok((server, started.elapsed()))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().context("SIGKILL the server")?;
        self.child.wait().context("reap the server")?;
        Ok(())
    }

    /// How the process ended, if it has; `None` while it runs.
    pub fn exited(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait().context("server status")
    }

    async fn wait_ready(&mut self, client: &Client) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let response = client
                .get(format!("http://{}/readyz", self.addr))
                .send()
                .await;
            if response.is_ok_and(|r| r.status() == StatusCode::OK) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait().context("server status")? {
                bail!("millwright serve exited before ready: {status}");
            }
            ensure!(
                started.elapsed() < READY_DEADLINE,
                "server not ready within {} s",
                READY_DEADLINE.as_secs()
            );
            tokio::time::sleep(READY_POLL).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Already exited is fine: the point is that it is gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr().context("listener address")?.port())
}

pub fn http_client() -> anyhow::Result<Client> {
    Ok(Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .no_proxy()
        .build()?)
}

/// An HTTP client keeping up to `idle` connections per host open for reuse: one per
/// concurrent caller of a load.
pub fn pooled_http_client(idle: usize) -> anyhow::Result<Client> {
    Ok(Client::builder()
        .pool_max_idle_per_host(idle)
        .timeout(REQUEST_TIMEOUT)
        .no_proxy()
        .build()?)
}

/// A GraphQL endpoint and the bearer token to call it with.
#[derive(Clone)]
pub struct Api {
    client: Client,
    url: String,
    token: String,
}

impl Api {
    pub fn new(client: &Client, addr: SocketAddr, token: &str) -> Self {
        Self {
            client: client.clone(),
            url: format!("http://{addr}/graphql"),
            token: token.to_owned(),
        }
    }

    /// The admin API of the server at `addr`.
    pub fn admin(client: &Client, addr: SocketAddr) -> Self {
        Self::new(client, addr, ADMIN_TOKEN)
    }

    /// The bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Runs an operation; its `data`, or why it failed (transport, status, GraphQL errors).
    pub async fn call(&self, query: &str, variables: Value) -> Result<Value, String> {
        let body = self
            .post(&json!({ "query": query, "variables": variables }))
            .await
            .map_err(|err| format!("{err:#}"))?;
        if let Some(errors) = body.get("errors") {
            return Err(format!("GraphQL errors: {errors}"));
        }
        body.get("data")
            .filter(|data| !data.is_null())
            .cloned()
            .ok_or_else(|| format!("no data: {body}"))
    }

    /// [`Api::call`] for setup and checks, where any failure ends the run.
    pub async fn data(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        self.call(query, variables)
            .await
            .map_err(|err| anyhow!(err))
    }

    /// Posts `body` (one request or a batch) and returns the answer as it is, errors included;
    /// fails on transport errors and statuses other than 200.
    pub async fn post(&self, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .client
            .post(&self.url)
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
            .json(body)
            .send()
            .await
            .context("request failed")?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .with_context(|| format!("HTTP {status}, body not JSON"))?;
        ensure!(status == StatusCode::OK, "HTTP {status}: {body}");
        Ok(body)
    }
}

pub fn text_at<'a>(data: &'a Value, pointer: &str) -> anyhow::Result<&'a str> {
    data.pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("no string at {pointer} in {data}"))
}

pub fn number_at(data: &Value, pointer: &str) -> u64 {
    data.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

/// An account created over the admin API: its id and a client with its API key.
pub struct Account {
    pub id: String,
    pub api: Api,
}

/// Creates an account named `name` with `credits`, as a client would.
pub async fn create_account(
    client: &Client,
    addr: SocketAddr,
    name: &str,
    credits: i64,
) -> anyhow::Result<Account> {
    let created = Api::admin(client, addr)
        .data(CREATE_ACCOUNT, json!({ "name": name, "credits": credits }))
        .await
        .context("createAccount")?;
    Ok(Account {
        id: text_at(&created, "/createAccount/account/id")?.to_owned(),
        api: Api::new(client, addr, text_at(&created, "/createAccount/apiKey")?),
    })
}

/// Creates the account (admin token) and its customer (API key), as a client would.
pub async fn set_up_account(
    client: &Client,
    addr: SocketAddr,
    credits: i64,
) -> anyhow::Result<(Api, String)> {
    let api = create_account(client, addr, "bench", credits).await?.api;
    let customer = api
        .data(CREATE_CUSTOMER, json!({}))
        .await
        .context("createCustomer")?;
    let customer_id = text_at(&customer, "/createCustomer/id")?.to_owned();
    Ok((api, customer_id))
}

/// A finished run as GraphQL reports it.
pub struct Run {
    pub status: String,
    pub kind: String,
    pub trigger: String,
    pub duration: Duration,
    pub entities: Vec<EntityCounts>,
    pub error: Option<String>,
}

pub struct EntityCounts {
    pub entity: String,
    pub added: u64,
    pub updated: u64,
    pub deleted: u64,
    pub unchanged: u64,
    pub skipped: u64,
}

impl Run {
    pub fn parse(run: &Value) -> anyhow::Result<Self> {
        let at = |field: &str| -> anyhow::Result<DateTime<Utc>> {
            let text = text_at(run, &format!("/{field}"))?;
            Ok(DateTime::parse_from_rfc3339(text)
                .with_context(|| format!("{field} `{text}`"))?
                .with_timezone(&Utc))
        };
        let duration = (at("finishedAt")? - at("startedAt")?)
            .to_std()
            .unwrap_or_default();
        let entities = run["entities"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|e| EntityCounts {
                entity: e["entity"].as_str().unwrap_or("?").to_owned(),
                added: number_at(e, "/added"),
                updated: number_at(e, "/updated"),
                deleted: number_at(e, "/deleted"),
                unchanged: number_at(e, "/unchanged"),
                skipped: number_at(e, "/skipped"),
            })
            .collect();
        let error = run["error"]
            .as_object()
            .map(|e| format!("{}: {}", e["code"], e["message"]));
        Ok(Self {
            status: text_at(run, "/status")?.to_owned(),
            kind: text_at(run, "/kind")?.to_owned(),
            trigger: text_at(run, "/trigger")?.to_owned(),
            duration,
            entities,
            error,
        })
    }

    pub fn sum(&self, field: impl Fn(&EntityCounts) -> u64) -> u64 {
        self.entities.iter().map(field).sum()
    }

    /// Every record the run handled: added, updated, deleted, unchanged and skipped.
    pub fn records(&self) -> u64 {
        self.sum(|e| e.added + e.updated + e.deleted + e.unchanged + e.skipped)
    }

    pub fn changes(&self) -> u64 {
        self.sum(|e| e.added + e.updated + e.deleted)
    }

    pub fn records_per_second(&self) -> f64 {
        self.records() as f64 / self.duration.as_secs_f64()
    }
}

/// Polls a run until it has ended; past the deadline it is cancelled and this fails.
pub async fn wait_run(api: &Api, run_id: &str, deadline: Duration) -> anyhow::Result<Run> {
    let started = Instant::now();
    loop {
        let data = api
            .data(SYNC_RUN, json!({ "id": run_id }))
            .await
            .context("syncRun")?;
        let run = &data["syncRun"];
        if matches!(
            run["status"].as_str(),
            Some("SUCCEEDED" | "FAILED" | "CANCELLED")
        ) {
            return Run::parse(run);
        }
        if started.elapsed() > deadline {
            let cancelled = api.data(CANCEL, json!({ "id": run_id })).await;
            bail!(
                "run {run_id} did not end within {} s (status {}, {} added so far); cancel: {}",
                deadline.as_secs(),
                run["status"],
                run["recordsAdded"],
                cancelled.map_or_else(|e| format!("{e:#}"), |_| "requested".into())
            );
        }
        tokio::time::sleep(RUN_POLL).await;
    }
}

/// Resets the process's peak RSS (`VmHWM`), so that each part of a bench gets its own figure.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// The machine's load, to tell a busy machine from a slow server.
pub fn load_average() -> String {
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let figures: Vec<&str> = loadavg.split_whitespace().take(3).collect();
    format!("load average {}", figures.join(" "))
}

/// 1600000 as `1,600,000`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A fresh PostgreSQL database for one measurement, created from
/// `MILLWRIGHT_TEST_POSTGRES_URL` (or the local default) and dropped with [`Self::drop`].
pub struct ScratchPostgres {
    admin: sea_orm::DatabaseConnection,
    pub name: String,
    pub url: String,
}

impl ScratchPostgres {
    pub async fn create(prefix: &str) -> anyhow::Result<Self> {
        use sea_orm::ConnectionTrait as _;
        let admin_url = std::env::var("MILLWRIGHT_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let admin = tokio::time::timeout(
            Duration::from_secs(5),
            sea_orm::Database::connect(&admin_url),
        )
        .await
        .with_context(|| format!("no answer from {admin_url} within 5 s"))?
        .with_context(|| format!("connect to {admin_url}"))?;
        let name = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        let base = admin_url
            .split('?')
            .next()
            .and_then(|url| url.rsplit_once('/'))
            .map(|(base, _)| base.to_owned())
            .context("a PostgreSQL URL ending in a database name")?;
        let url = format!("{base}/{name}");
        Ok(Self { admin, name, url })
    }

    /// Drops the database (and closes the admin connection).
    pub async fn drop(self) {
        use sea_orm::ConnectionTrait as _;
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(err) = self.admin.execute_unprepared(&sql).await {
            println!("postgres: could not drop database {}: {err}", self.name);
        }
        self.admin.close().await.ok();
    }

    /// Keeps the database (for a look at what a failed run stored).
    pub async fn keep(self) {
        println!(
            "postgres: database {} kept for inspection (drop it when done)",
            self.name
        );
        self.admin.close().await.ok();
    }
}
