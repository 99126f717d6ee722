//! The command line: `account create --json`, `credits grant`, `migrate`, configuration errors.

use std::{
    process::{Command, Output},
    time::Duration,
};

use serde_json::{Value, json};

use crate::harness::{TestApp, TestDb, error_code, test_config, wait_for};

fn millwright(db_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_millwright"))
        .args(args)
        .env("MILLWRIGHT_DATABASE_URL", db_url)
        .env("MILLWRIGHT_LOG_FORMAT", "json")
        .output()
        .expect("run millwright")
}

#[tokio::test]
async fn account_create_json_prints_a_working_key() {
    let db = TestDb::new().await;
    let output = millwright(
        &db.url,
        &[
            "account",
            "create",
            "--name",
            "Acme Robotics",
            "--credits",
            "12",
            "--json",
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).expect("one JSON object on stdout");
    let account_id = printed["account_id"].as_str().unwrap().to_owned();
    let key = printed["api_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("mwk_"));

    let grant = millwright(
        &db.url,
        &[
            "credits",
            "grant",
            "--account",
            &account_id,
            "--amount",
            "8",
            "--note",
            "pilot",
        ],
    );
    assert!(
        grant.status.success(),
        "{}",
        String::from_utf8_lossy(&grant.stderr)
    );

    let config = test_config(&db);
    let app = TestApp::start(db, config).await;
    let data = app
        .ok(
            &key,
            "{ viewer { account { id name credits { total used available } } } }",
            json!({}),
        )
        .await;
    assert_eq!(data["viewer"]["account"]["id"], account_id.as_str());
    assert_eq!(data["viewer"]["account"]["name"], "Acme Robotics");
    assert_eq!(
        data["viewer"]["account"]["credits"],
        json!({ "total": 20, "used": 0, "available": 20 })
    );
    let ledger = app
        .ok(
            &key,
            "{ creditLedger { nodes { kind amount note } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        ledger["creditLedger"]["nodes"],
        json!([{ "kind": "GRANT", "amount": 12, "note": "initial credits" }, { "kind": "GRANT", "amount": 8, "note": "pilot" }]),
        "the CLI's grant is booked in the ledger"
    );
    let (status, body) = app
        .post(
            Some("mwk_not-the-printed-key"),
            json!({ "query": "{ viewer { account { id } } }" }),
        )
        .await;
    assert_eq!((status, error_code(&body)), (401, "UNAUTHENTICATED"));
}

#[tokio::test]
async fn cli_rejects_bad_input_with_a_clear_message() {
    let db = TestDb::new().await;
    let output = millwright(
        &db.url,
        &[
            "credits",
            "grant",
            "--account",
            "acc_nothex",
            "--amount",
            "1",
        ],
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a valid account id"));
    let output = millwright(&db.url, &["account", "create", "--name", "", "--json"]);
    assert!(!output.status.success());
    let output = millwright(&db.url, &["migrate"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn invalid_configuration_names_the_key() {
    let run = |var: &str, value: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_millwright"))
            .arg("migrate")
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{var}={value}");
        String::from_utf8_lossy(&output.stderr).to_lowercase()
    };
    assert!(run("MILLWRIGHT_LISTEN", "not-an-address").contains("listen"));
    assert!(run("MILLWRIGHT_DATABASE_URL", "mysql://x").contains("database_url"));
    assert!(run("MILLWRIGHT_ENCRYPTION_KEY", "too-short").contains("encryption_key"));
    assert!(run("MILLWRIGHT_LOG_FORMAT", "xml").contains("log_format"));
    assert!(run("MILLWRIGHT_WORKERS", "maybe").contains("workers"));
    assert!(run("MILLWRIGHT_WEBHOOK_RETRY_SCHEDULE", "5,soon").contains("webhook_retry_schedule"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("millwright.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:9\"\nlisen = \"typo\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_millwright"))
        .args(["--config", file.to_str().unwrap(), "migrate"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("lisen"));
}

/// Every declared setting is read from its environment variable: a value no setting accepts
/// stops the start and the message names the key.
#[test]
fn every_setting_is_read_from_the_environment() {
    for setting in millwright::config::SETTINGS {
        let var = setting.env_var();
        let output = Command::new(env!("CARGO_BIN_EXE_millwright"))
            .arg("migrate")
            .env(&var, "not-a-value")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{var}");
        let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
        assert!(stderr.contains(setting.key), "{var}: {stderr}");
    }
}

#[test]
fn a_retired_setting_still_starts_and_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("retired.db");
    let output = Command::new(env!("CARGO_BIN_EXE_millwright"))
        .arg("migrate")
        .env(
            "MILLWRIGHT_DATABASE_URL",
            format!("sqlite://{}?mode=rwc", db.display()),
        )
        .env("MILLWRIGHT_LOG_FORMAT", "json")
        .env("MILLWRIGHT_SYNC_SCHEDULE_MINUTE_SECS", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let warning = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["key"] == "sync_schedule_minute_secs")
        .unwrap_or_else(|| panic!("no warning naming the key: {stderr}"));
    assert_eq!(warning["level"], "WARN");
}

#[test]
fn config_file_then_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("millwright.toml");
    let db = dir.path().join("from-file.db");
    std::fs::write(
        &file,
        format!("database_url = \"sqlite://{}?mode=rwc\"\n", db.display()),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_millwright"))
        .args(["--config", file.to_str().unwrap(), "migrate"])
        .env_remove("MILLWRIGHT_DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(db.exists(), "the file's database_url was used");

    let env_db = dir.path().join("from-env.db");
    let output = Command::new(env!("CARGO_BIN_EXE_millwright"))
        .args(["--config", file.to_str().unwrap(), "migrate"])
        .env(
            "MILLWRIGHT_DATABASE_URL",
            format!("sqlite://{}?mode=rwc", env_db.display()),
        )
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(env_db.exists(), "the environment wins over the file");
}

#[tokio::test]
async fn serve_logs_its_address_and_stops_on_sigterm() {
    let db = TestDb::new().await;
    // Starting waits for the `listening on` log line.
    let mut server = crate::harness::ServerProcess::start(&db.url, &[]);
    let ready = reqwest::get(format!("http://{}/readyz", server.addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    let killed = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let stopped = "the server to exit after SIGTERM";
    let status = wait_for(Duration::from_secs(15), stopped, async || {
        server.child.try_wait().unwrap()
    })
    .await;
    assert!(status.success(), "graceful exit, got {status}");
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn secrets_never_appear_in_the_logs() {
    use std::io::Read;
    let db = TestDb::new().await;
    let admin = "log-test-admin-token-0123456789";
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_millwright"))
            .arg("serve")
            .env("MILLWRIGHT_DATABASE_URL", &db.url)
            .env("MILLWRIGHT_LISTEN", "127.0.0.1:0")
            .env("MILLWRIGHT_LOG_FORMAT", "json")
            .env("MILLWRIGHT_ADMIN_TOKEN", admin)
            .env("MILLWRIGHT_ENCRYPTION_KEY", crate::harness::ENCRYPTION_KEY)
            .env("RUST_LOG", "trace")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buffer = [0u8; 8192];
        let mut announced = false;
        while let Ok(n) = stderr.read(&mut buffer) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&all);
            if !announced && let Some(at) = text.find("listening on ") {
                let addr: String = text[at + 13..].chars().take_while(|c| *c != '"').collect();
                let _ = tx.send(addr);
                announced = true;
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("`listening on` logged");
    let http = reqwest::Client::new();
    let gql = |token: String, query: &'static str, variables: Value| {
        let request = http
            .post(format!("http://{addr}/graphql"))
            .bearer_auth(token);
        async move {
            let body: Value = request
                .json(&json!({ "query": query, "variables": variables }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert!(body.get("errors").is_none(), "{body}");
            body["data"].clone()
        }
    };
    let data = gql(
        admin.into(),
        "mutation { createAccount(input: {name: \"A\", credits: 5}) { apiKey } }",
        json!({}),
    )
    .await;
    let key = data["createAccount"]["apiKey"].as_str().unwrap().to_owned();
    let data = gql(
        key.clone(),
        "mutation { createCustomer(input: {name: \"C\"}) { id } }",
        json!({}),
    )
    .await;
    let customer = data["createCustomer"]["id"].clone();
    let connect = "mutation($c: ID!) { connect(input: {customerId: $c, systemKey: \"demo\",
        credentials: {api_key: \"log-secret-credential-77\"}}) { token connection { id } } }";
    let data = gql(key.clone(), connect, json!({ "c": customer })).await;
    let token = data["connect"]["token"].as_str().unwrap().to_owned();
    let id = data["connect"]["connection"]["id"].clone();
    let update = "mutation($id: ID!) { updateConnectionCredentials(id: $id, credentials: {api_key: \"log-secret-credential-88\"}) { status } }";
    gql(key.clone(), update, json!({ "id": id })).await;
    gql(token.clone(), "{ viewer { connection { id } } }", json!({})).await;

    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    let _ = child.0.wait();
    let logs = reader.join().unwrap();
    assert!(
        logs.contains("connection created"),
        "the logs were captured"
    );
    for secret in [
        "log-secret-credential-77",
        "log-secret-credential-88",
        &token[4..],
        &key[4..],
        admin,
    ] {
        assert!(!logs.contains(secret), "a secret appears in the logs");
    }
}
