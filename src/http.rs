//! The HTTP surface: routes, health, metrics and the shared layers (request ids, tracing,
//! body limit, timeout). The GraphQL endpoint is [`graphql`]; GraphiQL's page and files
//! are [`graphiql`], the web UI [`ui`].

mod graphiql;
mod graphql;
mod ui;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::{HeaderName, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::TraceLayer,
};

use crate::{
    auth::{AuthCache, Principal},
    config::Config,
    db::Db,
    graphql::{AppSchema, Loaders},
    limits::RateLimits,
    metrics::Metrics,
    workers::WorkerHealth,
    ws,
};

pub struct AppState {
    pub db: Db,
    pub schema: AppSchema,
    pub metrics: Metrics,
    /// The background workers' supervision: `/readyz` names those that keep failing.
    pub workers: WorkerHealth,
    pub limits: Arc<RateLimits>,
    pub auth_cache: Arc<AuthCache>,
    pub config: Config,
    /// Fires when the server stops; long-lived sockets close on it.
    pub shutdown: tokio_util::sync::CancellationToken,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: Arc<AppState>) -> Router {
    let timeout = state.config.request_timeout();
    let body_limit = state.config.http.body_limit_bytes;
    let mut graphql = Router::new()
        .route("/graphql", get(graphql::get).post(graphql::post))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ));
    if let Some(cors) = cors(&state.config.http.cors_allowed_origins) {
        graphql = graphql.layer(cors);
    }
    Router::new()
        .merge(graphql)
        .merge(ui::router(&state.config.http.cors_allowed_origins))
        .route("/graphql/ws", get(ws::upgrade))
        .route(graphiql::ASSETS_ROUTE, get(graphiql::asset))
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

/// Cross-origin access to `/graphql` for the configured origins' pages: the methods and
/// headers a GraphQL client sends, no credentials mode (tokens travel in `Authorization`, never
/// in cookies). `None` without configured origins: browsers then allow same-origin pages only.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origins = origins
        .iter()
        .filter_map(|o| header::HeaderValue::from_str(o).ok());
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .expose_headers([REQUEST_ID, header::RETRY_AFTER])
            .max_age(Duration::from_secs(600)),
    )
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

/// Ready when the database answers within 2 s and no background worker keeps failing (see
/// `workers::supervise`); otherwise 503 saying why, one reason a line.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let mut reasons: Vec<String> = Vec::new();
    if !matches!(
        tokio::time::timeout(Duration::from_secs(2), state.db.ping()).await,
        Ok(Ok(()))
    ) {
        reasons.push("database unreachable".to_owned());
    }
    reasons.extend(state.workers.failing().iter().map(ToString::to_string));
    if reasons.is_empty() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, reasons.join("\n")).into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Attaches what resolvers need to know about this request: the caller and its DataLoaders.
pub fn with_context(
    state: &AppState,
    request: async_graphql::Request,
    principal: Principal,
) -> async_graphql::Request {
    let request = match principal.connections_scope() {
        Ok(scope) => request.data(Loaders::new(
            &state.db,
            scope.account_id,
            state.config.graphql_batch_window(),
        )),
        Err(_) => request,
    };
    request.data(principal)
}
