//! The GraphQL endpoint, `/graphql`: requests read by async-graphql-axum's extractor, the
//! media type chosen from `Accept`, and the statuses of the GraphQL-over-HTTP specification
//! (docs/edge.md).

use async_graphql::{
    BatchRequest, BatchResponse, ParseRequestError,
    parser::types::{DocumentOperations, OperationType},
};
use async_graphql_axum::GraphQLBatchRequest;
use axum::{
    RequestExt,
    extract::{FromRequest, Query, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;
use std::sync::Arc;

mod limits;

use limits::{admit, client_address, count_refused, rate_limit_headers, too_many};

use super::{AppState, with_context};
use crate::{
    auth::{self, Principal},
    error::AppError,
    graphql::{admission, normalize, price},
    metrics::Caller,
};

/// The media type of an answer, chosen from the request's `Accept` header as the
/// GraphQL-over-HTTP specification describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// `application/json`: every GraphQL result is HTTP 200, as for clients older than the
    /// specification.
    Json,
    /// `application/graphql-response+json`: a request that could not run (parse, validation
    /// or variable errors) is HTTP 400 and has no `data` entry.
    GraphqlResponse,
}

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

impl Answer {
    /// The acceptable type of highest quality (the first listed on a tie); `application/json`
    /// when there is no `Accept` header or it names nothing we serve.
    fn negotiate(headers: &HeaderMap) -> Self {
        let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
            return Answer::Json;
        };
        let mut best: Option<(f32, Answer)> = None;
        for entry in accept.split(',') {
            let mut parts = entry.split(';');
            let range = parts.next().unwrap_or_default().trim();
            let answer = if range.eq_ignore_ascii_case(GRAPHQL_RESPONSE_JSON) {
                Answer::GraphqlResponse
            } else if ["application/json", "application/*", "*/*"]
                .iter()
                .any(|r| range.eq_ignore_ascii_case(r))
            {
                Answer::Json
            } else {
                continue;
            };
            let quality = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if quality > 0.0 && best.is_none_or(|(b, _)| quality > b) {
                best = Some((quality, answer));
            }
        }
        best.map_or(Answer::Json, |(_, answer)| answer)
    }

    fn content_type(self) -> &'static str {
        match self {
            Answer::Json => "application/json",
            Answer::GraphqlResponse => GRAPHQL_RESPONSE_JSON,
        }
    }

    fn body(self, status: StatusCode, body: &impl serde::Serialize) -> Response {
        match serde_json::to_vec(body) {
            Ok(bytes) => {
                (status, [(header::CONTENT_TYPE, self.content_type())], bytes).into_response()
            }
            Err(err) => {
                tracing::error!(error = %err, "serializing a GraphQL response failed");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }

    /// A GraphQL-shaped error body for requests rejected before execution.
    fn reject(self, status: StatusCode, code: &str, message: &str) -> Response {
        let body = json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
        self.body(status, &body)
    }

    fn respond(self, response: BatchResponse) -> Response {
        match (self, response) {
            (Answer::GraphqlResponse, BatchResponse::Single(single))
                if is_request_error(&single) =>
            {
                self.body(StatusCode::BAD_REQUEST, &without_data(&single))
            }
            (Answer::GraphqlResponse, BatchResponse::Batch(items)) => {
                let items: Vec<serde_json::Value> = items
                    .iter()
                    .map(|item| {
                        if is_request_error(item) {
                            without_data(item)
                        } else {
                            json!(item)
                        }
                    })
                    .collect();
                self.body(StatusCode::OK, &items)
            }
            (_, response) => self.body(StatusCode::OK, &response),
        }
    }
}

/// A result that never started executing: no data, and errors that belong to no field
/// (document parsing, validation, limits, variable coercion).
fn is_request_error(response: &async_graphql::Response) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

/// A request error as `application/graphql-response+json` has it: no `data` entry at all.
fn without_data(response: &async_graphql::Response) -> serde_json::Value {
    let mut body = json!({ "errors": response.errors });
    if !response.extensions.is_empty() {
        body["extensions"] = json!(response.extensions);
    }
    body
}

/// Why the body could not be read as a GraphQL request: too large, or not one.
struct Unreadable(ParseRequestError);

impl From<ParseRequestError> for Unreadable {
    fn from(err: ParseRequestError) -> Self {
        Unreadable(err)
    }
}

impl Unreadable {
    fn too_large(&self) -> bool {
        match &self.0 {
            ParseRequestError::PayloadTooLarge => true,
            // The extractor reads the body as a stream; the body limit surfaces as its error.
            ParseRequestError::Io(err) => err.to_string().contains("length limit exceeded"),
            _ => false,
        }
    }

    fn answer(&self, answer: Answer, body_limit: Option<usize>) -> Response {
        if self.too_large() {
            let message = match body_limit {
                Some(limit) => format!("the body is larger than {limit} bytes"),
                None => "the body is too large".to_owned(),
            };
            return answer.reject(StatusCode::PAYLOAD_TOO_LARGE, "BAD_USER_INPUT", &message);
        }
        let message = format!("not a GraphQL request: {}", self.0);
        answer.reject(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", &message)
    }
}

impl IntoResponse for Unreadable {
    fn into_response(self) -> Response {
        self.answer(Answer::Json, None)
    }
}

/// `GET /graphql`: an operation when the URL carries a `query` parameter, GraphiQL otherwise.
pub(super) async fn get(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let has_query = request.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|pair| pair.split('=').next() == Some("query"))
    });
    if !has_query {
        return super::graphiql::page();
    }
    graphql(&state, request).await
}

pub(super) async fn post(State(state): State<Arc<AppState>>, request: Request) -> Response {
    graphql(&state, request).await
}

/// POST bodies are JSON; anything else (a missing type included) is refused before reading.
fn unsupported_content_type(headers: &HeaderMap) -> Option<&'static str> {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    match essence.as_deref() {
        Some("application/json") => None,
        Some(t) if t.starts_with("multipart/") => Some(
            "multipart requests are not accepted: the API takes no file uploads; send application/json",
        ),
        _ => Some("send the GraphQL request as application/json"),
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetParameters {
    operation_name: Option<String>,
}

/// A `query` that cannot be a GraphQL document, or a batch of the wrong size.
fn invalid_batch(batch: &BatchRequest, max_batch: usize) -> Option<String> {
    if let BatchRequest::Batch(items) = batch
        && items.len() > max_batch
    {
        return Some(format!("a batch holds 1 to {max_batch} operations"));
    }
    batch
        .iter()
        .any(|request| request.query.is_empty())
        .then(|| "not a GraphQL request: `query` must be a non-empty string".to_owned())
}

/// Whether a GET asks for a mutation, which only POST may run (the document is parsed here
/// once and kept on the request for execution).
fn mutation_over_get(request: &mut async_graphql::Request) -> bool {
    let name = request.operation_name.clone();
    let Ok(document) = request.parsed_query() else {
        return false;
    };
    let operation = match (&document.operations, name) {
        (DocumentOperations::Single(operation), _) => Some(operation),
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name.as_str()),
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next()
        }
        (DocumentOperations::Multiple(_), None) => None,
    };
    operation.is_some_and(|o| o.node.ty == OperationType::Mutation)
}

async fn graphql(state: &AppState, request: Request) -> Response {
    let answer = Answer::negotiate(request.headers());
    let is_get = request.method() == Method::GET;
    if !is_get && let Some(message) = unsupported_content_type(request.headers()) {
        return answer.reject(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "BAD_USER_INPUT",
            message,
        );
    }
    // async-graphql 7.2 reads a GET's operation name from `operation_name`; the
    // specification names the parameter `operationName`.
    let get_operation = is_get
        .then(|| Query::<GetParameters>::try_from_uri(request.uri()).ok())
        .flatten()
        .and_then(|Query(p)| p.operation_name);
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}").to_owned());
    let address = client_address(&request);
    let extracted =
        GraphQLBatchRequest::<Unreadable>::from_request(request.with_limited_body(), &()).await;
    let mut batch = match extracted {
        Ok(batch) => batch.into_inner(),
        Err(unreadable) => {
            return unreadable.answer(answer, Some(state.config.http.body_limit_bytes));
        }
    };
    if let (Some(name), BatchRequest::Single(single)) = (get_operation, &mut batch) {
        single.operation_name = Some(name);
    }
    if let Some(message) = invalid_batch(&batch, state.config.http.max_batch_size) {
        return answer.reject(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", &message);
    }
    if is_get && batch.iter_mut().any(mutation_over_get) {
        let mut response = answer.reject(
            StatusCode::METHOD_NOT_ALLOWED,
            "BAD_USER_INPUT",
            "mutations run over POST only",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let principal = match auth::authenticate(
        &state.db,
        &state.auth_cache,
        state.config.security.admin_token.as_ref(),
        authorization.as_deref(),
    )
    .await
    {
        Ok(principal) => principal,
        Err(AppError::Unauthenticated(message)) => {
            count_refused(state, &batch, &Principal::Anonymous);
            if let Err(wait) = state.limits.admit_failed_auth(address) {
                return too_many(answer, wait, None);
            }
            return answer.reject(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", &message);
        }
        Err(err) => {
            tracing::error!(error = %format!("{:#}", anyhow::Error::from(err)), "authentication failed");
            return answer.reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "INTERNAL",
                "internal error",
            );
        }
    };
    let allowance = match admit(state, &principal, &batch, address) {
        Ok(allowance) => allowance,
        Err(refusal) => return refusal.answer(answer),
    };
    let response = match batch {
        BatchRequest::Single(request) => {
            BatchResponse::Single(execute(state, request, principal).await)
        }
        BatchRequest::Batch(requests) => {
            let mut responses = Vec::with_capacity(requests.len());
            for request in requests {
                responses.push(execute(state, request, principal.clone()).await);
            }
            BatchResponse::Batch(responses)
        }
    };
    let mut response = answer.respond(response);
    if let Some(allowance) = allowance {
        rate_limit_headers(response.headers_mut(), allowance);
    }
    response
}

/// Runs one operation, gives its errors their codes and records its metrics.
async fn execute(
    state: &AppState,
    mut request: async_graphql::Request,
    principal: Principal,
) -> async_graphql::Response {
    let operation = name_of(&request);
    let caller = Caller::of(&principal, operation.as_deref());
    let started = std::time::Instant::now();
    let price = price(&mut request, &state.config.http);
    let response = match price.refusal() {
        Some(refusal) => refusal,
        None => price.report(normalize(match admission::check(&mut request) {
            Err(refusal) => async_graphql::Response::from_errors(vec![refusal]),
            Ok(()) => {
                state
                    .schema
                    .execute(with_context(state, request, principal))
                    .await
            }
        })),
    };
    let seconds = started.elapsed().as_secs_f64();
    state
        .metrics
        .observe_graphql(caller, response.errors.is_empty(), seconds);
    response
}

/// The operation's name for metrics: given, or the first one in the document.
fn name_of(request: &async_graphql::Request) -> Option<String> {
    request
        .operation_name
        .clone()
        .or_else(|| operation_name(&request.query).map(str::to_owned))
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
