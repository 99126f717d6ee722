//! Spawns a server per test and speaks GraphQL to it; waits for what a test expects to
//! happen; the fake webhook receivers, the setup every test file shares, and a headless
//! browser.

mod browser;
mod postgres;
mod receiver;
mod setup;

use std::{net::SocketAddr, time::Duration};

use millwright::{
    config::{Config, Secret},
    limits::RateLimit,
};
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use browser::{Browser, screenshot_dir};
pub use receiver::{Received, Receiver, SlowReceiver};
pub use setup::{connect, demo_input, grant, log_end, number, setup, webhooks_settled};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// base64 of 32 bytes: the credentials key of every test server.
pub const ENCRYPTION_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A throwaway database: a SQLite file in a temp dir, or a fresh PostgreSQL database.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDb {
    pub async fn new() -> Self {
        match std::env::var("MILLWRIGHT_TEST_POSTGRES_URL") {
            Ok(base) if !base.is_empty() => Self::postgres(base).await,
            _ => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
                Self {
                    url,
                    _dir: Some(dir),
                    postgres: None,
                }
            }
        }
    }

    /// A fresh PostgreSQL database without any table (not even the migrations'), when the
    /// tests run against PostgreSQL; `None` on SQLite.
    pub async fn empty_postgres() -> Option<Self> {
        let base = std::env::var("MILLWRIGHT_TEST_POSTGRES_URL")
            .ok()
            .filter(|base| !base.is_empty())?;
        let name = format!("mw_test_{}", uuid::Uuid::now_v7().simple());
        postgres::create_empty_database(&base, &name).await;
        Some(Self {
            url: postgres::database_url(&base, &name),
            _dir: None,
            postgres: Some((base, name)),
        })
    }

    async fn postgres(base: String) -> Self {
        let name = format!("mw_test_{}", uuid::Uuid::now_v7().simple());
        postgres::create_database(&base, &name).await;
        Self {
            url: postgres::database_url(&base, &name),
            _dir: None,
            postgres: Some((base, name)),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((base, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs outside async code; a small runtime of its own removes the database.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let admin = Database::connect(&base).await.ok()?;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                admin.execute_unprepared(&sql).await.ok()?;
                admin.close().await.ok()
            })
        })
        .join();
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    // Declared last: the database outlives the server.
    pub db: std::sync::Arc<TestDb>,
}

pub fn test_config(db: &TestDb) -> Config {
    let mut config = Config::default();
    config.database.url = db.url.clone();
    config.database.max_connections = 5;
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.security.admin_token = Some(Secret::new(ADMIN_TOKEN));
    config.security.encryption_key = Some(Secret::new(ENCRYPTION_KEY));
    // Tests of other things are not throttled (a slow machine makes their bursts denser);
    // the rate limits are on all the same, and tests/api/limits.rs sets its own.
    let limits = &mut config.rate_limits;
    limits.api_requests_per_second = RateLimit::MAX;
    limits.api_burst = RateLimit::MAX;
    limits.failed_auth_per_second = RateLimit::MAX;
    limits.failed_auth_burst = RateLimit::MAX;
    config
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        // Server logs in full only when asked for, e.g. `RUST_LOG=debug cargo test name --
        // --nocapture`. Otherwise its errors go to the test's captured output, which the test
        // runner prints when the test fails (the server runs on the test's own thread).
        if std::env::var_os("RUST_LOG").is_some() {
            millwright::telemetry::init(millwright::config::LogFormat::Pretty);
        } else {
            let _ = tracing_subscriber::fmt()
                .with_test_writer()
                .with_env_filter(tracing_subscriber::EnvFilter::new("error"))
                .try_init();
        }
        let db = TestDb::new().await;
        let mut config = test_config(&db);
        adjust(&mut config);
        Self::start(db, config).await
    }

    pub async fn start(db: TestDb, config: Config) -> Self {
        Self::start_shared(std::sync::Arc::new(db), config).await
    }

    /// Another server process on the same database.
    pub async fn another(&self) -> Self {
        self.another_with(|_| {}).await
    }

    /// Another server process on the same database, configured by `adjust`.
    pub async fn another_with(&self, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = test_config(&self.db);
        adjust(&mut config);
        Self::start_shared(self.db.clone(), config).await
    }

    async fn start_shared(db: std::sync::Arc<TestDb>, config: Config) -> Self {
        let listener = TcpListener::bind(config.http.listen)
            .await
            .expect("bind port 0");
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(millwright::run(config, listener, shutdown.clone()));
        let app = Self {
            addr,
            http: reqwest::Client::new(),
            shutdown,
            server: Some(server),
            db,
        };
        app.wait_ready().await;
        app
    }

    async fn wait_ready(&self) {
        wait_until(
            Duration::from_secs(5),
            "the server to be ready",
            async || {
                let response = self.http.get(self.url("/readyz")).send().await;
                response.is_ok_and(|r| r.status() == 200)
            },
        )
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The server's `/metrics` page.
    pub async fn metrics(&self) -> String {
        metrics_at(&self.http, &self.addr.to_string()).await
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/graphql/ws", self.addr)
    }

    /// Posts a GraphQL request and returns the status and the JSON body.
    pub async fn post(&self, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = self.http.post(self.url("/graphql")).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON response"))
    }

    /// Runs a GraphQL operation and returns the whole response body.
    pub async fn gql(&self, token: &str, query: &str, variables: Value) -> Value {
        self.post(
            Some(token),
            json!({ "query": query, "variables": variables }),
        )
        .await
        .1
    }

    /// Runs an operation that must succeed; returns `data`.
    pub async fn ok(&self, token: &str, query: &str, variables: Value) -> Value {
        let body = self.gql(token, query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// Creates an account through the admin API; returns (account id, API key).
    pub async fn create_account(&self, name: &str, credits: i32) -> (String, String) {
        let data = self
            .ok(
                ADMIN_TOKEN,
                "mutation($name: String!, $credits: Int) {
                    createAccount(input: {name: $name, credits: $credits}) { account { id } apiKey }
                }",
                json!({ "name": name, "credits": credits }),
            )
            .await;
        let payload = &data["createAccount"];
        (
            payload["account"]["id"].as_str().unwrap().to_owned(),
            payload["apiKey"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn create_customer(&self, key: &str, name: &str, external_id: Option<&str>) -> Value {
        let data = self
            .ok(
                key,
                "mutation($input: CreateCustomerInput!) {
                    createCustomer(input: $input) { id name externalId createdAt updatedAt }
                }",
                json!({ "input": { "name": name, "externalId": external_id } }),
            )
            .await;
        data["createCustomer"].clone()
    }

    /// A server on `db` (a database another, stopped server used).
    pub async fn on(db: std::sync::Arc<TestDb>) -> Self {
        let config = test_config(&db);
        Self::start_shared(db, config).await
    }

    /// Stops the server gracefully and hands back its database, for [`TestApp::on`].
    pub async fn into_db(self) -> std::sync::Arc<TestDb> {
        let db = self.db.clone();
        self.stop().await;
        db
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stopped cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// How often [`wait_until`] and [`wait_for`] look again: soon, without loading the server.
const POLL: Duration = Duration::from_millis(50);

/// Waits until `condition` holds, looking every 50 ms; panics naming `what` once `deadline`
/// (from now) has passed without it. For what a test expects to happen in the background.
pub async fn wait_until(deadline: Duration, what: &str, mut condition: impl AsyncFnMut() -> bool) {
    wait_for(deadline, what, async || condition().await.then_some(())).await;
}

/// Like [`wait_until`], returning the first value `probe` yields.
pub async fn wait_for<T>(
    deadline: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "waited {deadline:?} for {what} in vain"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The `extensions.code` of the first error.
pub fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

/// A `millwright serve` child process, killed when dropped.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub addr: String,
    /// Every line the process has logged so far (JSON), for tests that look for errors.
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts the binary on `db_url` with extra `MILLWRIGHT_*` settings; waits for its address.
    pub fn start(db_url: &str, settings: &[(&str, &str)]) -> Self {
        use std::io::{BufRead, BufReader};
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_millwright"));
        command
            .arg("serve")
            .env("MILLWRIGHT_DATABASE_URL", db_url)
            .env("MILLWRIGHT_LISTEN", "127.0.0.1:0")
            .env("MILLWRIGHT_LOG_FORMAT", "json")
            .env("MILLWRIGHT_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("MILLWRIGHT_ENCRYPTION_KEY", ENCRYPTION_KEY)
            .stderr(std::process::Stdio::piped());
        for (name, value) in settings {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start millwright serve");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = logs.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line.clone());
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if let Some(addr) = event["message"]
                    .as_str()
                    .and_then(|m| m.strip_prefix("listening on "))
                {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(err) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not log `listening on` ({err}); it is stopped");
            }
        };
        Self { child, addr, logs }
    }

    /// The lines logged at level ERROR so far.
    pub fn errors(&self) -> Vec<String> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|line| {
                serde_json::from_str::<Value>(line).is_ok_and(|event| event["level"] == "ERROR")
            })
            .cloned()
            .collect()
    }

    pub async fn gql(&self, token: &str, query: &str, variables: Value) -> Value {
        let body: Value = reqwest::Client::new()
            .post(format!("http://{}/graphql", self.addr))
            .bearer_auth(token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("JSON");
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// A new account with `credits` and one customer of it: (API key, customer id).
    pub async fn account_and_customer(&self, credits: u32) -> (String, String) {
        let data = self
            .gql(
                ADMIN_TOKEN,
                "mutation($c: Int!) { createAccount(input: {name: \"A\", credits: $c}) { apiKey } }",
                json!({ "c": credits }),
            )
            .await;
        let key = data["createAccount"]["apiKey"].as_str().unwrap().to_owned();
        let data = self
            .gql(
                &key,
                "mutation { createCustomer(input: {name: \"C\"}) { id } }",
                json!({}),
            )
            .await;
        let customer = data["createCustomer"]["id"].as_str().unwrap().to_owned();
        (key, customer)
    }

    /// SIGKILL: no graceful anything.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `/metrics` page of the server at `addr`.
pub async fn metrics_at(http: &reqwest::Client, addr: &str) -> String {
    http.get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The value of one series (its name and labels, as printed) on a `/metrics` page.
pub fn metric_value(metrics: &str, series: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// The distinct values of the `operation` label of `millwright_graphql_requests_total`.
pub fn operation_labels(metrics: &str) -> std::collections::BTreeSet<String> {
    metrics
        .lines()
        .filter(|line| line.starts_with("millwright_graphql_requests_total{"))
        .filter_map(|line| {
            let start = line.find("operation=\"")? + "operation=\"".len();
            let end = start + line[start..].find('"')?;
            Some(line[start..end].to_owned())
        })
        .collect()
}
