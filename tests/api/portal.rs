//! Portal sessions: what an `mwp_` token may see and do (one customer's connections and the
//! catalog), what it may not (everything else, FORBIDDEN; foreign ids NOT_FOUND or null), how
//! it ends (expiry, revocation, the customer's delete) over HTTP and open WebSockets, and CORS.

use std::time::Duration;

use sea_orm::{ColumnTrait, Database, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use crate::{
    harness::{TestApp, connect, demo_input, error_code, setup, wait_until},
    websocket::{closed_soon, init, next, open, running, send},
};

const CREATE: &str = "mutation($i: CreatePortalSessionInput!) {
    createPortalSession(input: $i) { id token tokenPrefix expiresAt allowedSystems customer { id name } } }";
const REVOKE: &str = "mutation($id: ID!) { revokePortalSession(id: $id) { id revokedAt } }";
const PORTAL_CONNECT: &str = "mutation($input: ConnectInput!) {
    connect(input: $input) { token connection { id status customer { id name } } } }";

/// A portal session for `customer` (allowed `systems` when given): (session id, token).
async fn session(
    app: &TestApp,
    key: &str,
    customer: &str,
    systems: Option<&[&str]>,
) -> (String, String) {
    let mut input = json!({ "customerId": customer });
    if let Some(systems) = systems {
        input["allowedSystems"] = json!(systems);
    }
    let data = app.ok(key, CREATE, json!({ "i": input })).await;
    let created = &data["createPortalSession"];
    (
        created["id"].as_str().unwrap().to_owned(),
        created["token"].as_str().unwrap().to_owned(),
    )
}

/// Runs `query` as `token`, which must fail: the first error's code.
async fn refusal(app: &TestApp, token: &str, query: &str, variables: Value) -> String {
    let body = app.gql(token, query, variables).await;
    error_code(&body).to_owned()
}

#[tokio::test]
async fn only_an_account_key_mints_sessions_within_limits() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let (_, other_key) = app.create_account("Other", 0).await;
    let data = app
        .ok(
            &key,
            CREATE,
            json!({ "i": { "customerId": customer, "allowedSystems": ["demo", "demo"] } }),
        )
        .await;
    let created = &data["createPortalSession"];
    let token = created["token"].as_str().unwrap();
    assert!(
        token.starts_with("mwp_") && token.len() >= 4 + 43,
        "{token}"
    );
    assert_eq!(created["tokenPrefix"], token[..10]);
    assert_eq!(created["allowedSystems"], json!(["demo"]));
    assert_eq!(created["customer"]["id"], customer.as_str());
    // 15 minutes unless asked otherwise.
    let expires: chrono::DateTime<chrono::Utc> =
        created["expiresAt"].as_str().unwrap().parse().unwrap();
    let left = expires - chrono::Utc::now();
    assert!(
        left > chrono::Duration::seconds(880) && left <= chrono::Duration::seconds(900),
        "{left}"
    );
    // Stored as a hash only.
    let db = Database::connect(&app.db.url).await.unwrap();
    let stored = crate::harness::number(
        &db,
        &format!(
            "SELECT COUNT(*) AS n FROM portal_sessions WHERE token_hash = '{}'",
            millwright::auth::hash_token(token)
        ),
    )
    .await;
    assert_eq!(stored, 1);
    let plain = crate::harness::number(
        &db,
        &format!("SELECT COUNT(*) AS n FROM portal_sessions WHERE token_hash = '{token}' OR token_prefix = '{token}'"),
    )
    .await;
    assert_eq!(plain, 0);
    db.close().await.ok();
    // Its token is shown once: listed and found again, it is null.
    let listed = app
        .ok(
            &key,
            "{ portalSessions(first: 10) { edges { node { id token customer { name } } } } }",
            json!({}),
        )
        .await;
    let node = &listed["portalSessions"]["edges"][0]["node"];
    assert_eq!(node["id"], created["id"]);
    assert_eq!(node["token"], Value::Null);
    let found = app
        .ok(
            &key,
            "query($id: ID!) { node(id: $id) { ... on PortalSession { id token } } }",
            json!({ "id": created["id"] }),
        )
        .await;
    assert_eq!(found["node"]["id"], created["id"]);

    let refused = [
        (
            json!({ "customerId": customer, "ttlSeconds": 59 }),
            "BAD_USER_INPUT",
        ),
        (
            json!({ "customerId": customer, "ttlSeconds": 86_401 }),
            "BAD_USER_INPUT",
        ),
        (
            json!({ "customerId": customer, "allowedSystems": [] }),
            "BAD_USER_INPUT",
        ),
        (
            json!({ "customerId": customer, "allowedSystems": ["demo", "no-such-system"] }),
            "BAD_USER_INPUT",
        ),
        (json!({ "customerId": "cus_nonsense" }), "BAD_USER_INPUT"),
        (
            json!({ "customerId": customer, "ttlSeconds": "900" }),
            "BAD_USER_INPUT",
        ),
    ];
    for (input, code) in refused {
        let body = app.gql(&key, CREATE, json!({ "i": input })).await;
        assert_eq!(error_code(&body), code, "{input}: {body}");
    }
    let body = app
        .gql(
            &key,
            CREATE,
            json!({ "i": { "customerId": customer, "allowedSystems": ["nope"] } }),
        )
        .await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nope"),
        "{body}"
    );
    // Another account's customer does not exist for this one.
    let body = app
        .gql(
            &other_key,
            CREATE,
            json!({ "i": { "customerId": customer } }),
        )
        .await;
    assert_eq!(error_code(&body), "NOT_FOUND", "{body}");
    // Neither a connection token nor a portal session mints or revokes sessions.
    let (_, connection_token) = connect(&app, &key, demo_input(&customer, "none")).await;
    let (id, portal) = session(&app, &key, &customer, None).await;
    for token in [connection_token.as_str(), portal.as_str()] {
        let body = app
            .gql(token, CREATE, json!({ "i": { "customerId": customer } }))
            .await;
        assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
        let body = app.gql(token, REVOKE, json!({ "id": id })).await;
        assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    }
    // Another account cannot revoke it either.
    let body = app.gql(&other_key, REVOKE, json!({ "id": id })).await;
    assert_eq!(error_code(&body), "NOT_FOUND", "{body}");
}

#[tokio::test]
async fn a_portal_session_sees_its_customer_and_the_catalog_only() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 20).await;
    let other = app
        .create_customer(&key, "South Plant", Some("ext-south"))
        .await;
    let other = other["id"].as_str().unwrap().to_owned();
    let own = app
        .ok(&key, "mutation($id: ID!) { updateCustomer(input: {id: $id, externalId: \"ext-north\"}) { id } }", json!({ "id": customer }))
        .await;
    assert_eq!(own["updateCustomer"]["id"], customer.as_str());
    let (mine, _) = connect(&app, &key, demo_input(&customer, "none")).await;
    let (theirs, _) = connect(&app, &key, demo_input(&other, "none")).await;
    let (_, token) = session(&app, &key, &customer, Some(&["demo", "maintainx"])).await;

    // The catalog, narrowed to the allow-list.
    let data = app.ok(&token, "{ systems { key } maximo: system(key: \"maximo\") { key } demo: system(key: \"demo\") { key } }", json!({})).await;
    let keys: Vec<&str> = data["systems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys.contains(&"demo") && keys.contains(&"maintainx"),
        "{keys:?}"
    );
    assert_eq!(data["maximo"], Value::Null);
    assert_eq!(data["demo"]["key"], "demo");

    // Its session and its customer, by name.
    let data = app
        .ok(
            &token,
            "{ portalSession { allowedSystems customer { id name } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data["portalSession"]["customer"],
        json!({ "id": customer, "name": "North Plant" })
    );
    let data = app
        .ok(
            &token,
            "query($id: ID!) { customer(id: $id) { name connections { edges { node { id } } } } }",
            json!({ "id": customer }),
        )
        .await;
    assert_eq!(data["customer"]["name"], "North Plant");
    assert_eq!(
        data["customer"]["connections"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        refusal(
            &app,
            &token,
            "query($id: ID!) { customer(id: $id) { externalId } }",
            json!({ "id": customer })
        )
        .await,
        "FORBIDDEN"
    );
    assert_eq!(
        refusal(
            &app,
            &token,
            "query($id: ID!) { customer(id: $id) { creditsInUse } }",
            json!({ "id": customer })
        )
        .await,
        "FORBIDDEN"
    );
    // Another customer does not exist for it.
    let data = app
        .ok(
            &token,
            "query($id: ID!) { customer(id: $id) { name } }",
            json!({ "id": other }),
        )
        .await;
    assert_eq!(data["customer"], Value::Null);

    // Its customer's connections, with their runs; never another's.
    let connections = "query($c: ID) { connections(customerId: $c) { edges { node { id status system { key } lastSyncRun { status } syncRuns(first: 5) { edges { node { id entities { entity } error { code } } } } } } } }";
    let data = app.ok(&token, connections, json!({ "c": null })).await;
    let ids: Vec<&str> = data["connections"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [mine.as_str()]);
    let data = app.ok(&token, connections, json!({ "c": other })).await;
    assert_eq!(data["connections"]["edges"], json!([]));
    let data = app
        .ok(
            &token,
            "query($id: ID!) { connection(id: $id) { id } }",
            json!({ "id": theirs }),
        )
        .await;
    assert_eq!(data["connection"], Value::Null);
    let data = app
        .ok(
            &token,
            "query($id: ID!) { connection(id: $id) { id customer { name } } }",
            json!({ "id": mine }),
        )
        .await;
    assert_eq!(data["connection"]["customer"]["name"], "North Plant");
    for field in ["tokenPrefix", "metadata", "webhookEventTypes"] {
        let query = format!("query($id: ID!) {{ connection(id: $id) {{ {field} }} }}");
        let body = app.gql(&token, &query, json!({ "id": mine })).await;
        assert_eq!(error_code(&body), "FORBIDDEN", "{field}: {body}");
    }

    // Everything of the account is refused.
    let refused = [
        "{ viewer { account { id } } }",
        "{ viewer { account { credits { total used available } } } }",
        "{ creditLedger { edges { node { amount } } } }",
        "{ customers { edges { node { id } } } }",
        "{ webhookEndpoints { edges { node { id } } } }",
        "{ events { edges { node { id } } } }",
        "{ portalSessions { edges { node { id } } } }",
        "{ records(entity: ASSET) { edges { node { id } } } }",
        "{ assets { edges { node { id } } } }",
        "{ workOrders { edges { node { id } } } }",
        "{ bulkOperations { edges { node { id } } } }",
    ];
    for query in refused {
        let body = app.gql(&token, query, json!({})).await;
        assert_eq!(error_code(&body), "FORBIDDEN", "{query}: {body}");
    }
    assert_eq!(
        refusal(
            &app,
            &token,
            "query($id: ID!) { node(id: $id) { id } }",
            json!({ "id": mine })
        )
        .await,
        "FORBIDDEN"
    );
    assert_eq!(
        refusal(
            &app,
            &token,
            "query($id: ID!) { syncRun(id: $id) { id } }",
            json!({ "id": "run_00000000-0000-7000-8000-000000000000" })
        )
        .await,
        "FORBIDDEN"
    );
    let mutations = [
        (
            "mutation { createCustomer(input: {name: \"X\"}) { id } }",
            json!({}),
        ),
        (
            "mutation { createApiKey(name: \"x\") { __typename } }",
            json!({}),
        ),
        (
            "mutation($id: ID!) { triggerSync(connectionId: $id) { id } }",
            json!({ "id": mine }),
        ),
        (
            "mutation($id: ID!) { rotateConnectionToken(id: $id) { token } }",
            json!({ "id": mine }),
        ),
        (
            "mutation($id: ID!) { updateConnection(input: {id: $id, label: \"x\"}) { id } }",
            json!({ "id": mine }),
        ),
        (
            "mutation($id: ID!) { deleteCustomer(id: $id) }",
            json!({ "id": customer }),
        ),
        (
            "mutation { createWebhookEndpoint(input: {url: \"https://example.com/h\"}) { endpoint { id } } }",
            json!({}),
        ),
        (
            "mutation($id: ID!) { bulkWrite(input: {connectionId: $id, entity: ASSET, operation: CREATE, records: [{name: \"x\"}]}) { id } }",
            json!({ "id": mine }),
        ),
    ];
    for (query, variables) in mutations {
        let body = app.gql(&token, query, variables).await;
        assert_eq!(error_code(&body), "FORBIDDEN", "{query}: {body}");
    }
}

#[tokio::test]
async fn a_portal_session_connects_checks_and_disconnects_its_customers_systems() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 3).await;
    let other = app.create_customer(&key, "South Plant", None).await;
    let other = other["id"].as_str().unwrap().to_owned();
    let (theirs, _) = connect(&app, &key, demo_input(&other, "none")).await;
    let (_, token) = session(&app, &key, &customer, Some(&["demo"])).await;

    // A connect for its customer: the connection, never its token.
    let data = app
        .ok(
            &token,
            PORTAL_CONNECT,
            json!({ "input": demo_input(&customer, "none") }),
        )
        .await;
    let connected = &data["connect"];
    assert_eq!(connected["token"], Value::Null);
    assert_eq!(connected["connection"]["customer"]["name"], "North Plant");
    let mine = connected["connection"]["id"].as_str().unwrap().to_owned();
    // The credits came from the account's pool (3 - 1 - 1).
    let credits = app
        .ok(
            &key,
            "{ viewer { account { credits { available } } } }",
            json!({}),
        )
        .await;
    assert_eq!(credits["viewer"]["account"]["credits"]["available"], 1);

    // Not for another customer, not a system outside the allow-list.
    let body = app
        .gql(
            &token,
            PORTAL_CONNECT,
            json!({ "input": demo_input(&other, "none") }),
        )
        .await;
    assert_eq!(error_code(&body), "NOT_FOUND", "{body}");
    let mut maintainx = demo_input(&customer, "none");
    maintainx["systemKey"] = json!("maintainx");
    maintainx["credentials"] = json!({ "api_key": "k" });
    let body = app
        .gql(&token, PORTAL_CONNECT, json!({ "input": maintainx }))
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");

    // Out of credits: the caller learns that, not the pool's size.
    app.ok(
        &token,
        PORTAL_CONNECT,
        json!({ "input": demo_input(&customer, "none") }),
    )
    .await;
    let body = app
        .gql(
            &token,
            PORTAL_CONNECT,
            json!({ "input": demo_input(&customer, "none") }),
        )
        .await;
    assert_eq!(error_code(&body), "INSUFFICIENT_CREDITS", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        !message.contains("available") && !message.contains('0'),
        "{message}"
    );
    // The account key still learns the figures.
    let body = app
        .gql(
            &key,
            PORTAL_CONNECT,
            json!({ "input": demo_input(&customer, "none") }),
        )
        .await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("0 available"),
        "{body}"
    );

    // Check, new credentials, disconnect: its customer's connections only.
    let check = "mutation($id: ID!) { checkConnection(id: $id) { status } }";
    let credentials = "mutation($id: ID!, $c: JSON!) { updateConnectionCredentials(id: $id, credentials: $c) { status } }";
    let disconnect = "mutation($id: ID!) { disconnect(id: $id) { status } }";
    let new_credentials =
        json!({ "api_key": "demo-secret-key-456", "scale": 10, "simulate": "none" });
    app.ok(&token, check, json!({ "id": mine })).await;
    let data = app
        .ok(
            &token,
            credentials,
            json!({ "id": mine, "c": new_credentials }),
        )
        .await;
    assert_eq!(data["updateConnectionCredentials"]["status"], "ONLINE");
    for (query, variables) in [
        (check, json!({ "id": theirs })),
        (credentials, json!({ "id": theirs, "c": new_credentials })),
        (disconnect, json!({ "id": theirs })),
    ] {
        let body = app.gql(&token, query, variables).await;
        assert_eq!(error_code(&body), "NOT_FOUND", "{query}: {body}");
    }
    let data = app.ok(&token, disconnect, json!({ "id": mine })).await;
    assert_eq!(data["disconnect"]["status"], "DISCONNECTED");
    let credits = app
        .ok(
            &key,
            "{ viewer { account { credits { available } } } }",
            json!({}),
        )
        .await;
    assert_eq!(credits["viewer"]["account"]["credits"]["available"], 1);
    // The other customer's connection is untouched.
    let data = app
        .ok(
            &key,
            "query($id: ID!) { connection(id: $id) { status } }",
            json!({ "id": theirs }),
        )
        .await;
    assert_ne!(data["connection"]["status"], "DISCONNECTED");
}

#[tokio::test]
async fn subscriptions_carry_its_customers_connection_and_sync_events_only() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let other = app.create_customer(&key, "South Plant", None).await;
    let other = other["id"].as_str().unwrap().to_owned();
    let (_, token) = session(&app, &key, &customer, None).await;
    let mut events = running(
        &app,
        &token,
        "subscription { events { type customerId connection { id } } }",
        json!({}),
    )
    .await;
    let mut statuses = running(
        &app,
        &token,
        "subscription { connectionStatus { id status } }",
        json!({}),
    )
    .await;

    // Another customer's connection first, then its own: only its own shows.
    connect(&app, &key, demo_input(&other, "none")).await;
    let (mine, _) = connect(&app, &key, demo_input(&customer, "none")).await;
    let mut seen = Vec::new();
    while !seen.contains(&"SYNC_COMPLETED".to_owned()) {
        let message = next(&mut events).await.unwrap();
        let event = &message["payload"]["data"]["events"];
        assert_eq!(event["customerId"], customer.as_str(), "{message}");
        assert_eq!(event["connection"]["id"], mine.as_str(), "{message}");
        seen.push(event["type"].as_str().unwrap().to_owned());
    }
    assert!(
        seen.iter()
            .all(|t| t.starts_with("CONNECTION_") || t.starts_with("SYNC_")),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|t| t == "RECORDS_CHANGED"), "{seen:?}");
    let message = next(&mut statuses).await.unwrap();
    assert_eq!(
        message["payload"]["data"]["connectionStatus"]["id"],
        mine.as_str(),
        "{message}"
    );

    // Asking for what it may not see is refused, not silently empty.
    let mut socket = open(&app).await;
    init(&mut socket, &token).await;
    let payload =
        json!({ "query": "subscription { events(filter: {types: [CREDITS_CHANGED]}) { type } }" });
    send(
        &mut socket,
        json!({ "id": "c", "type": "subscribe", "payload": payload }),
    )
    .await;
    let message = next(&mut socket).await.unwrap();
    assert_eq!(message["type"], "error", "{message}");
    assert_eq!(
        message["payload"][0]["extensions"]["code"], "FORBIDDEN",
        "{message}"
    );

    // A run of its connection, live; another customer's run does not exist for it.
    let runs = app
        .ok(
            &key,
            "query($id: ID!) { connection(id: $id) { lastSyncRun { id } } }",
            json!({ "id": mine }),
        )
        .await;
    let run = runs["connection"]["lastSyncRun"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut watched = running(
        &app,
        &token,
        "subscription($id: ID!) { syncRun(id: $id) { status } }",
        json!({ "id": run }),
    )
    .await;
    drop(watched.close(None).await);
    let other_runs = app
        .ok(&key, "query($c: ID) { connections(customerId: $c) { edges { node { lastSyncRun { id } } } } }", json!({ "c": other }))
        .await;
    let foreign = &other_runs["connections"]["edges"][0]["node"]["lastSyncRun"]["id"];
    let payload = json!({ "query": "subscription($id: ID!) { syncRun(id: $id) { status } }", "variables": { "id": foreign } });
    send(
        &mut socket,
        json!({ "id": "r", "type": "subscribe", "payload": payload }),
    )
    .await;
    let message = next(&mut socket).await.unwrap();
    assert_eq!(
        message["payload"][0]["extensions"]["code"], "NOT_FOUND",
        "{message}"
    );
}

#[tokio::test]
async fn revocation_ends_a_session_over_http_and_its_sockets_at_once() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let (id, token) = session(&app, &key, &customer, None).await;
    let (_, kept) = session(&app, &key, &customer, None).await;
    let query = "{ portalSession { id } }";
    app.ok(&token, query, json!({})).await;
    let mut socket = running(
        &app,
        &token,
        "subscription { connectionStatus { id } }",
        json!({}),
    )
    .await;
    let mut other = running(
        &app,
        &kept,
        "subscription { connectionStatus { id } }",
        json!({}),
    )
    .await;

    let data = app.ok(&key, REVOKE, json!({ "id": id })).await;
    assert!(data["revokePortalSession"]["revokedAt"].is_string());
    assert_eq!(
        closed_soon(&mut socket, "the revoked session's socket").await,
        4403
    );
    let (status, body) = app.post(Some(&token), json!({ "query": query })).await;
    assert_eq!(
        (status, error_code(&body)),
        (401, "UNAUTHENTICATED"),
        "{body}"
    );
    // A second revocation changes nothing; the other session lives on.
    let again = app.ok(&key, REVOKE, json!({ "id": id })).await;
    assert_eq!(
        again["revokePortalSession"]["revokedAt"],
        data["revokePortalSession"]["revokedAt"]
    );
    send(&mut other, json!({ "type": "ping" })).await;
    assert_eq!(next(&mut other).await.unwrap()["type"], "pong");
    app.ok(&kept, query, json!({})).await;

    // Deleting the customer ends its sessions too.
    app.ok(
        &key,
        "mutation($id: ID!) { deleteCustomer(id: $id) }",
        json!({ "id": customer }),
    )
    .await;
    assert_eq!(
        closed_soon(&mut other, "the deleted customer's session's socket").await,
        4403
    );
    let (status, _) = app.post(Some(&kept), json!({ "query": query })).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_session_expires_on_its_own_over_http_and_on_open_sockets() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let (id, token) = session(&app, &key, &customer, None).await;
    let uuid = millwright::ids::decode(millwright::ids::Kind::PortalSession, &id).unwrap();
    // Sixty seconds is the shortest TTL; a test brings the end forward in the database.
    let soon = chrono::Utc::now() + chrono::Duration::seconds(2);
    let db = Database::connect(&app.db.url).await.unwrap();
    let moved = entity::portal_session::Entity::update_many()
        .col_expr(entity::portal_session::Column::ExpiresAt, soon.into())
        .filter(entity::portal_session::Column::Id.eq(uuid))
        .exec(&db)
        .await
        .unwrap();
    assert_eq!(moved.rows_affected, 1);
    db.close().await.ok();
    let mut socket = running(
        &app,
        &token,
        "subscription { connectionStatus { id } }",
        json!({}),
    )
    .await;
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Err(code) = next(&mut socket).await {
                return code;
            }
        }
    })
    .await
    .expect("the socket closes when the session expires");
    assert_eq!(closed, 4403);
    assert!(started.elapsed() < Duration::from_secs(8));
    wait_until(
        Duration::from_secs(5),
        "the expired token to be refused",
        async || {
            app.post(Some(&token), json!({ "query": "{ portalSession { id } }" }))
                .await
                .0
                == 401
        },
    )
    .await;
    // A new socket with it is refused at `connection_init`.
    let mut again = open(&app).await;
    send(&mut again, json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } })).await;
    assert_eq!(next(&mut again).await, Err(4403));
}

#[tokio::test]
async fn cors_answers_the_configured_origins_only() {
    let origin = "https://app.example.com";
    let app = TestApp::spawn_with(|c| c.http.cors_allowed_origins = vec![origin.into()]).await;
    let http = reqwest::Client::new();
    let preflight = |from: &'static str| {
        http.request(reqwest::Method::OPTIONS, app.url("/graphql"))
            .header("origin", from)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let answer = preflight(origin).await.unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    let headers = answer.headers();
    assert_eq!(headers["access-control-allow-origin"], origin);
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );
    let methods = headers["access-control-allow-methods"].to_str().unwrap();
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    assert!(headers.get("access-control-allow-credentials").is_none());
    // Another origin gets no permission.
    let answer = preflight("https://evil.example.net").await.unwrap();
    assert!(
        answer
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    // The request itself carries the permission for the allowed origin.
    let answer = http
        .post(app.url("/graphql"))
        .header("origin", origin)
        .json(&json!({ "query": "{ systems { key } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.headers()["access-control-allow-origin"], origin);

    // WebSockets: a listed origin and the server's own pages may open one, others may not.
    let upgrade = |from: String| {
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                app.ws_url(),
            )
            .unwrap();
        let headers = request.headers_mut();
        headers.insert(
            "sec-websocket-protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
        headers.insert("origin", from.parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    assert!(upgrade(origin.into()).await.is_ok());
    assert!(upgrade(format!("http://{}", app.addr)).await.is_ok());
    match upgrade("https://evil.example.net".into()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test]
async fn without_configured_origins_there_is_no_cors() {
    let app = TestApp::spawn().await;
    let answer = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, app.url("/graphql"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(
        answer
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    // Any page may still open a socket: a token is what it needs.
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            app.ws_url(),
        )
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    request
        .headers_mut()
        .insert("origin", "https://app.example.com".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_ok());
}

#[tokio::test]
async fn sessions_are_pruned_a_week_after_they_expired() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 10).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(session(&app, &key, &customer, None).await.0);
    }
    let db = millwright::db::Db::connect(&crate::harness::test_config(&app.db))
        .await
        .unwrap();
    // Expired 8 days ago, 6 days ago, and still live.
    for (id, days) in ids.iter().zip([8, 6]) {
        let uuid = millwright::ids::decode(millwright::ids::Kind::PortalSession, id).unwrap();
        let expired = chrono::Utc::now() - chrono::Duration::days(days);
        entity::portal_session::Entity::update_many()
            .col_expr(entity::portal_session::Column::ExpiresAt, expired.into())
            .filter(entity::portal_session::Column::Id.eq(uuid))
            .exec(db.conn())
            .await
            .unwrap();
    }
    let pruned = millwright::portal::prune(&db, millwright::portal::RETENTION)
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    let listed = app
        .ok(
            &key,
            "{ portalSessions { edges { node { id } } } }",
            json!({}),
        )
        .await;
    let left: Vec<&str> = listed["portalSessions"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(left, [ids[1].as_str(), ids[2].as_str()]);
}

#[tokio::test]
async fn a_portal_connect_sets_nothing_the_vendor_decides_and_stops_at_its_limit() {
    let app = TestApp::spawn().await;
    let (key, customer) = setup(&app, 20).await;
    let data = app
        .ok(
            &key,
            CREATE,
            json!({ "i": { "customerId": customer, "maxConnections": 2 } }),
        )
        .await;
    let token = data["createPortalSession"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    for (field, value) in [
        ("metadata", json!({ "tenant": "someone-else" })),
        ("webhookEventTypes", json!([])),
        ("syncIntervalMinutes", json!(1)),
        ("validate", json!(false)),
    ] {
        let mut input = demo_input(&customer, "none");
        input[field] = value;
        let body = app
            .gql(&token, PORTAL_CONNECT, json!({ "input": input }))
            .await;
        assert_eq!(error_code(&body), "FORBIDDEN", "{field}: {body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(field),
            "{body}"
        );
    }
    // Nothing was connected meanwhile; `validate: true` and a label are the browser's to give.
    let mut input = demo_input(&customer, "none");
    input["validate"] = json!(true);
    input["label"] = json!("Plant CMMS");
    app.ok(&token, PORTAL_CONNECT, json!({ "input": input }))
        .await;
    // One made by the account counts too: the customer now has 2, the session's limit.
    connect(&app, &key, demo_input(&customer, "none")).await;
    let body = app
        .gql(
            &token,
            PORTAL_CONNECT,
            json!({ "input": demo_input(&customer, "none") }),
        )
        .await;
    assert_eq!(error_code(&body), "CONFLICT", "{body}");
    let used = app
        .ok(
            &key,
            "{ viewer { account { credits { used } } } }",
            json!({}),
        )
        .await;
    assert_eq!(used["viewer"]["account"]["credits"]["used"], 2);
    // The account itself is not held to the session's limit.
    connect(&app, &key, demo_input(&customer, "none")).await;
    // Concurrent connects stop at the limit exactly.
    let data = app
        .ok(
            &key,
            CREATE,
            json!({ "i": { "customerId": customer, "maxConnections": 5 } }),
        )
        .await;
    let five = data["createPortalSession"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let attempts = (0..6).map(|_| {
        app.gql(
            &five,
            PORTAL_CONNECT,
            json!({ "input": demo_input(&customer, "none") }),
        )
    });
    let answers = futures_util::future::join_all(attempts).await;
    let made = answers.iter().filter(|a| a.get("errors").is_none()).count();
    assert_eq!(made, 2, "{answers:?}");
    for refused in answers.iter().filter(|a| a.get("errors").is_some()) {
        assert_eq!(error_code(refused), "CONFLICT", "{refused}");
    }
    for bad in [0, 1001] {
        let input = json!({ "customerId": customer, "maxConnections": bad });
        let body = app.gql(&key, CREATE, json!({ "i": input })).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    }
}

#[tokio::test]
async fn configured_origins_alone_may_frame_the_connect_portal_and_portal_calls_share_one_label() {
    let origin = "https://app.example.com";
    let app = TestApp::spawn_with(|c| c.http.cors_allowed_origins = vec![origin.into()]).await;
    let page = reqwest::get(app.url("/ui/connect")).await.unwrap();
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        policy.ends_with(&format!("frame-ancestors 'self' {origin}")),
        "{policy}"
    );
    let (key, customer) = setup(&app, 1).await;
    let (_, token) = session(&app, &key, &customer, None).await;
    for name in ["BrowserOne", "BrowserTwo"] {
        let query = format!("query {name} {{ portalSession {{ id }} }}");
        app.ok(&token, &query, json!({})).await;
    }
    let metrics = app.metrics().await;
    assert!(metrics.contains("operation=\"portal\""), "{metrics}");
    assert!(!metrics.contains("BrowserOne") && !metrics.contains("BrowserTwo"));
}
