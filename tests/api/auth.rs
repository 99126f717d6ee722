//! Authentication: every kind of bad token, the admin token's reach, API key lifecycle.

use serde_json::json;

use crate::harness::{ADMIN_TOKEN, TestApp, error_code};

const VIEWER: &str = "{ viewer { account { id name } } }";

#[tokio::test]
async fn every_kind_of_bad_token_is_unauthenticated() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("Acme", 0).await;
    let (status, body) = app.post(None, json!({ "query": VIEWER })).await;
    assert_eq!(
        (status, error_code(&body)),
        (200, "UNAUTHENTICATED"),
        "missing token"
    );

    let bad_headers = [
        "Bearer mwk_doesnotexist".to_owned(),
        "Bearer mwc_doesnotexist".to_owned(),
        "Bearer something-else-entirely".to_owned(),
        "Bearer ".to_owned(),
        format!("Basic {key}"),
        key.clone(),
        format!("Bearer {}x", key),
    ];
    for header in bad_headers {
        let response = app
            .http
            .post(app.url("/graphql"))
            .header("authorization", &header)
            .json(&json!({ "query": VIEWER }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "header {header:?}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error_code(&body), "UNAUTHENTICATED", "header {header:?}");
    }
}

/// RFC 6750: the scheme's name is case-insensitive.
#[tokio::test]
async fn the_bearer_scheme_is_accepted_in_any_case() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("Acme", 0).await;
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let response = app
            .http
            .post(app.url("/graphql"))
            .header("authorization", format!("{scheme} {key}"))
            .json(&json!({ "query": VIEWER }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{scheme}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body["data"]["viewer"]["account"]["name"], "Acme",
            "{scheme}"
        );
    }
}

#[tokio::test]
async fn revoked_key_stops_working_and_other_keys_keep_working() {
    let app = TestApp::spawn().await;
    let (account_id, first_key) = app.create_account("Acme", 0).await;
    let data = app
        .ok(
            &first_key,
            "mutation { createApiKey(name: \"ci\") { key apiKey { id name prefix revokedAt } } }",
            json!({}),
        )
        .await;
    let second_key = data["createApiKey"]["key"].as_str().unwrap().to_owned();
    let second_id = data["createApiKey"]["apiKey"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(second_key.starts_with("mwk_"));
    assert!(second_key.starts_with(data["createApiKey"]["apiKey"]["prefix"].as_str().unwrap()));

    let viewer = app.ok(&second_key, VIEWER, json!({})).await;
    assert_eq!(viewer["viewer"]["account"]["id"], account_id.as_str());

    let revoked = app
        .ok(
            &first_key,
            "mutation($id: ID!) { revokeApiKey(id: $id) { id revokedAt } }",
            json!({ "id": second_id }),
        )
        .await;
    assert!(revoked["revokeApiKey"]["revokedAt"].is_string());

    let (status, body) = app
        .post(Some(&second_key), json!({ "query": VIEWER }))
        .await;
    assert_eq!((status, error_code(&body)), (401, "UNAUTHENTICATED"));
    app.ok(&first_key, VIEWER, json!({})).await;

    let keys = app
        .ok(
            &first_key,
            "{ viewer { account { apiKeys { id lastUsedAt revokedAt } } } }",
            json!({}),
        )
        .await;
    let keys = keys["viewer"]["account"]["apiKeys"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(keys.len(), 2);
    assert!(
        keys.iter().all(|k| k["lastUsedAt"].is_string()),
        "both keys were used: {keys:?}"
    );
}

#[tokio::test]
async fn keys_are_stored_only_as_hashes() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("Acme", 0).await;
    let db = sea_orm::Database::connect(&app.db.url).await.unwrap();
    use sea_orm::{ConnectionTrait, Statement};
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT token_hash, prefix FROM api_keys",
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let hash: String = rows[0].try_get("", "token_hash").unwrap();
    assert_ne!(hash, key);
    assert!(!hash.contains(&key[4..]));
    db.close().await.ok();
}

#[tokio::test]
async fn admin_token_reaches_only_admin_operations() {
    let app = TestApp::spawn().await;
    let (account_id, key) = app.create_account("Acme", 5).await;

    let body = app.gql(ADMIN_TOKEN, VIEWER, json!({})).await;
    assert_eq!(error_code(&body), "FORBIDDEN");

    let body = app
        .gql(
            &key,
            "mutation { createAccount(input: {name: \"x\"}) { apiKey } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN");
    let grant = "mutation($id: ID!, $n: Int!) { grantCredits(accountId: $id, amount: $n) { total used available } }";
    let body = app
        .gql(&key, grant, json!({ "id": account_id, "n": 10 }))
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN");

    let data = app
        .ok(ADMIN_TOKEN, grant, json!({ "id": account_id, "n": 10 }))
        .await;
    assert_eq!(
        data["grantCredits"],
        json!({ "total": 15, "used": 0, "available": 15 })
    );

    for (amount, why) in [(0, "zero"), (-3, "negative"), (i32::MAX, "overflowing")] {
        let body = app
            .gql(ADMIN_TOKEN, grant, json!({ "id": account_id, "n": amount }))
            .await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{why} grant");
    }
    let body = app
        .gql(
            ADMIN_TOKEN,
            grant,
            json!({ "id": "acc_00000000000000000000000000000000", "n": 1 }),
        )
        .await;
    assert_eq!(error_code(&body), "NOT_FOUND");
    let data = app
        .ok(
            &key,
            "{ viewer { account { credits { total } } } }",
            json!({}),
        )
        .await;
    assert_eq!(data["viewer"]["account"]["credits"]["total"], 15);
}

#[tokio::test]
async fn admin_api_is_off_without_a_configured_token() {
    let app = TestApp::spawn_with(|config| config.security.admin_token = None).await;
    let (status, body) = app
        .post(
            Some(ADMIN_TOKEN),
            json!({ "query": "mutation { createAccount(input: {name: \"x\"}) { apiKey } }" }),
        )
        .await;
    assert_eq!((status, error_code(&body)), (401, "UNAUTHENTICATED"));
}

#[tokio::test]
async fn account_input_is_validated() {
    let app = TestApp::spawn().await;
    let create = "mutation($name: String!, $credits: Int) { createAccount(input: {name: $name, credits: $credits}) { apiKey } }";
    for (name, credits) in [("", 0), ("   ", 0), ("ok", -1)] {
        let body = app
            .gql(
                ADMIN_TOKEN,
                create,
                json!({ "name": name, "credits": credits }),
            )
            .await;
        assert_eq!(
            error_code(&body),
            "BAD_USER_INPUT",
            "name {name:?} credits {credits}"
        );
    }
    let body = app
        .gql(ADMIN_TOKEN, create, json!({ "name": "x".repeat(5000) }))
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    let body = app
        .gql(
            ADMIN_TOKEN,
            create,
            json!({ "name": "x", "credits": "lots" }),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
}

/// A connection token reaches its connection, its runs, records and events, and nothing of the
/// account: every account-level field and operation answers `FORBIDDEN` (or, for an object
/// looked up by id, nothing), whatever path it is reached by.
#[tokio::test]
async fn a_connection_token_reaches_nothing_of_the_account() {
    use crate::harness::{Receiver, connect, demo_input, setup};
    let app = TestApp::spawn_with(|config| config.webhooks.allow_private_targets = true).await;
    let (key, customer) = setup(&app, 10).await;
    let (connection, token) = connect(&app, &key, demo_input(&customer, "none")).await;
    let receiver = Receiver::start(&[]).await;
    let data = app
        .ok(
            &key,
            "mutation($url: String!) { createWebhookEndpoint(input: { url: $url }) { endpoint { id } }
             createApiKey(name: \"second\") { apiKey { id } } }",
            json!({ "url": receiver.url }),
        )
        .await;
    let endpoint = data["createWebhookEndpoint"]["endpoint"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let api_key = data["createApiKey"]["apiKey"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let data = app
        .ok(
            &key,
            "{ creditLedger { nodes { id } } viewer { account { id } } }",
            json!({}),
        )
        .await;
    let entry = data["creditLedger"]["nodes"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let account = data["viewer"]["account"]["id"].as_str().unwrap().to_owned();

    // What the token may see of its own: the connection, its customer's name, the account's
    // name (whose token it is).
    let data = app
        .ok(
            &token,
            "{ viewer { account { id name } connection { id customer { id name connections { nodes { id } } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(data["viewer"]["connection"]["id"], connection.as_str());
    assert_eq!(
        data["viewer"]["connection"]["customer"]["connections"]["nodes"],
        json!([{ "id": connection }])
    );

    let vars = json!({
        "customer": customer, "connection": connection, "endpoint": endpoint, "key": api_key,
        "entry": entry, "account": account, "delivery": "whd_0190a0b0c0d07e008000000000000000",
    });
    let forbidden = [
        "{ viewer { account { credits { total used available } } } }",
        "{ viewer { account { apiKeys { id } } } }",
        "{ viewer { connection { customer { creditsInUse } } } }",
        "{ customers { nodes { id } } }",
        "query($customer: ID!) { customer(id: $customer) { id } }",
        "{ creditLedger { nodes { id } } }",
        "{ webhookEndpoints { nodes { id } } }",
        "query($endpoint: ID!) { webhookEndpoint(id: $endpoint) { id } }",
        "mutation { createApiKey(name: \"x\") { key } }",
        "mutation($key: ID!) { revokeApiKey(id: $key) { id } }",
        "mutation { createCustomer(input: { name: \"x\" }) { id } }",
        "mutation($customer: ID!) { updateCustomer(input: { id: $customer, name: \"y\" }) { id } }",
        "mutation($customer: ID!) { deleteCustomer(id: $customer) }",
        "mutation($connection: ID!) { disconnect(id: $connection) { id } }",
        "mutation($connection: ID!) { updateConnection(input: { id: $connection, label: \"x\" }) { id } }",
        "mutation($connection: ID!) { updateConnectionCredentials(id: $connection, credentials: { api_key: \"k\" }) { id } }",
        "mutation($connection: ID!) { rotateConnectionToken(id: $connection) { token } }",
        "mutation($connection: ID!) { checkConnection(id: $connection) { id } }",
        "mutation { createWebhookEndpoint(input: { url: \"https://example.com/x\" }) { secret } }",
        "mutation($endpoint: ID!) { updateWebhookEndpoint(input: { id: $endpoint, enabled: false }) { id } }",
        "mutation($endpoint: ID!) { deleteWebhookEndpoint(id: $endpoint) }",
        "mutation($endpoint: ID!) { rotateWebhookSecret(id: $endpoint) { secret } }",
        "mutation($endpoint: ID!) { sendTestWebhook(endpointId: $endpoint) { id } }",
        "mutation($delivery: ID!) { redeliverWebhook(deliveryId: $delivery) { id } }",
        "mutation($endpoint: ID!) { replayWebhooks(endpointId: $endpoint, since: \"2020-01-01T00:00:00Z\") }",
        "mutation($account: ID!) { grantCredits(accountId: $account, amount: 5) { total } }",
        "mutation { createAccount(input: { name: \"x\" }) { apiKey } }",
    ];
    for query in forbidden {
        let body = app.gql(&token, query, vars.clone()).await;
        assert_eq!(error_code(&body), "FORBIDDEN", "{query}: {body}");
    }
    // Objects of the account looked up by id are not there for the token.
    for id in [&customer, &endpoint, &api_key, &entry, &account] {
        let data = app
            .ok(
                &token,
                "query($id: ID!) { node(id: $id) { id } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(data["node"], serde_json::Value::Null, "node {id}");
    }
    // Nothing above changed the account.
    let data = app
        .ok(
            &key,
            "{ viewer { account { credits { total used } apiKeys { revokedAt } } } customers { nodes { name } } webhookEndpoints { nodes { enabled } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data,
        json!({ "viewer": { "account": { "credits": { "total": 10, "used": 1 },
                "apiKeys": [{ "revokedAt": null }, { "revokedAt": null }] } },
                "customers": { "nodes": [{ "name": "North Plant" }] },
                "webhookEndpoints": { "nodes": [{ "enabled": true }] } })
    );
}
