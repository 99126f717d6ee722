//! The HTTP surface: routes, the GraphQL endpoint, health, metrics and the shared layers
//! (request ids, tracing, body limit, timeout).

use std::{sync::Arc, time::Duration};

use async_graphql::{BatchRequest, BatchResponse, http::GraphiQLSource};
use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::{HeaderMap, HeaderName, StatusCode, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use serde_json::json;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::TraceLayer,
};

use crate::{
    auth::{self, AuthCache, Principal},
    config::Config,
    db::Db,
    error::AppError,
    graphql::{AppSchema, Loaders, normalize},
    metrics::Metrics,
    ws,
};

pub struct AppState {
    pub db: Db,
    pub schema: AppSchema,
    pub metrics: Metrics,
    pub auth_cache: Arc<AuthCache>,
    pub config: Config,
    /// Fires when the server stops; long-lived sockets close on it.
    pub shutdown: tokio_util::sync::CancellationToken,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: Arc<AppState>) -> Router {
    let timeout = state.config.request_timeout();
    let body_limit = state.config.http.body_limit_bytes;
    let graphql = Router::new()
        .route("/graphql", get(graphiql).post(graphql_post))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ));
    Router::new()
        .merge(graphql)
        .route("/graphql/ws", get(ws::upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let request_id = request
                .headers()
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

async fn count_requests(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    state
        .metrics
        .http_requests
        .with_label_values(&[route.as_str(), response.status().as_str()])
        .inc();
    response
}

async fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .finish(),
    )
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), state.db.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready").into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// A GraphQL-shaped error body for requests rejected before execution.
fn reject(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    (status, axum::Json(body)).into_response()
}

async fn graphql_post(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match parse_body(&body, state.config.http.max_batch_size) {
        Ok(request) => request,
        Err(message) => return reject(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", &message),
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    let principal = match auth::authenticate(
        &state.db,
        &state.auth_cache,
        state.config.security.admin_token.as_ref(),
        authorization,
    )
    .await
    {
        Ok(principal) => principal,
        Err(AppError::Unauthenticated(message)) => {
            return reject(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", &message);
        }
        Err(err) => {
            tracing::error!(error = %format!("{:#}", anyhow::Error::from(err)), "authentication failed");
            return reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "INTERNAL",
                "internal error",
            );
        }
    };
    let response = match request {
        BatchRequest::Single(request) => {
            BatchResponse::Single(execute(&state, request, principal).await)
        }
        BatchRequest::Batch(requests) => {
            let mut responses = Vec::with_capacity(requests.len());
            for request in requests {
                responses.push(execute(&state, request, principal.clone()).await);
            }
            BatchResponse::Batch(responses)
        }
    };
    axum::Json(response).into_response()
}

/// Runs one operation, gives its errors their codes and records its metrics.
async fn execute(
    state: &AppState,
    request: async_graphql::Request,
    principal: Principal,
) -> async_graphql::Response {
    let operation = request
        .operation_name
        .clone()
        .or_else(|| operation_name(&request.query).map(str::to_owned));
    let started = std::time::Instant::now();
    let response = normalize(
        state
            .schema
            .execute(with_context(state, request, principal))
            .await,
    );
    let seconds = started.elapsed().as_secs_f64();
    state
        .metrics
        .observe_graphql(operation.as_deref(), response.errors.is_empty(), seconds);
    response
}

/// Attaches what resolvers need to know about this request: the caller and its DataLoaders.
pub fn with_context(
    state: &AppState,
    request: async_graphql::Request,
    principal: Principal,
) -> async_graphql::Request {
    let request = match principal.scope() {
        Ok(scope) => request.data(Loaders::new(
            &state.db,
            scope.account_id,
            state.config.graphql_batch_window(),
        )),
        Err(_) => request,
    };
    request.data(principal)
}

/// The name of the first operation in a document (`query Name …`), for metrics.
fn operation_name(query: &str) -> Option<&str> {
    let mut rest = query;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',' || c == '\u{feff}');
        match rest.strip_prefix('#') {
            Some(comment) => rest = comment.split_once('\n').map_or("", |(_, after)| after),
            None => break,
        }
    }
    let after_keyword = ["query", "mutation", "subscription"]
        .iter()
        .find_map(|k| rest.strip_prefix(k))?;
    let name_start = after_keyword.trim_start();
    if name_start.len() == after_keyword.len() {
        return None;
    }
    let end = name_start
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(name_start.len());
    let name = &name_start[..end];
    (!name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit())).then_some(name)
}

/// Parses a JSON GraphQL request (or batch) whatever the content type claims; anything else
/// is HTTP 400 with a code.
fn parse_body(body: &[u8], max_batch: usize) -> Result<BatchRequest, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|err| format!("the body is not JSON: {err}"))?;
    let parse_one = |value: serde_json::Value| -> Result<async_graphql::Request, String> {
        if !value.get("query").is_some_and(serde_json::Value::is_string) {
            return Err("not a GraphQL request: `query` must be a string".into());
        }
        serde_json::from_value(value).map_err(|err| format!("not a GraphQL request: {err}"))
    };
    let serde_json::Value::Array(items) = value else {
        return parse_one(value).map(BatchRequest::Single);
    };
    if items.is_empty() || items.len() > max_batch {
        return Err(format!("a batch holds 1 to {max_batch} operations"));
    }
    let batch = items
        .into_iter()
        .map(parse_one)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(BatchRequest::Batch(batch))
}

#[cfg(test)]
mod tests {
    use super::operation_name;

    #[test]
    fn finds_the_operation_name() {
        assert_eq!(operation_name("query Dash { a }"), Some("Dash"));
        assert_eq!(
            operation_name("  # hi\n mutation Do($x: Int) { a }"),
            Some("Do")
        );
        assert_eq!(operation_name("{ a }"), None);
        assert_eq!(operation_name("query { a }"), None);
        assert_eq!(operation_name("query($x: Int) { a }"), None);
        assert_eq!(operation_name("queryX { a }"), None);
    }
}
