//! What the in-process benches share: waiting for the server and stopping it, the bench
//! server's secrets, a GraphQL client with an account, sync runs as GraphQL reports them,
//! the process's peak RSS and the report's number formatting.

#![allow(dead_code, reason = "each bench uses its own part")]
#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};
use chrono::{DateTime, Utc};
use reqwest::{Client, StatusCode, header::AUTHORIZATION};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

const READY_POLL: Duration = Duration::from_millis(10);
const SERVER_STOP_DEADLINE: Duration = Duration::from_secs(15);

pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
/// base64 of 32 bytes: the credentials key of the bench server.
pub const ENCRYPTION_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const RUN_POLL: Duration = Duration::from_millis(250);

const CREATE_ACCOUNT: &str = "mutation($credits: Int) {
    createAccount(input: {name: \"bench\", credits: $credits}) { apiKey }
}";
const CREATE_CUSTOMER: &str = "mutation { createCustomer(input: {name: \"Plant\"}) { id } }";
const CANCEL: &str = "mutation($id: ID!) { cancelSyncRun(id: $id) { status } }";
const SYNC_RUN: &str = "query($id: ID!) { syncRun(id: $id) {
    id status kind trigger startedAt finishedAt recordsAdded recordsUpdated recordsDeleted
    entities { entity added updated deleted unchanged skipped } error { code message }
} }";

/// The server running in this process (`millwright::run`).
pub type ServerTask = JoinHandle<anyhow::Result<()>>;

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

pub fn http_client() -> anyhow::Result<Client> {
    Ok(Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .no_proxy()
        .build()?)
}

/// A GraphQL endpoint and the bearer token to call it with.
pub struct Api {
    client: Client,
    url: String,
    authorization: String,
}

impl Api {
    pub fn new(client: &Client, addr: SocketAddr, token: &str) -> Self {
        Self {
            client: client.clone(),
            url: format!("http://{addr}/graphql"),
            authorization: format!("Bearer {token}"),
        }
    }

    /// Runs an operation; its `data`, or why it failed (transport, status, GraphQL errors).
    pub async fn data(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let response = self
            .client
            .post(&self.url)
            .header(AUTHORIZATION, &self.authorization)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .context("request failed")?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .with_context(|| format!("HTTP {status}, body not JSON"))?;
        ensure!(status == StatusCode::OK, "HTTP {status}: {body}");
        if let Some(errors) = body.get("errors") {
            bail!("GraphQL errors: {errors}");
        }
        body.get("data")
            .filter(|data| !data.is_null())
            .cloned()
            .ok_or_else(|| anyhow!("no data: {body}"))
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

/// Creates the account (admin token) and its customer (API key), as a client would.
pub async fn set_up_account(
    client: &Client,
    addr: SocketAddr,
    credits: i64,
) -> anyhow::Result<(Api, String)> {
    let admin = Api::new(client, addr, ADMIN_TOKEN);
    let created = admin
        .data(CREATE_ACCOUNT, json!({ "credits": credits }))
        .await
        .context("createAccount")?;
    let api = Api::new(client, addr, text_at(&created, "/createAccount/apiKey")?);
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
