//! The rate limits at the GraphQL endpoint: the caller's bucket is taken from after
//! authentication and before execution (docs/rate-limits.md), and its state goes out in the
//! `RateLimit-*` headers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use async_graphql::BatchRequest;
use axum::{
    extract::{ConnectInfo, Request},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::Response,
};
use serde_json::json;

use super::{Answer, name_of};
use crate::{
    auth::Principal,
    error::AppError,
    graphql::request_error,
    http::AppState,
    limits::{Allowance, Refused},
    metrics::Caller,
};

/// The TCP peer, whose failed authentications count against one bucket.
pub(super) fn client_address(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip())
}

/// A request that may not run now.
pub(super) enum Refusal {
    /// Over a bucket: 429 with `Retry-After`, and the token's headers if it has a bucket.
    Limited(u64, Option<Allowance>),
    /// A batch larger than the token's whole bucket.
    TooLarge(AppError),
}

impl Refusal {
    pub(super) fn answer(self, answer: Answer) -> Response {
        match self {
            Refusal::Limited(wait, allowance) => too_many(answer, wait, allowance),
            Refusal::TooLarge(err) => {
                answer.reject(StatusCode::BAD_REQUEST, err.code(), &err.to_string())
            }
        }
    }
}

/// Takes the request's operations from the caller's bucket: its token's, or for a caller
/// without a token its address's bucket of failed authentication (the admin is not limited).
pub(super) fn admit(
    state: &AppState,
    principal: &Principal,
    batch: &BatchRequest,
    address: IpAddr,
) -> Result<Option<Allowance>, Refusal> {
    if *principal == Principal::Anonymous {
        return match state.limits.admit_failed_auth(address) {
            Ok(()) => Ok(None),
            Err(wait) => {
                count_refused(state, batch, principal);
                Err(Refusal::Limited(wait, None))
            }
        };
    }
    let operations = u32::try_from(batch.iter().count()).unwrap_or(u32::MAX);
    match state.limits.admit(principal, operations) {
        None => Ok(None),
        Some(Ok(allowance)) => Ok(Some(allowance)),
        Some(Err(refused)) => {
            count_refused(state, batch, principal);
            Err(match refused {
                Refused::Wait {
                    allowance,
                    retry_after_seconds,
                } => Refusal::Limited(retry_after_seconds, Some(allowance)),
                Refused::TooLarge { .. } => Refusal::TooLarge(refused.error()),
            })
        }
    }
}

/// Counts each operation of a request that did not run, under its name if its token is valid.
pub(super) fn count_refused(state: &AppState, batch: &BatchRequest, principal: &Principal) {
    for request in batch.iter() {
        let name = name_of(request);
        state
            .metrics
            .count_refused(Caller::of(principal, name.as_deref()));
    }
}

/// 429 `RATE_LIMITED`, with `Retry-After` and `extensions.retryAfterSeconds`.
pub(super) fn too_many(answer: Answer, wait: u64, allowance: Option<Allowance>) -> Response {
    let error = AppError::RateLimited {
        retry_after_seconds: wait,
    };
    let body = json!({ "errors": [request_error(error)] });
    let mut response = answer.body(StatusCode::TOO_MANY_REQUESTS, &body);
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(wait));
    if let Some(allowance) = allowance {
        rate_limit_headers(headers, allowance);
    }
    response
}

/// The token bucket as the IETF draft's `RateLimit-*` headers describe it.
pub(super) fn rate_limit_headers(headers: &mut HeaderMap, allowance: Allowance) {
    const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
    const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
    const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
    headers.insert(LIMIT, HeaderValue::from(allowance.limit));
    headers.insert(REMAINING, HeaderValue::from(allowance.remaining));
    headers.insert(RESET, HeaderValue::from(allowance.reset_seconds));
}
