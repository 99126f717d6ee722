//! Encryption keys: `millwright keys rotate` while servers run, values written before key
//! ids existed, concurrent writes during a rotation, and the generated key file's mode.

use std::{
    collections::HashMap,
    process::{Command, Output},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering::SeqCst},
    },
    time::Duration,
};

use aes_gcm::{Aes256Gcm, KeyInit, Nonce, aead::Aead};
use base64::{Engine, engine::general_purpose::STANDARD};
use millwright::{
    crypto::{Cipher, Sealed},
    db::Db,
    ids,
};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{
    ADMIN_TOKEN, ENCRYPTION_KEY, Receiver, ServerProcess, TestApp, TestDb, connect, demo_input,
    setup, test_config, wait_for,
};

const CREATE_ENDPOINT: &str = "mutation($url: String!) {
    createWebhookEndpoint(input: {url: $url}) { secret endpoint { id } } }";
const ROTATE_SECRET: &str = "mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret } }";
const TEST_WEBHOOK: &str = "mutation($id: ID!) { sendTestWebhook(endpointId: $id) { id } }";
const UPDATE_CREDENTIALS: &str = "mutation($id: ID!, $credentials: JSON!) {
    updateConnectionCredentials(id: $id, credentials: $credentials) { id } }";
const TRIGGER_SYNC: &str =
    "mutation($id: ID!) { triggerSync(connectionId: $id, kind: FULL) { id } }";
const SYNC_STATUS: &str = "query($id: ID!) { syncRun(id: $id) { status error { code } } }";

/// Settings every server of these tests runs with: webhooks to loopback, retried soon; the
/// sync runs and webhook deliveries a killed server held are taken over soon.
const SERVER_SETTINGS: [(&str, &str); 4] = [
    ("MILLWRIGHT_WEBHOOK_ALLOW_PRIVATE_TARGETS", "true"),
    ("MILLWRIGHT_WEBHOOK_RETRY_SCHEDULE", "1,1,1"),
    ("MILLWRIGHT_SYNC_LEASE_SECS", "2"),
    ("MILLWRIGHT_WEBHOOK_LEASE_SECS", "2"),
];

fn key_bytes(key: &str) -> [u8; 32] {
    STANDARD.decode(key).unwrap().try_into().unwrap()
}

/// `millwright keys rotate` with `key` current and `old` keys (comma-separated).
async fn rotate(db_url: &str, key: Option<&str>, old: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_millwright"));
    command
        .args(["keys", "rotate", "--batch-size", "1"])
        .env("MILLWRIGHT_DATABASE_URL", db_url)
        .env("MILLWRIGHT_LOG_FORMAT", "json")
        .env_remove("MILLWRIGHT_ENCRYPTION_KEY")
        .env_remove("MILLWRIGHT_ENCRYPTION_OLD_KEYS");
    if let Some(key) = key {
        command.env("MILLWRIGHT_ENCRYPTION_KEY", key);
    }
    if let Some(old) = old {
        command.env("MILLWRIGHT_ENCRYPTION_OLD_KEYS", old);
    }
    tokio::task::spawn_blocking(move || command.output().expect("run millwright keys rotate"))
        .await
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The `(re-encrypted, already current, unreadable)` counts `keys rotate` printed for `kind`.
fn counts(output: &Output, kind: &str) -> (u64, u64, u64) {
    let text = stdout(output);
    let line = text
        .lines()
        .find(|line| line.starts_with(&format!("{kind}: ")))
        .unwrap_or_else(|| panic!("no line for {kind} in {text}"));
    let numbers: Vec<u64> = line
        .split([':', ','])
        .filter_map(|part| part.split_whitespace().next()?.parse().ok())
        .collect();
    (numbers[0], numbers[1], numbers[2])
}

/// Every sealed value in the database: (what it is, row id, value).
async fn sealed_values(db_url: &str) -> Vec<(String, Uuid, Vec<u8>)> {
    let db = sea_orm::Database::connect(db_url).await.unwrap();
    let mut values = Vec::new();
    for row in entity::connection::Entity::find().all(&db).await.unwrap() {
        if let Some(credentials) = row.credentials {
            values.push(("credentials".to_owned(), row.id, credentials));
        }
    }
    for row in entity::webhook_endpoint::Entity::find()
        .all(&db)
        .await
        .unwrap()
    {
        values.push(("secret".to_owned(), row.id, row.secret));
        if let Some(previous) = row.previous_secret {
            values.push(("previous secret".to_owned(), row.id, previous));
        }
    }
    db.close().await.unwrap();
    values
}

/// Polls a sync run on `server` until it ends; returns its status.
/// A demo connection of `customer` made on `server`: its id.
async fn connect_demo(server: &ServerProcess, key: &str, customer: &str) -> String {
    let connect =
        "mutation($input: ConnectInput!) { connect(input: $input) { connection { id } } }";
    let data = server
        .gql(
            key,
            connect,
            json!({ "input": demo_input(customer, "none") }),
        )
        .await;
    data["connect"]["connection"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn sync_once(server: &ServerProcess, key: &str, connection: &str) -> Value {
    let data = server
        .gql(key, TRIGGER_SYNC, json!({ "id": connection }))
        .await;
    let run = data["triggerSync"]["id"].as_str().unwrap().to_owned();
    let what = format!("sync run {run} of {connection} to end");
    wait_for(Duration::from_secs(30), &what, async || {
        let run = server.gql(key, SYNC_STATUS, json!({ "id": run })).await["syncRun"].clone();
        (!matches!(run["status"].as_str(), Some("QUEUED" | "RUNNING"))).then_some(run)
    })
    .await
}

fn verifies(secret: &str, body: &[u8], headers: &axum::http::HeaderMap) -> bool {
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(body, headers)
        .is_ok()
}

/// Sends a test webhook to the endpoint and waits until it arrives signed with `secret`.
async fn test_webhook_verifies(
    server: &ServerProcess,
    key: &str,
    endpoint: &str,
    receiver: &Receiver,
    secret: &str,
) {
    server
        .gql(key, TEST_WEBHOOK, json!({ "id": endpoint }))
        .await;
    let what = format!("a test webhook to {endpoint} signed with its secret");
    wait_for(Duration::from_secs(15), &what, async || {
        let got = receiver.received.lock().unwrap().clone();
        got.iter()
            .any(|r| {
                let body: Value = serde_json::from_slice(&r.body).unwrap();
                body["type"] == "webhook.test" && verifies(secret, &r.body, &r.headers)
            })
            .then_some(())
    })
    .await;
}

/// The whole procedure of docs/operations.md: servers restarted with a new key and the old
/// one, `keys rotate` while one serves and writes, then the old key removed: every
/// connection still syncs, every webhook still verifies, and no write made during the
/// rotation was lost.
#[tokio::test]
async fn rotate_while_a_server_runs_then_the_old_key_can_go() {
    let db = TestDb::new().await;
    let generated = Command::new(env!("CARGO_BIN_EXE_millwright"))
        .args(["keys", "generate"])
        .output()
        .unwrap();
    assert!(generated.status.success());
    let new_key = stdout(&generated).trim().to_owned();
    assert_eq!(STANDARD.decode(&new_key).unwrap().len(), 32);
    assert_ne!(new_key, ENCRYPTION_KEY);

    // Before: a server with the old key only.
    let first = ServerProcess::start(&db.url, &SERVER_SETTINGS);
    let created = first
        .gql(
            ADMIN_TOKEN,
            "mutation { createAccount(input: {name: \"Acme\", credits: 100}) { apiKey } }",
            json!({}),
        )
        .await;
    let key = created["createAccount"]["apiKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let customer = first
        .gql(
            &key,
            "mutation { createCustomer(input: {name: \"North Plant\"}) { id } }",
            json!({}),
        )
        .await["createCustomer"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut connections = Vec::new();
    for _ in 0..6 {
        connections.push(connect_demo(&first, &key, &customer).await);
    }
    let mut endpoints = Vec::new();
    for rotated in [false, true] {
        let receiver = Receiver::start(&[]).await;
        let data = first
            .gql(&key, CREATE_ENDPOINT, json!({ "url": receiver.url }))
            .await;
        let id = data["createWebhookEndpoint"]["endpoint"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut secret = data["createWebhookEndpoint"]["secret"]
            .as_str()
            .unwrap()
            .to_owned();
        if rotated {
            // Keeps the previous secret (sealed too) beside the new one for 24 hours.
            let data = first.gql(&key, ROTATE_SECRET, json!({ "id": id })).await;
            secret = data["rotateWebhookSecret"]["secret"]
                .as_str()
                .unwrap()
                .to_owned();
        }
        endpoints.push((id, secret, receiver));
    }
    first.kill();

    // Step 2: the server restarted with the new key and the old one.
    let mut settings = SERVER_SETTINGS.to_vec();
    settings.extend([
        ("MILLWRIGHT_ENCRYPTION_KEY", new_key.as_str()),
        ("MILLWRIGHT_ENCRYPTION_OLD_KEYS", ENCRYPTION_KEY),
    ]);
    let second = Arc::new(ServerProcess::start(&db.url, &settings));
    // One connection made now is sealed with the new key already.
    connections.push(connect_demo(&second, &key, &customer).await);

    // Step 3: `keys rotate` while the server replaces credentials and probes connections.
    let stop = Arc::new(AtomicBool::new(false));
    let written: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let writer = {
        let (server, key, connections) = (second.clone(), key.clone(), connections.clone());
        let (stop, written) = (stop.clone(), written.clone());
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(SeqCst) {
                let id = &connections[n % connections.len()];
                let api_key = format!("rotated-while-serving-{n}");
                let credentials = json!({ "api_key": api_key, "scale": 10, "simulate": "none" });
                server
                    .gql(
                        &key,
                        UPDATE_CREDENTIALS,
                        json!({ "id": id, "credentials": credentials }),
                    )
                    .await;
                written.lock().unwrap().insert(id.clone(), api_key);
                let other = &connections[(n + 3) % connections.len()];
                server
                    .gql(
                        &key,
                        "mutation($id: ID!) { checkConnection(id: $id) { status } }",
                        json!({ "id": other }),
                    )
                    .await;
                n += 1;
            }
            n
        })
    };
    let output = rotate(&db.url, Some(&new_key), Some(ENCRYPTION_KEY)).await;
    stop.store(true, SeqCst);
    let writes = writer.await.unwrap();
    assert!(writes > 0, "the server wrote during the rotation");
    assert!(
        output.status.success(),
        "{}\n{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    let (reencrypted, current, unreadable) = counts(&output, "connection credentials");
    assert_eq!(reencrypted + current, 7, "{}", stdout(&output));
    assert!(current >= 1, "the connection made after the restart");
    assert_eq!(unreadable, 0);
    assert_eq!(counts(&output, "webhook secrets"), (2, 0, 0));
    assert_eq!(counts(&output, "previous webhook secrets"), (1, 0, 0));
    drop(second);

    // Every stored value is sealed with the new key, and holds what was last written.
    let new_only = Cipher::new(&key_bytes(&new_key));
    let written = written.lock().unwrap().clone();
    for (what, id, value) in sealed_values(&db.url).await {
        let (plaintext, how) = new_only
            .open(&value, id.as_bytes())
            .unwrap_or_else(|| panic!("{what} of {id} does not open with the new key"));
        assert_eq!(how, Sealed::Current, "{what} of {id}");
        if what == "credentials" {
            let credentials: Value = serde_json::from_slice(&plaintext).unwrap();
            let public = ids::encode(ids::Kind::Connection, id);
            let expected = written
                .get(&public)
                .map_or("demo-secret-key-123", String::as_str);
            assert_eq!(credentials["api_key"], expected, "no write lost: {public}");
        }
    }

    // Step 4: the old key removed.
    let mut settings = SERVER_SETTINGS.to_vec();
    settings.push(("MILLWRIGHT_ENCRYPTION_KEY", new_key.as_str()));
    let third = ServerProcess::start(&db.url, &settings);
    for connection in &connections {
        let run = sync_once(&third, &key, connection).await;
        assert_eq!(run["status"], "SUCCEEDED", "{connection}: {run}");
    }
    for (endpoint, secret, receiver) in &endpoints {
        test_webhook_verifies(&third, &key, endpoint, receiver, secret).await;
    }
    // A rerun finds nothing left to do.
    let again = rotate(&db.url, Some(&new_key), None).await;
    assert!(again.status.success(), "{}", stdout(&again));
    assert_eq!(counts(&again, "connection credentials"), (0, 7, 0));
    assert_eq!(counts(&again, "webhook secrets"), (0, 2, 0));
}

/// Seals as releases before key ids did: nonce, then ciphertext and tag; the row id as
/// associated data.
fn legacy_seal(key: &[u8; 32], plaintext: &[u8], row: Uuid) -> Vec<u8> {
    let aead = Aes256Gcm::new_from_slice(key).unwrap();
    let nonce: [u8; 12] = rand::random();
    let nonce = &nonce[..];
    let payload = aes_gcm::aead::Payload {
        msg: plaintext,
        aad: row.as_bytes(),
    };
    let sealed = aead.encrypt(Nonce::from_slice(nonce), payload).unwrap();
    [nonce, &sealed].concat()
}

/// A database whose values were sealed before key ids existed keeps working unchanged;
/// `keys rotate` converts them, reports a value no key opens (exiting non-zero) without
/// touching it, and run again does nothing more.
#[tokio::test]
async fn values_from_before_key_ids_still_work_and_rotate_converts_them() {
    let app = TestApp::spawn_with(|c| {
        c.webhooks.allow_private_targets = true;
        c.webhooks.retry_schedule = vec![1, 1, 1];
    })
    .await;
    let (key, customer) = setup(&app, 10).await;
    let (good, _) = connect(&app, &key, demo_input(&customer, "none")).await;
    let (broken, _) = connect(&app, &key, demo_input(&customer, "none")).await;
    let receiver = Receiver::start(&[]).await;
    let data = app
        .ok(&key, CREATE_ENDPOINT, json!({ "url": receiver.url }))
        .await;
    let endpoint = data["createWebhookEndpoint"]["endpoint"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret = data["createWebhookEndpoint"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();

    // Rewrite what is stored as the earlier release wrote it.
    let key_a = key_bytes(ENCRYPTION_KEY);
    let cipher = Cipher::new(&key_a);
    let db = Db::connect(&test_config(&app.db)).await.unwrap();
    let broken_id = ids::decode(ids::Kind::Connection, &broken).unwrap();
    let unreadable = legacy_seal(&[9u8; 32], b"{\"api_key\":\"lost\"}", broken_id);
    for (_, id, value) in sealed_values(&app.db.url).await {
        let plaintext = cipher.decrypt(&value, id.as_bytes()).unwrap();
        let legacy = legacy_seal(&key_a, &plaintext, id);
        entity::connection::Entity::update_many()
            .col_expr(
                entity::connection::Column::Credentials,
                Expr::value(if id == broken_id {
                    unreadable.clone()
                } else {
                    legacy.clone()
                }),
            )
            .filter(entity::connection::Column::Id.eq(id))
            .exec(db.conn())
            .await
            .unwrap();
        entity::webhook_endpoint::Entity::update_many()
            .col_expr(
                entity::webhook_endpoint::Column::Secret,
                Expr::value(legacy),
            )
            .filter(entity::webhook_endpoint::Column::Id.eq(id))
            .exec(db.conn())
            .await
            .unwrap();
    }
    db.close().await.unwrap();
    for (what, id, value) in sealed_values(&app.db.url).await {
        if id != broken_id {
            let (_, how) = cipher.open(&value, id.as_bytes()).unwrap();
            assert_eq!(how, Sealed::Legacy, "{what}");
        }
    }

    // The server reads them as they are.
    let check = "mutation($id: ID!) { checkConnection(id: $id) { status } }";
    let data = app.ok(&key, check, json!({ "id": good })).await;
    assert_eq!(data["checkConnection"]["status"], "ONLINE");
    app.ok(&key, TEST_WEBHOOK, json!({ "id": endpoint })).await;
    let got = receiver.wait_for(1).await;
    assert!(got.iter().any(|r| verifies(&secret, &r.body, &r.headers)));

    // Converted; the unreadable value is reported and left as it was.
    let output = rotate(&app.db.url, Some(ENCRYPTION_KEY), None).await;
    assert!(
        !output.status.success(),
        "an unreadable value fails the run"
    );
    assert_eq!(counts(&output, "connection credentials"), (1, 0, 1));
    assert_eq!(counts(&output, "webhook secrets"), (1, 0, 0));
    assert!(
        stdout(&output).contains(&format!("unreadable: connection {broken}")),
        "{}",
        stdout(&output)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("MILLWRIGHT_ENCRYPTION_OLD_KEYS"));
    for (what, id, value) in sealed_values(&app.db.url).await {
        if id == broken_id {
            assert_eq!(value, unreadable, "the unreadable value is untouched");
        } else {
            assert_eq!(
                cipher.open(&value, id.as_bytes()).unwrap().1,
                Sealed::Current,
                "{what}"
            );
        }
    }
    let data = app.ok(&key, check, json!({ "id": good })).await;
    assert_eq!(data["checkConnection"]["status"], "ONLINE");

    // With the unreadable connection gone, a rerun has nothing left to do and succeeds.
    app.ok(
        &key,
        "mutation($id: ID!) { disconnect(id: $id) { id } }",
        json!({ "id": broken }),
    )
    .await;
    let output = rotate(&app.db.url, Some(ENCRYPTION_KEY), None).await;
    assert!(output.status.success(), "{}", stdout(&output));
    assert_eq!(counts(&output, "connection credentials"), (0, 1, 0));
    assert_eq!(counts(&output, "webhook secrets"), (0, 1, 0));
    let run = crate::sync::trigger(&app, &key, &good, "FULL").await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
}

/// A credentials update that commits between the rotation's read of the row and its write
/// is kept: the rotation's write does not apply to a value it did not read, and the row is
/// read again and re-encrypted as it now is.
#[tokio::test]
async fn a_write_during_the_rotation_is_never_overwritten() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let (connection, _) = connect(&app, &key, demo_input(&customer, "none")).await;
    let id = ids::decode(ids::Kind::Connection, &connection).unwrap();
    let (old, new) = (key_bytes(ENCRYPTION_KEY), [42u8; 32]);
    let config = test_config(&app.db);
    let db = Db::connect(&config).await.unwrap();
    let other = Db::connect(&config).await.unwrap();

    // Another process's update (sealed with the old key), caught before its COMMIT.
    let concurrent =
        Cipher::new(&old).encrypt(b"{\"api_key\":\"written-meanwhile\"}", id.as_bytes());
    let txn = other.begin_write().await.unwrap();
    entity::connection::Entity::update_many()
        .col_expr(
            entity::connection::Column::Credentials,
            Expr::value(concurrent),
        )
        .filter(entity::connection::Column::Id.eq(id))
        .exec(&*txn)
        .await
        .unwrap();
    let cipher = Cipher::with_old_keys(&new, &[old]);
    let rotating = {
        let (db, cipher) = (db.clone(), cipher.clone());
        tokio::spawn(async move { millwright::crypto::rotate::rotate(&db, &cipher, 10).await })
    };
    // Time for the rotation to read the committed value and wait on the open transaction;
    // were it later, it would read the new value, and the test would pass proving less.
    tokio::time::sleep(Duration::from_millis(300)).await;
    txn.commit().await.unwrap();
    let report = rotating.await.unwrap().unwrap();
    assert_eq!(report.credentials.reencrypted, 1);
    let row = entity::connection::Entity::find_by_id(id)
        .one(db.conn())
        .await
        .unwrap()
        .unwrap();
    let (plaintext, how) = cipher
        .open(&row.credentials.unwrap(), id.as_bytes())
        .unwrap();
    assert_eq!(how, Sealed::Current);
    assert_eq!(
        String::from_utf8_lossy(&plaintext),
        "{\"api_key\":\"written-meanwhile\"}",
        "the concurrent write is kept"
    );
    other.close().await.unwrap();
    db.close().await.unwrap();
}

/// The key file generated beside a SQLite database is readable by its owner only, and a key
/// file others can read stops `serve` and `keys rotate` with a message saying what to do.
#[cfg(unix)]
#[tokio::test]
async fn a_key_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
    let key_file = dir.path().join("m.db.key");
    let output = rotate(&url, None, None).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(STANDARD.decode(key.trim()).unwrap().len(), 32);

    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = rotate(&url, None, None).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("readable by other users") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    let serve = Command::new(env!("CARGO_BIN_EXE_millwright"))
        .arg("serve")
        .env("MILLWRIGHT_DATABASE_URL", &url)
        .env("MILLWRIGHT_LISTEN", "127.0.0.1:0")
        .env_remove("MILLWRIGHT_ENCRYPTION_KEY")
        .output()
        .unwrap();
    assert!(!serve.status.success());
    assert!(String::from_utf8_lossy(&serve.stderr).contains("chmod 600"));
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        key,
        "the file is left as it was"
    );
}
