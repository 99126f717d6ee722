//! Sending: one claimed delivery becomes one signed POST, within the endpoint's and the
//! process's limits and within its lease, and comes back as a [`Sent`] with its [`Outcome`].

use sea_orm::ActiveEnum as _;
use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use reqwest::{Client, StatusCode, redirect::Policy};
use serde_json::json;
use tokio::sync::mpsc;

use super::{
    claim::Claimed,
    lease::{Capacity, request_window},
};
use crate::{
    crypto::Cipher,
    guard::{self, GuardedResolver},
    ids,
    webhooks::{sign, signing_secrets},
};
use entity::{event, webhook_delivery, webhook_endpoint};

/// The longest a request may take (the total timeout).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_BODY_STORED: usize = 4096;

/// A delivery whose attempt is over, waiting to be recorded.
pub struct Sent {
    pub delivery: webhook_delivery::Model,
    pub attempted_at: DateTime<Utc>,
    pub outcome: Outcome,
}

/// What one attempt came to.
pub enum Outcome {
    /// No request was made: the URL is invalid or private, the secret does not open, or the
    /// event was pruned.
    Refused { reason: String },
    /// The request got no answer: it failed to connect or timed out.
    NoAnswer { error: String, duration_ms: i32 },
    /// The receiver answered.
    Answered {
        status: u16,
        duration_ms: i32,
        /// The first 4 KiB of the response body, if any.
        body: Option<String>,
        /// When the receiver asked to be retried (`Retry-After`).
        retry_after: Option<Duration>,
    },
}

impl Outcome {
    fn refused(reason: &str) -> Self {
        Self::Refused {
            reason: reason.to_owned(),
        }
    }

    pub fn succeeded(&self) -> bool {
        self.status().is_some_and(|s| (200..300).contains(&s))
    }

    /// `410 Gone`: the receiver wants no more deliveries.
    pub fn gone(&self) -> bool {
        self.status() == Some(StatusCode::GONE.as_u16())
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Answered { status, .. } => Some(*status),
            Self::Refused { .. } | Self::NoAnswer { .. } => None,
        }
    }

    pub fn duration_ms(&self) -> i32 {
        match self {
            Self::Refused { .. } => 0,
            Self::NoAnswer { duration_ms, .. } | Self::Answered { duration_ms, .. } => *duration_ms,
        }
    }

    /// Why the attempt failed, as stored with it; `None` for a success.
    pub fn error(&self) -> Option<String> {
        match self {
            Self::Refused { reason } => Some(reason.clone()),
            Self::NoAnswer { error, .. } => Some(error.clone()),
            Self::Answered { status, .. } => (!self.succeeded()).then(|| format!("HTTP {status}")),
        }
    }

    pub fn body(&self) -> Option<String> {
        match self {
            Self::Answered { body, .. } => body.clone(),
            Self::Refused { .. } | Self::NoAnswer { .. } => None,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Answered { retry_after, .. } => *retry_after,
            Self::Refused { .. } | Self::NoAnswer { .. } => None,
        }
    }
}

/// Posts claimed deliveries: one HTTP client for the process, and its capacity, whose
/// permits bound the requests in flight and whose room each sent delivery gives back.
pub struct Sender {
    client: Client,
    cipher: Cipher,
    allow_private: bool,
    capacity: Arc<Capacity>,
}

impl Sender {
    pub fn new(cipher: Cipher, allow_private: bool, capacity: Arc<Capacity>) -> Self {
        let client = Client::builder()
            .redirect(Policy::none())
            // No proxy from the environment (HTTP(S)_PROXY): a proxy would resolve the
            // endpoint's host itself, past the resolver below that refuses private targets.
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("Millwright-Webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .build()
            .expect("HTTP client configuration is valid");
        Self {
            client,
            cipher,
            allow_private,
            capacity,
        }
    }

    /// Sends one claimed delivery when its permits allow, and passes the attempt on to the
    /// recorder. A delivery that waited here for most of its lease is not sent: it is
    /// claimed again when the lease ends.
    pub async fn send(self: Arc<Self>, claimed: Claimed, recorder: mpsc::UnboundedSender<Sent>) {
        let Claimed {
            delivery,
            endpoint,
            event,
            permits,
        } = claimed;
        let (attempted_at, outcome) = {
            // The endpoint's permit first: a task waiting on a busy endpoint holds no overall
            // one.
            // Then the account's: a task waiting behind its account's share holds no
            // overall one either, so that other accounts' requests start at once.
            let (Ok(_endpoint), Ok(_account), Ok(_overall)) = (
                permits.endpoint.acquire().await,
                permits.account.acquire().await,
                self.capacity.overall.acquire().await,
            ) else {
                return;
            };
            let attempted_at = Utc::now();
            let Some(timeout) = request_window(delivery.locked_until, attempted_at) else {
                self.capacity
                    .release(delivery.endpoint_id, delivery.account_id);
                tracing::debug!(delivery.id = %delivery.id, "lease too short to send; left to the next claim");
                return;
            };
            let outcome = match &event {
                Some(event) => self.post(&endpoint, event, timeout).await,
                None => Outcome::refused("the event was pruned before it could be delivered"),
            };
            (attempted_at, outcome)
        };
        // Sent: its lease is no longer at risk, so its room goes to the next claim while the
        // recorder writes the attempt.
        self.capacity
            .release(delivery.endpoint_id, delivery.account_id);
        let _ = recorder.send(Sent {
            delivery,
            attempted_at,
            outcome,
        });
    }

    async fn post(
        &self,
        endpoint: &webhook_endpoint::Model,
        event: &event::Model,
        timeout: Duration,
    ) -> Outcome {
        let url = match guard::parse(&endpoint.url, "url") {
            Ok(url) => url,
            Err(err) => return Outcome::refused(&err.to_string()),
        };
        if guard::refused_literal(&url, self.allow_private) {
            return Outcome::refused("the URL points to a non-public address");
        }
        let secrets = match signing_secrets(&self.cipher, endpoint) {
            Ok(secrets) => secrets,
            Err(err) => return Outcome::refused(&err.to_string()),
        };
        let (id, body) = payload(event);
        let timestamp = Utc::now().timestamp();
        let started = std::time::Instant::now();
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                sign::signature(&secrets, &id, timestamp, &body),
            )
            .body(body)
            .timeout(timeout)
            .send()
            .await;
        outcome(sent, started).await
    }
}

/// The webhook body and its id (the event's id, stable across retries).
pub fn payload(event: &event::Model) -> (String, Vec<u8>) {
    let id = ids::encode(ids::Kind::Event, event.id);
    let body = json!({
        "id": id,
        "type": event.event_type.to_value(),
        "timestamp": event.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "account_id": ids::encode(ids::Kind::Account, event.account_id),
        "customer_id": event.customer_id.map(|c| ids::encode(ids::Kind::Customer, c)),
        "connection_id": event.connection_id.map(|c| ids::encode(ids::Kind::Connection, c)),
        "data": event.data,
    });
    (id, serde_json::to_vec(&body).expect("JSON serializes"))
}

async fn outcome(sent: reqwest::Result<reqwest::Response>, started: std::time::Instant) -> Outcome {
    let elapsed =
        |started: std::time::Instant| started.elapsed().as_millis().min(i32::MAX as u128) as i32;
    let response = match sent {
        Ok(response) => response,
        Err(err) => {
            let error = if err.is_timeout() {
                "timed out".to_owned()
            } else {
                error_chain(&err)
            };
            return Outcome::NoAnswer {
                error,
                duration_ms: elapsed(started),
            };
        }
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
    let body = read_prefix(response).await;
    Outcome::Answered {
        status,
        duration_ms: elapsed(started),
        body,
        retry_after,
    }
}

/// `Retry-After` as delay-seconds or as an HTTP date (RFC 9110); a date in the past is no
/// delay.
fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// The first 4 KiB of a response body, without reading the rest.
async fn read_prefix(mut response: reqwest::Response) -> Option<String> {
    let mut body = Vec::new();
    while body.len() < MAX_BODY_STORED {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(MAX_BODY_STORED);
    (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned())
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::{Outcome, parse_retry_after};

    #[test]
    fn retry_after_is_read_as_seconds_or_as_a_date() {
        // Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example.
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 09:49:37 GMT", now),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 07:49:37 GMT", now),
            Some(Duration::ZERO),
            "a date in the past"
        );
        for bad in ["", "-5", "soon", "1.5", "Sun, 06 Nov 1994"] {
            assert_eq!(parse_retry_after(bad, SystemTime::now()), None, "{bad:?}");
        }
    }

    fn answered(status: u16) -> Outcome {
        Outcome::Answered {
            status,
            duration_ms: 12,
            body: Some("ok".into()),
            retry_after: None,
        }
    }

    #[test]
    fn an_outcome_is_stored_with_the_error_a_user_reads() {
        let ok = answered(204);
        assert!(ok.succeeded());
        assert_eq!((ok.status(), ok.error()), (Some(204), None));
        let busy = answered(503);
        assert!(!busy.succeeded() && !busy.gone());
        assert_eq!(busy.error().as_deref(), Some("HTTP 503"));
        assert_eq!(busy.body().as_deref(), Some("ok"));
        assert!(answered(410).gone());
        let timed_out = Outcome::NoAnswer {
            error: "timed out".into(),
            duration_ms: 15_000,
        };
        assert_eq!(timed_out.status(), None);
        assert_eq!(timed_out.duration_ms(), 15_000);
        assert_eq!(timed_out.error().as_deref(), Some("timed out"));
        let refused = Outcome::refused("the URL points to a non-public address");
        assert!(!refused.succeeded() && !refused.gone());
        assert_eq!((refused.duration_ms(), refused.body()), (0, None));
        assert_eq!(
            refused.error().as_deref(),
            Some("the URL points to a non-public address")
        );
    }
}
