//! Delivery workers: claim a due delivery (under a lease, at most a few in flight per
//! endpoint), prepare the signed request, send it, record the attempt, and reschedule or
//! finish the delivery. A process killed mid-delivery leaves the lease to expire and the
//! delivery is sent again, with the same `webhook-id`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use chrono::Utc;
use rand::Rng;
use reqwest::{
    Client, StatusCode,
    dns::{Name, Resolve, Resolving},
    redirect::Policy,
};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ConnectionTrait, DbBackend, EntityTrait, Statement,
};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{DeliveryStatus, sign, signing_secrets, target};
use crate::{
    crypto::Cipher,
    db::Db,
    error::{AppError, AppResult},
    events::{self, EventType, NewEvent},
    ids::{self, new_id},
};
use entity::{event, webhook_attempt, webhook_delivery, webhook_endpoint};

const MAX_BODY_STORED: usize = 4096;
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
const IDLE_POLL: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct DeliverySettings {
    /// Seconds before each retry after the first attempt.
    pub schedule: Vec<u64>,
    pub allow_private: bool,
    /// Continuous failure for this long disables the endpoint.
    pub disable_after: Duration,
    pub per_endpoint: usize,
    pub concurrency: usize,
    /// Longer than a request may take (15 s).
    pub lease: Duration,
}

#[derive(Clone)]
pub struct DeliveryWorkers {
    pub db: Db,
    pub cipher: Cipher,
    pub settings: DeliverySettings,
    pub wake: Arc<Notify>,
    client: Client,
}

/// Resolves host names for webhook requests, refusing non-public addresses at connect time,
/// so a name that changes its answer after the check cannot reach an internal address.
struct CheckedResolver {
    allow_private: bool,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if !allow_private && addrs.iter().any(|a| !target::is_public(a.ip())) {
                return Err(format!("{} resolves to a non-public address", name.as_str()).into());
            }
            Ok(Box::new(addrs.into_iter()) as Box<dyn Iterator<Item = SocketAddr> + Send>)
        })
    }
}

impl DeliveryWorkers {
    pub fn new(db: Db, cipher: Cipher, settings: DeliverySettings, wake: Arc<Notify>) -> Self {
        let client = Client::builder()
            .redirect(Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("Millwright-Webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(CheckedResolver {
                allow_private: settings.allow_private,
            }))
            .build()
            .expect("HTTP client configuration is valid");
        Self {
            db,
            cipher,
            settings,
            wake,
            client,
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut set = tokio::task::JoinSet::new();
        for n in 0..self.settings.concurrency.max(1) {
            set.spawn(self.clone().work(
                format!("webhook-{}-{n}", std::process::id()),
                shutdown.clone(),
            ));
        }
        while set.join_next().await.is_some() {}
    }

    async fn work(self, name: String, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            match self.claim(&name).await {
                Ok(Some(delivery)) => {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        result = self.deliver(delivery) => if let Err(err) = result {
                            tracing::error!(error = %err, "webhook delivery failed unexpectedly");
                        }
                    }
                }
                Ok(None) => tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                },
                Err(err) => {
                    tracing::error!(error = %err, "claiming a webhook delivery failed");
                    tokio::time::sleep(IDLE_POLL).await;
                }
            }
        }
    }

    async fn claim(&self, worker: &str) -> AppResult<Option<webhook_delivery::Model>> {
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(self.settings.lease).unwrap_or_default();
        let backend = self.db.conn().get_database_backend();
        let sql = match backend {
            DbBackend::Postgres => POSTGRES_CLAIM,
            _ => SQLITE_CLAIM,
        };
        let per_endpoint = self.settings.per_endpoint as i64;
        let statement = Statement::from_sql_and_values(
            backend,
            sql,
            [
                worker.into(),
                until.into(),
                now.into(),
                now.into(),
                now.into(),
                per_endpoint.into(),
            ],
        );
        let txn = self.db.begin_write().await?;
        let claimed = webhook_delivery::Entity::find()
            .from_raw_sql(statement)
            .one(&*txn)
            .await?;
        txn.commit().await?;
        Ok(claimed)
    }

    /// Prepare, send, record, reschedule.
    async fn deliver(&self, delivery: webhook_delivery::Model) -> AppResult<()> {
        let Some(endpoint) = webhook_endpoint::Entity::find_by_id(delivery.endpoint_id)
            .one(self.db.conn())
            .await?
        else {
            return Ok(());
        };
        let event = event::Entity::find_by_id(delivery.event_position)
            .one(self.db.conn())
            .await?;
        let outcome = match event {
            Some(event) => self.send(&endpoint, &event).await,
            None => Attempt::refused("the event was pruned before it could be delivered"),
        };
        self.record(delivery, endpoint, outcome).await
    }

    async fn send(&self, endpoint: &webhook_endpoint::Model, event: &event::Model) -> Attempt {
        let url = match target::parse(&endpoint.url) {
            Ok(url) => url,
            Err(err) => return Attempt::refused(&err.to_string()),
        };
        // An IP literal does not pass through the resolver: check it here.
        if let Some(ip) = url
            .host_str()
            .and_then(|h| h.trim_matches(['[', ']']).parse().ok())
            && !self.settings.allow_private
            && !target::is_public(ip)
        {
            return Attempt::refused("the URL points to a non-public address");
        }
        let secrets = match signing_secrets(&self.cipher, endpoint) {
            Ok(secrets) => secrets,
            Err(err) => return Attempt::refused(&err.to_string()),
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
            .send()
            .await;
        Attempt::from_response(sent, started).await
    }

    async fn record(
        &self,
        delivery: webhook_delivery::Model,
        endpoint: webhook_endpoint::Model,
        attempt: Attempt,
    ) -> AppResult<()> {
        let txn = self.db.begin_write().await?;
        webhook_attempt::ActiveModel {
            id: Set(new_id()),
            delivery_id: Set(delivery.id),
            attempted_at: Set(Utc::now()),
            response_status: Set(attempt.status.map(i32::from)),
            duration_ms: Set(attempt.duration_ms),
            error: Set(attempt.error.clone()),
            response_body: Set(attempt.body.clone()),
        }
        .insert(&*txn)
        .await?;
        let attempts = delivery.attempt_count + 1;
        let mut active: webhook_delivery::ActiveModel = delivery.into();
        active.attempt_count = Set(attempts);
        active.locked_by = Set(None);
        active.locked_until = Set(None);
        let (status, next) = if attempt.succeeded() {
            mark_endpoint_healthy(&*txn, &endpoint).await?;
            (DeliveryStatus::Succeeded, None)
        } else if attempt.status == Some(StatusCode::GONE.as_u16()) {
            disable(&*txn, endpoint, "the endpoint answered 410 Gone").await?;
            (DeliveryStatus::Failed, None)
        } else {
            self.note_failure(&*txn, endpoint).await?;
            match self.retry_delay(attempts as usize, attempt.retry_after) {
                Some(delay) => (DeliveryStatus::Pending, Some(Utc::now() + delay)),
                None => (DeliveryStatus::Exhausted, None),
            }
        };
        active.status = Set(status.as_str().to_owned());
        active.next_attempt_at = Set(next);
        active.update(&*txn).await?;
        txn.commit().await?;
        if next.is_some() {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// The wait before the next attempt: the schedule with ±20 % jitter, or the receiver's
    /// `Retry-After` when it asks for longer; `None` once the schedule is used up.
    fn retry_delay(
        &self,
        attempts: usize,
        retry_after: Option<Duration>,
    ) -> Option<chrono::Duration> {
        let scheduled = *self.settings.schedule.get(attempts - 1)?;
        let jitter = rand::rng().random_range(0.8..1.2);
        let delay = Duration::from_secs_f64(scheduled as f64 * jitter);
        let delay = retry_after.map_or(delay, |asked| asked.min(MAX_RETRY_AFTER).max(delay));
        chrono::Duration::from_std(delay).ok()
    }

    async fn note_failure(
        &self,
        txn: &impl ConnectionTrait,
        endpoint: webhook_endpoint::Model,
    ) -> AppResult<()> {
        let now = Utc::now();
        let since = endpoint.failing_since.unwrap_or(now);
        if (now - since).to_std().unwrap_or_default() >= self.settings.disable_after {
            return disable(
                txn,
                endpoint,
                "deliveries kept failing for the configured window",
            )
            .await;
        }
        if endpoint.failing_since.is_none() {
            let mut active: webhook_endpoint::ActiveModel = endpoint.into();
            active.failing_since = Set(Some(now));
            active.update(txn).await?;
        }
        Ok(())
    }
}

async fn mark_endpoint_healthy(
    txn: &impl ConnectionTrait,
    endpoint: &webhook_endpoint::Model,
) -> AppResult<()> {
    if endpoint.failing_since.is_some() {
        let mut active: webhook_endpoint::ActiveModel = endpoint.clone().into();
        active.failing_since = Set(None);
        active.update(txn).await?;
    }
    Ok(())
}

/// Disables an endpoint and stores `webhook_endpoint.disabled`.
async fn disable(
    txn: &impl ConnectionTrait,
    endpoint: webhook_endpoint::Model,
    reason: &str,
) -> AppResult<()> {
    if !endpoint.enabled {
        return Ok(());
    }
    let (account_id, id) = (endpoint.account_id, endpoint.id);
    let mut active: webhook_endpoint::ActiveModel = endpoint.into();
    active.enabled = Set(false);
    active.disabled_reason = Set(Some(reason.to_owned()));
    active.update(txn).await?;
    let event = NewEvent {
        account_id,
        customer_id: None,
        connection_id: None,
        event_type: EventType::WebhookEndpointDisabled,
        data: json!({ "endpoint_id": ids::encode(ids::Kind::WebhookEndpoint, id), "reason": reason }),
    };
    events::record(txn, vec![event]).await?;
    tracing::warn!(endpoint.id = %id, reason, "webhook endpoint disabled");
    Ok(())
}

/// The webhook body and its id (the event's id, stable across retries).
pub fn payload(event: &event::Model) -> (String, Vec<u8>) {
    let id = ids::encode(ids::Kind::Event, event.id);
    let body = json!({
        "id": id,
        "type": event.event_type,
        "timestamp": event.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "account_id": ids::encode(ids::Kind::Account, event.account_id),
        "customer_id": event.customer_id.map(|c| ids::encode(ids::Kind::Customer, c)),
        "connection_id": event.connection_id.map(|c| ids::encode(ids::Kind::Connection, c)),
        "data": event.data,
    });
    (id, serde_json::to_vec(&body).expect("JSON serializes"))
}

/// What one attempt came back with.
struct Attempt {
    status: Option<u16>,
    duration_ms: i32,
    error: Option<String>,
    body: Option<String>,
    retry_after: Option<Duration>,
}

impl Attempt {
    fn refused(why: &str) -> Self {
        Self {
            status: None,
            duration_ms: 0,
            error: Some(why.to_owned()),
            body: None,
            retry_after: None,
        }
    }

    fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    async fn from_response(
        sent: reqwest::Result<reqwest::Response>,
        started: std::time::Instant,
    ) -> Self {
        let elapsed = |started: std::time::Instant| {
            started.elapsed().as_millis().min(i32::MAX as u128) as i32
        };
        let response = match sent {
            Ok(response) => response,
            Err(err) => {
                let why = if err.is_timeout() {
                    "timed out".to_owned()
                } else {
                    error_chain(&err)
                };
                return Self {
                    status: None,
                    duration_ms: elapsed(started),
                    error: Some(why),
                    body: None,
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = read_prefix(response).await;
        let error = (!status.is_success()).then(|| format!("HTTP {}", status.as_u16()));
        Self {
            status: Some(status.as_u16()),
            duration_ms: elapsed(started),
            error,
            body,
            retry_after,
        }
    }
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

impl From<AppError> for Attempt {
    fn from(err: AppError) -> Self {
        Attempt::refused(&err.to_string())
    }
}

const SQLITE_CLAIM: &str = "UPDATE webhook_deliveries SET locked_by = ?, locked_until = ? \
    WHERE id = (SELECT d.id FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
    WHERE d.status = 'PENDING' AND d.next_attempt_at <= ? AND (d.locked_until IS NULL OR d.locked_until < ?) \
    AND e.enabled AND (SELECT COUNT(*) FROM webhook_deliveries x WHERE x.endpoint_id = d.endpoint_id \
    AND x.status = 'PENDING' AND x.locked_until > ?) < ? ORDER BY d.next_attempt_at LIMIT 1) RETURNING *";

const POSTGRES_CLAIM: &str = "UPDATE webhook_deliveries SET locked_by = $1, locked_until = $2 \
    WHERE id = (SELECT d.id FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
    WHERE d.status = 'PENDING' AND d.next_attempt_at <= $3 AND (d.locked_until IS NULL OR d.locked_until < $4) \
    AND e.enabled AND (SELECT COUNT(*) FROM webhook_deliveries x WHERE x.endpoint_id = d.endpoint_id \
    AND x.status = 'PENDING' AND x.locked_until > $5) < $6 ORDER BY d.next_attempt_at LIMIT 1 \
    FOR UPDATE OF d SKIP LOCKED) RETURNING *";
