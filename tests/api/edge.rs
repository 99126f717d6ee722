//! The HTTP edge as the GraphQL-over-HTTP specification describes it: media types and their
//! status codes, GET queries, content types, batching.

use reqwest::{Method, header};
use serde_json::{Value, json};

use crate::harness::{TestApp, error_code};

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

/// Status, content type and JSON body of a request.
async fn send(request: reqwest::RequestBuilder) -> (u16, String, Value) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, content_type, body)
}

fn post(app: &TestApp, key: &str, accept: &str, body: Value) -> reqwest::RequestBuilder {
    app.http
        .post(app.url("/graphql"))
        .bearer_auth(key)
        .header(header::ACCEPT, accept)
        .json(&body)
}

#[tokio::test]
async fn graphql_response_json_answers_request_errors_with_400_and_no_data() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    for (query, variables) in [
        ("{ viewer { ", json!({})),
        ("{ nope }", json!({})),
        // A variable the operation declares but does not use (validation).
        ("query($n: Int) { __typename }", json!({ "n": 1 })),
    ] {
        let body = json!({ "query": query, "variables": variables });
        let (status, content_type, json) =
            send(post(&app, &key, GRAPHQL_RESPONSE_JSON, body)).await;
        assert_eq!(status, 400, "{query}: {json}");
        assert!(
            content_type.starts_with(GRAPHQL_RESPONSE_JSON),
            "{content_type}"
        );
        assert!(json.get("data").is_none(), "{query}: {json}");
        assert_eq!(error_code(&json), "BAD_USER_INPUT", "{query}");
    }

    let ok = json!({ "query": "{ viewer { account { name } } }" });
    let (status, content_type, json) = send(post(&app, &key, GRAPHQL_RESPONSE_JSON, ok)).await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, GRAPHQL_RESPONSE_JSON)
    );
    assert_eq!(json["data"]["viewer"]["account"]["name"], "A");
}

#[tokio::test]
async fn field_errors_keep_200_and_their_data_under_graphql_response_json() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    let body = json!({ "query": "{ customers(first: 500) { nodes { id } } }" });
    let (status, _, json) = send(post(&app, &key, GRAPHQL_RESPONSE_JSON, body)).await;
    assert_eq!(status, 200, "{json}");
    assert!(json.get("data").is_some(), "{json}");
    assert_eq!(error_code(&json), "BAD_USER_INPUT");
}

#[tokio::test]
async fn application_json_keeps_200_for_request_errors() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    for accept in ["application/json", "*/*", "text/html"] {
        let body = json!({ "query": "{ nope }" });
        let (status, content_type, json) = send(post(&app, &key, accept, body)).await;
        assert_eq!(status, 200, "{accept}");
        assert!(
            content_type.starts_with("application/json"),
            "{accept}: {content_type}"
        );
        assert_eq!(error_code(&json), "BAD_USER_INPUT");
    }
    // Without an Accept header too.
    let (status, content_type, _) = send(
        app.http
            .post(app.url("/graphql"))
            .bearer_auth(&key)
            .json(&json!({ "query": "{ nope }" })),
    )
    .await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
}

#[tokio::test]
async fn the_accept_header_is_negotiated_by_quality() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    let query = json!({ "query": "{ __typename }" });
    for (accept, expected) in [
        (
            "application/graphql-response+json, application/json",
            GRAPHQL_RESPONSE_JSON,
        ),
        (
            "application/json, application/graphql-response+json",
            "application/json",
        ),
        (
            "application/json;q=0.9, application/graphql-response+json",
            GRAPHQL_RESPONSE_JSON,
        ),
        (
            "application/graphql-response+json;q=0, application/json",
            "application/json",
        ),
    ] {
        let (status, content_type, _) = send(post(&app, &key, accept, query.clone())).await;
        assert_eq!((status, content_type.as_str()), (200, expected), "{accept}");
    }
}

#[tokio::test]
async fn get_runs_queries_and_refuses_mutations() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    let get = |params: &[(&str, &str)]| {
        app.http
            .get(app.url("/graphql"))
            .bearer_auth(&key)
            .header(header::ACCEPT, GRAPHQL_RESPONSE_JSON)
            .query(params)
    };
    let (status, _, json) = send(get(&[
        (
            "query",
            "query Q($n: Int) { customers(first: $n) { nodes { id } } }",
        ),
        ("variables", "{\"n\": 5}"),
    ]))
    .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["data"]["customers"]["nodes"], json!([]));

    let mutation = "mutation { createCustomer(input: {name: \"over GET\"}) { id } }";
    let response = get(&[("query", mutation)]).send().await.unwrap();
    assert_eq!(response.status(), 405, "{:?}", response.text().await);
    assert_eq!(response.headers()[header::ALLOW], "POST");
    let json: Value = response.json().await.unwrap();
    assert_eq!(error_code(&json), "BAD_USER_INPUT");
    // A mutation chosen by name out of several operations is refused as well.
    let document = format!("query Q {{ __typename }} {mutation}");
    let document = document.replacen("mutation {", "mutation M {", 1);
    let response = get(&[("query", &document), ("operationName", "M")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let customers = app
        .ok(&key, "{ customers { nodes { id } } }", json!({}))
        .await;
    assert_eq!(
        customers["customers"]["nodes"],
        json!([]),
        "nothing was created"
    );

    // Without a `query` parameter GET still serves GraphiQL.
    let page = app.http.get(app.url("/graphql")).send().await.unwrap();
    assert!(page.text().await.unwrap().contains("graphiql"));
}

#[tokio::test]
async fn posts_that_are_not_json_get_415() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    let body = json!({ "query": "{ __typename }" }).to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("multipart/form-data; boundary=x"),
    ] {
        let mut request = app
            .http
            .request(Method::POST, app.url("/graphql"))
            .bearer_auth(&key)
            .body(body.clone());
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let (status, _, json) = send(request).await;
        assert_eq!(status, 415, "{content_type:?}");
        assert_eq!(error_code(&json), "BAD_USER_INPUT");
    }
    let request = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(&key)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(body);
    assert_eq!(send(request).await.0, 200);
}

#[tokio::test]
async fn batches_answer_each_operation_under_graphql_response_json() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_account("A", 0).await;
    let batch = json!([{ "query": "{ viewer { account { name } } }" }, { "query": "{ nope }" }]);
    let (status, content_type, json) = send(post(&app, &key, GRAPHQL_RESPONSE_JSON, batch)).await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, GRAPHQL_RESPONSE_JSON)
    );
    assert_eq!(json[0]["data"]["viewer"]["account"]["name"], "A");
    assert!(json[1].get("data").is_none(), "{json}");
    assert_eq!(error_code(&json[1]), "BAD_USER_INPUT");
}

#[tokio::test]
async fn chunked_bodies_over_the_limit_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(|c| c.http.body_limit_bytes = 64 * 1024).await;
    let query = format!("{{ __typename }} # {}", "x".repeat(100 * 1024));
    let body = json!({ "query": query }).to_string();
    // reqwest sends a length; a chunked body has none, so the limit applies while reading.
    let mut request = format!(
        "POST /graphql HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        app.addr
    );
    for chunk in body.as_bytes().chunks(8 * 1024) {
        request.push_str(&format!(
            "{:x}\r\n{}\r\n",
            chunk.len(),
            std::str::from_utf8(chunk).unwrap()
        ));
    }
    request.push_str("0\r\n\r\n");
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    // The server may answer and close before it has read everything.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.200}");
    assert!(answer.contains("BAD_USER_INPUT"), "{answer:.400}");
}
