//! Customers: CRUD, uniqueness, tenant isolation, search and keyset pagination.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::harness::{TestApp, error_code};

const PAGE: &str =
    "query($first: Int, $after: String, $last: Int, $before: String, $search: String) {
    customers(first: $first, after: $after, last: $last, before: $before, search: $search) {
        edges { cursor node { id name } }
        nodes { id }
        pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
}";

fn ids(page: &Value) -> Vec<String> {
    page["customers"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn create_update_delete_round_trip() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("Acme", 0).await;
    let created = app
        .create_customer(&key, "  Plant North  ", Some("crm-1"))
        .await;
    assert_eq!(created["name"], "Plant North");
    assert_eq!(created["externalId"], "crm-1");
    let id = created["id"].as_str().unwrap();

    let update = "mutation($input: UpdateCustomerInput!) { updateCustomer(input: $input) { id name externalId updatedAt } }";
    let data = app
        .ok(
            &key,
            update,
            json!({ "input": { "id": id, "name": "Plant N" } }),
        )
        .await;
    assert_eq!(data["updateCustomer"]["name"], "Plant N");
    assert_eq!(
        data["updateCustomer"]["externalId"], "crm-1",
        "externalId left out keeps it"
    );
    let data = app
        .ok(
            &key,
            update,
            json!({ "input": { "id": id, "externalId": null } }),
        )
        .await;
    assert_eq!(
        data["updateCustomer"]["externalId"],
        Value::Null,
        "null clears it"
    );

    let read = app.ok(&key, "query($id: ID!) { customer(id: $id) { name } node(id: $id) { id ... on Customer { name } } }", json!({ "id": id })).await;
    assert_eq!(read["customer"]["name"], "Plant N");
    assert_eq!(read["node"]["name"], "Plant N");

    let data = app
        .ok(
            &key,
            "mutation($id: ID!) { deleteCustomer(id: $id) }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(data["deleteCustomer"], id);
    let read = app
        .ok(
            &key,
            "query($id: ID!) { customer(id: $id) { name } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(read["customer"], Value::Null);
    let body = app
        .gql(
            &key,
            "mutation($id: ID!) { deleteCustomer(id: $id) }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(error_code(&body), "NOT_FOUND");
}

#[tokio::test]
async fn external_id_is_unique_per_account() {
    let app = TestApp::spawn().await;
    let (_, a) = app.create_account("A", 0).await;
    let (_, b) = app.create_account("B", 0).await;
    app.create_customer(&a, "One", Some("ext-1")).await;
    let create = "mutation($input: CreateCustomerInput!) { createCustomer(input: $input) { id } }";
    let body = app
        .gql(
            &a,
            create,
            json!({ "input": { "name": "Two", "externalId": "ext-1" } }),
        )
        .await;
    assert_eq!(error_code(&body), "CONFLICT");
    // Another account may use the same external id, and customers without one never clash.
    app.create_customer(&b, "One", Some("ext-1")).await;
    app.create_customer(&a, "No ext 1", None).await;
    app.create_customer(&a, "No ext 2", None).await;
    let two = app.create_customer(&a, "Two", Some("ext-2")).await;
    let update = "mutation($input: UpdateCustomerInput!) { updateCustomer(input: $input) { id } }";
    let body = app
        .gql(
            &a,
            update,
            json!({ "input": { "id": two["id"], "externalId": "ext-1" } }),
        )
        .await;
    assert_eq!(error_code(&body), "CONFLICT");
}

#[tokio::test]
async fn input_is_validated() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    let create = "mutation($input: CreateCustomerInput!) { createCustomer(input: $input) { id } }";
    for input in [
        json!({ "name": "" }),
        json!({ "name": "x".repeat(201) }),
        json!({ "name": "bad\u{0}name" }),
        json!({ "name": "ok", "externalId": "" }),
        json!({ "name": 42 }),
        json!({}),
    ] {
        let body = app.gql(&key, create, json!({ "input": input })).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "input {input}");
    }
    for id in [
        "",
        "cus_123",
        "acc_01a21efba3467744a513d4d6466e3ea9",
        "'; DROP TABLE customers; --",
    ] {
        let body = app
            .gql(
                &key,
                "mutation($id: ID!) { deleteCustomer(id: $id) }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "id {id:?}");
    }
    let data = app
        .ok(&key, PAGE, json!({ "search": "x".repeat(150) }))
        .await;
    assert!(ids(&data).is_empty());
}

#[tokio::test]
async fn another_account_cannot_see_or_touch_customers() {
    let app = TestApp::spawn().await;
    let (_, a) = app.create_account("A", 0).await;
    let (_, b) = app.create_account("B", 0).await;
    let customer = app.create_customer(&a, "Secret plant", Some("s-1")).await;
    let id = customer["id"].as_str().unwrap();

    let read = app
        .ok(
            &b,
            "query($id: ID!) { customer(id: $id) { name } node(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(read, json!({ "customer": null, "node": null }));
    let update = "mutation($input: UpdateCustomerInput!) { updateCustomer(input: $input) { id } }";
    let body = app
        .gql(&b, update, json!({ "input": { "id": id, "name": "Mine" } }))
        .await;
    assert_eq!(error_code(&body), "NOT_FOUND");
    let body = app
        .gql(
            &b,
            "mutation($id: ID!) { deleteCustomer(id: $id) }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(error_code(&body), "NOT_FOUND");
    assert!(ids(&app.ok(&b, PAGE, json!({})).await).is_empty());
    // The account's own view is unchanged.
    let read = app
        .ok(
            &a,
            "query($id: ID!) { customer(id: $id) { name } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(read["customer"]["name"], "Secret plant");
}

#[tokio::test]
async fn search_matches_name_or_external_id_case_insensitively() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    app.create_customer(&key, "North Mill", Some("SAP-100"))
        .await;
    app.create_customer(&key, "South Mill", Some("sap-200"))
        .await;
    app.create_customer(&key, "Refinery 50%", None).await;
    app.create_customer(&key, "Refinery 500", None).await;
    let count = |data: Value| ids(&data).len();
    assert_eq!(
        count(app.ok(&key, PAGE, json!({ "search": "mill" })).await),
        2
    );
    assert_eq!(
        count(app.ok(&key, PAGE, json!({ "search": "SAP-" })).await),
        2
    );
    assert_eq!(
        count(app.ok(&key, PAGE, json!({ "search": "north" })).await),
        1
    );
    assert_eq!(
        count(app.ok(&key, PAGE, json!({ "search": "50%" })).await),
        1,
        "% is literal"
    );
    assert_eq!(
        count(app.ok(&key, PAGE, json!({ "search": "_" })).await),
        0,
        "_ is literal"
    );
}

#[tokio::test]
async fn pagination_has_no_gap_or_duplicate_while_rows_are_inserted() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    let mut existing = Vec::new();
    for i in 0..23 {
        existing.push(
            app.create_customer(&key, &format!("C{i:02}"), None).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Forwards, inserting a customer between every two pages.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut inserted = 0;
    loop {
        let data = app
            .ok(&key, PAGE, json!({ "first": 5, "after": after }))
            .await;
        let page = &data["customers"];
        seen.extend(ids(&data));
        assert_eq!(page["pageInfo"]["hasPreviousPage"], after.is_some());
        if page["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
        app.create_customer(&key, &format!("Inserted {inserted}"), None)
            .await;
        inserted += 1;
    }
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicate");
    assert!(existing.iter().all(|id| unique.contains(id)), "no gap");
    assert_eq!(
        seen.len(),
        23 + inserted,
        "rows inserted after the cursor appear at the end"
    );

    // Backwards from the end, inserting again: the same total order, reversed page by page.
    let mut back = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let data = app
            .ok(&key, PAGE, json!({ "last": 4, "before": before }))
            .await;
        let page = &data["customers"];
        let mut page_ids = ids(&data);
        page_ids.reverse();
        back.extend(page_ids);
        assert_eq!(page["pageInfo"]["hasNextPage"], before.is_some());
        if page["pageInfo"]["hasPreviousPage"] == false {
            break;
        }
        before = page["pageInfo"]["startCursor"].as_str().map(str::to_owned);
        app.create_customer(&key, "Inserted during backward paging", None)
            .await;
    }
    back.reverse();
    assert_eq!(
        back, seen,
        "backward paging visits the same rows in the same order"
    );
}

#[tokio::test]
async fn edges_cursors_resume_exactly_after_their_row() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    for i in 0..6 {
        app.create_customer(&key, &format!("C{i}"), None).await;
    }
    let all = app.ok(&key, PAGE, json!({ "first": 6 })).await;
    let edges = all["customers"]["edges"].as_array().unwrap().clone();
    let cursor = edges[2]["cursor"].as_str().unwrap();
    let rest = app
        .ok(&key, PAGE, json!({ "first": 10, "after": cursor }))
        .await;
    let expected: Vec<_> = edges[3..]
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids(&rest), expected);
    let empty = app.ok(&key, PAGE, json!({ "first": 0 })).await;
    assert!(ids(&empty).is_empty());
}

#[tokio::test]
async fn bad_page_arguments_are_rejected() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    for vars in [
        json!({ "first": 1000 }),
        json!({ "first": 101 }),
        json!({ "last": 101 }),
        json!({ "first": -1 }),
        json!({ "first": 5, "last": 5 }),
        json!({ "after": "not-a-cursor" }),
        json!({ "after": "" }),
        json!({ "before": "a2sxOmdhcmJhZ2U" }),
        json!({ "after": "%%%%" }),
        json!({ "after": "x".repeat(10_000) }),
        json!({ "first": "ten" }),
        json!({ "first": 1e20 }),
    ] {
        let body = app.gql(&key, PAGE, vars.clone()).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "variables {vars}");
    }
}

#[tokio::test]
async fn concurrent_writes_never_fail_with_a_locked_database() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let (http, url, key) = (app.http.clone(), app.url("/graphql"), key.clone());
            tokio::spawn(async move {
                let query = "mutation($n: String!) { createCustomer(input: {name: $n}) { id } }";
                let body: Value = http
                    .post(url)
                    .bearer_auth(key)
                    .json(&json!({ "query": query, "variables": { "n": format!("C{i}") } }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                body
            })
        })
        .collect();
    for task in tasks {
        let body = task.await.unwrap();
        assert!(body.get("errors").is_none(), "{body}");
    }
    let data = app.ok(&key, PAGE, json!({ "first": 100 })).await;
    assert_eq!(ids(&data).len(), 40);
}
