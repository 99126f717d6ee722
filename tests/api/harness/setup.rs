//! What many tests do first (an account with a customer, a demo connection, credit grants)
//! and the log and queue positions they wait on.

use std::time::Duration;

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::{Value, json};

use super::{ADMIN_TOKEN, TestApp, wait_until};

const CONNECT: &str = "mutation($input: ConnectInput!) {
    connect(input: $input) { token connection { id } } }";
const GRANT: &str = "mutation($id: ID!) { grantCredits(accountId: $id, amount: 1) { total } }";

/// An account "Acme" with `credits` and a customer "North Plant": (API key, customer id).
pub async fn setup(app: &TestApp, credits: i32) -> (String, String) {
    let (_, key) = app.create_account("Acme", credits).await;
    let customer = app.create_customer(&key, "North Plant", None).await;
    (key, customer["id"].as_str().unwrap().to_owned())
}

/// The `ConnectInput` of a demo connection whose remote behaves as `simulate` says.
pub fn demo_input(customer_id: &str, simulate: &str) -> Value {
    json!({ "customerId": customer_id, "systemKey": "demo",
            "credentials": { "api_key": "demo-secret-key-123", "scale": 10, "simulate": simulate } })
}

/// Connects with `input`, which must succeed: (connection id, connection token).
pub async fn connect(app: &TestApp, key: &str, input: Value) -> (String, String) {
    let data = app.ok(key, CONNECT, json!({ "input": input })).await;
    let payload = &data["connect"];
    (
        payload["connection"]["id"].as_str().unwrap().to_owned(),
        payload["token"].as_str().unwrap().to_owned(),
    )
}

/// Grants the account one credit `times` times: each grant stores exactly one
/// `credits.changed` event.
pub async fn grant(app: &TestApp, account_id: &str, times: usize) {
    for _ in 0..times {
        app.ok(ADMIN_TOKEN, GRANT, json!({ "id": account_id }))
            .await;
    }
}

/// The cursor of the last committed event. A subscription given it as `after` receives
/// every event committed later, however long the server takes to start streaming.
pub async fn log_end(app: &TestApp) -> String {
    let db = Database::connect(&app.db.url).await.unwrap();
    let txid = number(&db, "SELECT COALESCE(MAX(txid), 0) AS n FROM events").await;
    let position = number(
        &db,
        &format!("SELECT COALESCE(MAX(position), 0) AS n FROM events WHERE txid = {txid}"),
    )
    .await;
    db.close().await.ok();
    millwright::events::encode_cursor(millwright::events::LogPosition { txid, position })
}

/// Waits until the webhook dispatcher has routed every event committed so far and every
/// delivery has ended (succeeded or exhausted its retries): nothing more will be sent.
pub async fn webhooks_settled(app: &TestApp) {
    let db = Database::connect(&app.db.url).await.unwrap();
    let last = number(&db, "SELECT COALESCE(MAX(position), 0) AS n FROM events").await;
    let what = format!("webhooks routed up to event {last} and every delivery ended");
    wait_until(Duration::from_secs(15), &what, async || {
        let dispatched = number(
            &db,
            "SELECT last_position AS n FROM webhook_dispatch WHERE id = 1",
        )
        .await;
        let open = "SELECT COUNT(*) AS n FROM webhook_deliveries
            WHERE status NOT IN ('SUCCEEDED', 'EXHAUSTED')";
        dispatched >= last && number(&db, open).await == 0
    })
    .await;
    db.close().await.ok();
}

/// The one number `sql` selects, as `n`.
pub async fn number(db: &DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no row: {sql}"));
    row.try_get("", "n").unwrap()
}
