//! Delivery: a claimer takes due deliveries in batches under a lease, senders post them, and
//! a recorder (`record.rs`) writes the attempts in batches.
//!
//! Limits: at most `per_endpoint` requests in flight per endpoint and `concurrency` overall.
//! Across processes an endpoint is served by one process at a time: a process claims an
//! endpoint's deliveries only while no other process holds a lease on any of them. Each
//! process keeps at most `lease ÷ 15 s` rounds of requests claimed ahead, so a claimed
//! delivery is sent before its lease runs out even when every request takes the full 15 s
//! timeout. A process killed mid-delivery leaves its leases to expire and those deliveries
//! are sent again, with the same `webhook-id`; one that shuts down releases them at once.

use sea_orm::ActiveEnum as _;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use rand::seq::SliceRandom;
use reqwest::{Client, redirect::Policy};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QuerySelect,
    sea_query::{LockBehavior, LockType},
};
use serde_json::json;
use tokio::{
    sync::{Notify, Semaphore, mpsc},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    LINGER,
    record::{self, Finished},
    sign, signing_secrets,
};
use crate::{
    crypto::Cipher,
    db,
    db::Db,
    error::AppResult,
    guard::{self, GuardedResolver},
    ids,
};
use entity::{event, webhook_delivery, webhook_endpoint};

const MAX_BODY_STORED: usize = 4096;
const IDLE_POLL: Duration = Duration::from_millis(500);
/// The longest a request may take (the total timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Finished attempts written per transaction, at most.
const RECORD_BATCH: usize = 512;
/// Tries to write one batch before leaving its deliveries to their leases.
const RECORD_TRIES: u32 = 5;
/// Time kept between a request's end and its lease's (clocks, the recorder's pick-up).
const LEASE_MARGIN: Duration = Duration::from_millis(500);
/// A claimed job with less of its lease left than this (after the margin) is not sent.
const MIN_REQUEST_TIME: Duration = Duration::from_secs(1);
/// Endpoints one dispatch batch leases first attempts for (see `Handoff::reserve`).
const RESERVED_ENDPOINTS: usize = 1000;

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

impl DeliverySettings {
    /// Rounds of requests claimed ahead: all of them can time out within one lease.
    fn rounds_ahead(&self) -> usize {
        (self.lease.as_secs() / REQUEST_TIMEOUT.as_secs()).max(1) as usize
    }
}

pub struct DeliveryWorkers {
    pub db: Db,
    pub cipher: Cipher,
    pub settings: DeliverySettings,
    pub wake: Arc<Notify>,
    client: Client,
    /// This process's name on its leases.
    worker: String,
    local: Arc<Local>,
    /// Deliveries the dispatcher created already leased to this process.
    handed: Option<mpsc::UnboundedReceiver<Vec<Job>>>,
    hand_over: mpsc::UnboundedSender<Vec<Job>>,
}

/// Lets the dispatcher create first attempts already leased to this process's senders, in
/// its own transaction, and hand them over: no claim (and no write) per new delivery.
pub struct Handoff {
    worker: String,
    local: Arc<Local>,
    lease: Duration,
    jobs: mpsc::UnboundedSender<Vec<Job>>,
}

/// Room taken for new deliveries; given back unless they are handed over.
pub struct Reservation<'a> {
    handoff: &'a Handoff,
    /// Per endpoint: how many of its new deliveries to lease, and its permits.
    room: HashMap<Uuid, (usize, Arc<Semaphore>)>,
    locked_until: chrono::DateTime<Utc>,
}

impl Handoff {
    /// Takes room for new deliveries of these endpoints (with how many each gets), within
    /// the dispatcher's write transaction. An endpoint gets none when another process
    /// serves it, or when it has due deliveries waiting unleased (those go first, through
    /// the claimer). On PostgreSQL the endpoint rows are locked as the claimer locks them.
    pub async fn reserve(
        &self,
        txn: &impl ConnectionTrait,
        wanted: &[(Uuid, usize)],
    ) -> AppResult<Reservation<'_>> {
        let now = Utc::now();
        let mut reservation = Reservation {
            handoff: self,
            room: HashMap::new(),
            locked_until: now + chrono::Duration::from_std(self.lease).unwrap_or_default(),
        };
        // At most RESERVED_ENDPOINTS endpoints a batch (one bound value each): the others'
        // new deliveries are created unleased and go through the claimer, as any backlog.
        let candidates: Vec<Uuid> = wanted
            .iter()
            .filter(|(id, n)| *n > 0 && self.local.room(*id) > 0)
            .map(|(id, _)| *id)
            .take(RESERVED_ENDPOINTS)
            .collect();
        if candidates.is_empty() {
            return Ok(reservation);
        }
        let backend = txn.get_database_backend();
        let mut sql = format!(
            "SELECT e.id FROM webhook_endpoints e WHERE e.id IN ({}) AND {FREE}",
            vec!["?"; candidates.len()].join(", ")
        );
        if backend == DbBackend::Postgres {
            sql.push_str(" FOR NO KEY UPDATE SKIP LOCKED");
        }
        let mut values: Vec<sea_orm::Value> = candidates.iter().map(|id| (*id).into()).collect();
        values.extend([
            now.into(),
            now.into(),
            now.into(),
            self.worker.clone().into(),
        ]);
        let free: std::collections::HashSet<Uuid> = txn
            .query_all_raw(db::statement(backend, &sql, values))
            .await?
            .iter()
            .map(|row| row.try_get_by_index::<Uuid>(0))
            .collect::<Result<_, _>>()?;
        for (id, n) in wanted {
            if !free.contains(id) {
                continue;
            }
            let n = (*n).min(self.local.room(*id));
            if n > 0 {
                let permits = self.local.take(*id, n);
                reservation.room.insert(*id, (n, permits));
            }
        }
        Ok(reservation)
    }
}

impl Reservation<'_> {
    /// How many new deliveries of this endpoint to create leased.
    pub fn leased(&self, endpoint: Uuid) -> usize {
        self.room.get(&endpoint).map_or(0, |(n, _)| *n)
    }

    /// `(locked_by, locked_until)` of the leased deliveries.
    pub fn lease(&self) -> (String, chrono::DateTime<Utc>) {
        (self.handoff.worker.clone(), self.locked_until)
    }

    /// After the commit: the leased deliveries go to the senders.
    pub fn hand_over(
        mut self,
        leased: Vec<(
            webhook_delivery::Model,
            Arc<webhook_endpoint::Model>,
            Arc<event::Model>,
        )>,
    ) {
        let mut jobs = Vec::with_capacity(leased.len());
        for (delivery, endpoint, event) in leased {
            let Some((n, permits)) = self.room.get_mut(&endpoint.id) else {
                continue;
            };
            if *n == 0 {
                continue;
            }
            *n -= 1;
            jobs.push(Job {
                permits: permits.clone(),
                endpoint,
                event: Some(event),
                delivery,
            });
        }
        // Jobs the senders are gone for stay leased to this process: `run` releases its
        // leases at shutdown, and a lease that outlives it expires.
        let _ = self.handoff.jobs.send(jobs);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        for (endpoint, (n, _)) in self.room.drain() {
            if n > 0 {
                self.handoff.local.give_back(endpoint, n);
            }
        }
    }
}

/// This process's claimed deliveries: how many per endpoint are claimed and not yet sent,
/// and the permits that bound the requests in flight.
struct Local {
    slots: Mutex<Slots>,
    overall: Arc<Semaphore>,
    /// Signalled when sent deliveries free room for more claims.
    freed: Notify,
    per_endpoint: usize,
    endpoint_depth: usize,
    total_depth: usize,
}

#[derive(Default)]
struct Slots {
    endpoints: HashMap<Uuid, Slot>,
    outstanding: usize,
}

struct Slot {
    permits: Arc<Semaphore>,
    outstanding: usize,
}

impl Local {
    fn new(settings: &DeliverySettings) -> Self {
        let (per_endpoint, overall) = (settings.per_endpoint.max(1), settings.concurrency.max(1));
        Self {
            slots: Mutex::default(),
            overall: Arc::new(Semaphore::new(overall)),
            freed: Notify::new(),
            per_endpoint,
            endpoint_depth: per_endpoint * settings.rounds_ahead(),
            total_depth: overall * settings.rounds_ahead(),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many more deliveries of this endpoint may be claimed now.
    fn room(&self, endpoint: Uuid) -> usize {
        let slots = self.slots();
        let taken = slots.endpoints.get(&endpoint).map_or(0, |s| s.outstanding);
        self.endpoint_depth
            .saturating_sub(taken)
            .min(self.total_depth.saturating_sub(slots.outstanding))
    }

    /// How many more deliveries this process may claim now, over all endpoints.
    fn total_room(&self) -> usize {
        self.total_depth.saturating_sub(self.slots().outstanding)
    }

    fn take(&self, endpoint: Uuid, n: usize) -> Arc<Semaphore> {
        let mut slots = self.slots();
        slots.outstanding += n;
        let slot = slots.endpoints.entry(endpoint).or_insert_with(|| Slot {
            permits: Arc::new(Semaphore::new(self.per_endpoint)),
            outstanding: 0,
        });
        slot.outstanding += n;
        slot.permits.clone()
    }

    fn release(&self, endpoint: Uuid) {
        self.give_back(endpoint, 1);
    }

    /// Frees room taken for `n` deliveries of an endpoint.
    fn give_back(&self, endpoint: Uuid, n: usize) {
        let mut slots = self.slots();
        slots.outstanding = slots.outstanding.saturating_sub(n);
        if let Some(slot) = slots.endpoints.get_mut(&endpoint) {
            slot.outstanding = slot.outstanding.saturating_sub(n);
            if slot.outstanding == 0 {
                slots.endpoints.remove(&endpoint);
            }
        }
        drop(slots);
        self.freed.notify_one();
    }
}

/// One claimed delivery, ready to send.
struct Job {
    delivery: webhook_delivery::Model,
    endpoint: Arc<webhook_endpoint::Model>,
    event: Option<Arc<event::Model>>,
    permits: Arc<Semaphore>,
}

impl DeliveryWorkers {
    pub fn new(db: Db, cipher: Cipher, settings: DeliverySettings, wake: Arc<Notify>) -> Self {
        let client = Client::builder()
            .redirect(Policy::none())
            // No proxy from the environment (HTTP(S)_PROXY): a proxy would resolve the
            // endpoint's host itself, past the resolver below that refuses private targets.
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("Millwright-Webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: settings.allow_private,
            }))
            .build()
            .expect("HTTP client configuration is valid");
        let worker = format!(
            "webhook-{}-{}",
            std::process::id(),
            &Uuid::new_v4().simple().to_string()[..8]
        );
        let local = Arc::new(Local::new(&settings));
        let (hand_over, handed) = mpsc::unbounded_channel();
        Self {
            db,
            cipher,
            settings,
            wake,
            client,
            worker,
            local,
            handed: Some(handed),
            hand_over,
        }
    }

    /// For the dispatcher of this process.
    pub fn handoff(&self) -> Handoff {
        Handoff {
            worker: self.worker.clone(),
            local: self.local.clone(),
            lease: self.settings.lease,
            jobs: self.hand_over.clone(),
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut handed = self.handed.take().expect("the delivery workers run once");
        let this = Arc::new(self);
        let (worker, local) = (this.worker.clone(), this.local.clone());
        let (done, finished) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(this.clone().record_finished(finished));
        let mut sends = JoinSet::new();
        while !shutdown.is_cancelled() {
            while sends.try_join_next().is_some() {}
            while let Ok(jobs) = handed.try_recv() {
                for job in jobs {
                    sends.spawn(this.clone().send_job(job, local.clone(), done.clone()));
                }
            }
            let jobs = match this.claim(&worker, &local).await {
                Ok(jobs) => jobs,
                Err(err) => {
                    tracing::error!(error = %err, "claiming webhook deliveries failed");
                    Vec::new()
                }
            };
            if jobs.is_empty() {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = this.wake.notified() => {}
                    () = local.freed.notified() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                    Some(jobs) = handed.recv() => {
                        for job in jobs {
                            sends.spawn(this.clone().send_job(job, local.clone(), done.clone()));
                        }
                        continue;
                    }
                }
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(LINGER) => {}
                }
                continue;
            }
            for job in jobs {
                sends.spawn(this.clone().send_job(job, local.clone(), done.clone()));
            }
        }
        // Requests still in flight are abandoned; what finished is recorded, and the rest is
        // released for the next process rather than left to its leases.
        sends.shutdown().await;
        handed.close();
        while handed.try_recv().is_ok() {}
        drop(done);
        let _ = recorder.await;
        if let Err(err) = this.release_leases(&worker).await {
            tracing::warn!(error = %err, "releasing webhook delivery leases failed");
        }
    }

    /// Claims due deliveries for every endpoint with room, in one write transaction.
    async fn claim(&self, worker: &str, local: &Local) -> AppResult<Vec<Job>> {
        let now = Utc::now();
        let backend = self.db.conn().get_database_backend();
        // Read first, without the write lock: most rounds find nothing to do.
        let endpoints: Vec<webhook_endpoint::Model> = webhook_endpoint::Entity::find()
            .from_raw_sql(db::statement(
                backend,
                CANDIDATES,
                [now.into(), now.into(), now.into(), worker.into()],
            ))
            .all(self.db.conn())
            .await?
            .into_iter()
            .filter(|e| local.room(e.id) > 0)
            .collect();
        if endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let mut candidates: Vec<Uuid> = endpoints.iter().map(|e| e.id).collect();
        // Fair to every endpoint when the process-wide depth runs out.
        candidates.shuffle(&mut rand::rng());
        let until = now + chrono::Duration::from_std(self.settings.lease).unwrap_or_default();
        let txn = self.db.begin_write().await?;
        if backend == DbBackend::Postgres {
            // One claimer per endpoint at a time across processes (on SQLite the write
            // transaction is already exclusive).
            let locked: Vec<Uuid> = webhook_endpoint::Entity::find()
                .select_only()
                .column(webhook_endpoint::Column::Id)
                .filter(webhook_endpoint::Column::Id.is_in(candidates.clone()))
                .lock_with_behavior(LockType::NoKeyUpdate, LockBehavior::SkipLocked)
                .into_tuple()
                .all(&*txn)
                .await?;
            candidates.retain(|id| locked.contains(id));
        }
        // Each endpoint's share of the room left, in one statement.
        let mut total = local.total_room();
        let (mut parts, mut values) = (Vec::new(), vec![worker.into(), until.into()]);
        for id in candidates {
            let room = local.room(id).min(total);
            if room == 0 {
                continue;
            }
            total -= room;
            parts.push(format!("SELECT id FROM ({CLAIM_ONE}) AS c{}", parts.len()));
            values.extend([
                id.into(),
                now.into(),
                now.into(),
                now.into(),
                worker.into(),
                (room as i64).into(),
            ]);
        }
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "UPDATE webhook_deliveries SET locked_by = ?, locked_until = ? WHERE id IN ({}) \
             RETURNING *",
            parts.join(" UNION ALL ")
        );
        let mut rows = webhook_delivery::Entity::find()
            .from_raw_sql(db::statement(backend, &sql, values))
            .all(&*txn)
            .await?;
        txn.commit().await?;
        rows.sort_by_key(|d| d.next_attempt_at);
        let mut by_endpoint: HashMap<Uuid, Vec<webhook_delivery::Model>> = HashMap::new();
        for row in rows {
            by_endpoint.entry(row.endpoint_id).or_default().push(row);
        }
        let claimed = endpoints
            .into_iter()
            .filter_map(|e| Some((by_endpoint.remove(&e.id)?, Arc::new(e))))
            .map(|(rows, e)| (e, rows))
            .collect();
        self.jobs(claimed, local).await
    }

    /// Loads the claimed deliveries' events and takes their room.
    async fn jobs(
        &self,
        claimed: Vec<(Arc<webhook_endpoint::Model>, Vec<webhook_delivery::Model>)>,
        local: &Local,
    ) -> AppResult<Vec<Job>> {
        let positions: Vec<i64> = claimed
            .iter()
            .flat_map(|(_, rows)| rows.iter().map(|d| d.event_position))
            .collect();
        let mut events = HashMap::with_capacity(positions.len());
        for chunk in positions.chunks(500) {
            for found in event::Entity::find()
                .filter(event::Column::Position.is_in(chunk.to_vec()))
                .all(self.db.conn())
                .await?
            {
                events.insert(found.position, Arc::new(found));
            }
        }
        let mut jobs = Vec::with_capacity(positions.len());
        for (endpoint, rows) in claimed {
            let permits = local.take(endpoint.id, rows.len());
            jobs.extend(rows.into_iter().map(|delivery| Job {
                // A pruned event fails the attempt with a reason (it cannot be sent).
                event: events.get(&delivery.event_position).cloned(),
                endpoint: endpoint.clone(),
                permits: permits.clone(),
                delivery,
            }));
        }
        Ok(jobs)
    }

    async fn send_job(
        self: Arc<Self>,
        job: Job,
        local: Arc<Local>,
        done: mpsc::UnboundedSender<Finished>,
    ) {
        let (attempted_at, attempt) = {
            // The endpoint's permit first: a task waiting on a busy endpoint holds no overall
            // one.
            let (Ok(_endpoint), Ok(_overall)) =
                (job.permits.acquire().await, local.overall.acquire().await)
            else {
                return;
            };
            let attempted_at = Utc::now();
            // The request ends within the lease: past it another claim may send the same
            // delivery, and two requests of it would be in flight at once. A job that waited
            // here for most of its lease is not sent; it is claimed again when the lease ends.
            let left = match job.delivery.locked_until {
                Some(until) => (until - attempted_at).to_std().unwrap_or_default(),
                None => REQUEST_TIMEOUT + LEASE_MARGIN,
            };
            let timeout = left.saturating_sub(LEASE_MARGIN).min(REQUEST_TIMEOUT);
            if timeout < MIN_REQUEST_TIME {
                local.release(job.delivery.endpoint_id);
                tracing::debug!(delivery.id = %job.delivery.id, "lease too short to send; left to the next claim");
                return;
            }
            let attempt = match &job.event {
                Some(event) => self.send(&job.endpoint, event, timeout).await,
                None => Attempt::refused("the event was pruned before it could be delivered"),
            };
            (attempted_at, attempt)
        };
        // Sent: its lease is no longer at risk, so its room goes to the next claim while the
        // recorder writes the attempt.
        local.release(job.delivery.endpoint_id);
        let _ = done.send(Finished {
            delivery: job.delivery,
            attempted_at,
            attempt,
        });
    }

    /// Writes finished attempts in batches until every sender is gone.
    async fn record_finished(self: Arc<Self>, mut finished: mpsc::UnboundedReceiver<Finished>) {
        let mut batch = Vec::with_capacity(RECORD_BATCH);
        while finished.recv_many(&mut batch, RECORD_BATCH).await > 0 {
            if batch.len() < RECORD_BATCH / 8 {
                tokio::time::sleep(LINGER).await;
                while batch.len() < RECORD_BATCH
                    && let Ok(more) = finished.try_recv()
                {
                    batch.push(more);
                }
            }
            for tries in 1..=RECORD_TRIES {
                match record::record_batch(&self.db, &self.settings, &batch).await {
                    Ok(()) => break,
                    Err(err) if tries < RECORD_TRIES => {
                        tracing::warn!(error = %err, tries, "recording webhook attempts failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200 * u64::from(tries))).await;
                    }
                    // The deliveries stay leased and are sent again once their leases expire.
                    Err(err) => {
                        tracing::error!(error = %err, attempts = batch.len(), "recording webhook attempts failed");
                    }
                }
            }
            batch.clear();
        }
    }

    async fn release_leases(&self, worker: &str) -> AppResult<()> {
        let txn = self.db.begin_write().await?;
        txn.execute_raw(db::statement(
            txn.get_database_backend(),
            RELEASE,
            [worker.into()],
        ))
        .await?;
        txn.commit().await?;
        Ok(())
    }

    async fn send(
        &self,
        endpoint: &webhook_endpoint::Model,
        event: &event::Model,
        timeout: Duration,
    ) -> Attempt {
        let url = match guard::parse(&endpoint.url, "url") {
            Ok(url) => url,
            Err(err) => return Attempt::refused(&err.to_string()),
        };
        if guard::refused_literal(&url, self.settings.allow_private) {
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
            .timeout(timeout)
            .send()
            .await;
        Attempt::from_response(sent, started).await
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

/// What one attempt came back with.
pub struct Attempt {
    pub status: Option<u16>,
    pub duration_ms: i32,
    pub error: Option<String>,
    pub body: Option<String>,
    pub retry_after: Option<Duration>,
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

    pub fn succeeded(&self) -> bool {
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
            .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
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

/// Enabled endpoints with due, unleased deliveries that no other process is serving.
const CANDIDATES: &str = "SELECT e.* FROM webhook_endpoints e WHERE e.enabled \
    AND EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.endpoint_id = e.id \
    AND d.status = 'PENDING' AND d.next_attempt_at <= ? \
    AND (d.locked_until IS NULL OR d.locked_until < ?)) \
    AND NOT EXISTS (SELECT 1 FROM webhook_deliveries x WHERE x.endpoint_id = e.id \
    AND x.status = 'PENDING' AND x.locked_until >= ? AND x.locked_by <> ?)";

/// An endpoint (`e`) no other process serves and with no due delivery waiting unleased.
const FREE: &str = "e.enabled \
    AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.endpoint_id = e.id \
    AND d.status = 'PENDING' AND d.next_attempt_at <= ? \
    AND (d.locked_until IS NULL OR d.locked_until < ?)) \
    AND NOT EXISTS (SELECT 1 FROM webhook_deliveries x WHERE x.endpoint_id = e.id \
    AND x.status = 'PENDING' AND x.locked_until >= ? AND x.locked_by <> ?)";

/// Up to n due deliveries of one enabled endpoint, unless another process serves it.
const CLAIM_ONE: &str = "SELECT d.id FROM webhook_deliveries d WHERE d.endpoint_id = ? \
    AND d.status = 'PENDING' AND d.next_attempt_at <= ? \
    AND (d.locked_until IS NULL OR d.locked_until < ?) \
    AND EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.id = d.endpoint_id AND e.enabled) \
    AND NOT EXISTS (SELECT 1 FROM webhook_deliveries x WHERE x.endpoint_id = d.endpoint_id \
    AND x.status = 'PENDING' AND x.locked_until >= ? AND x.locked_by <> ?) \
    ORDER BY d.next_attempt_at LIMIT ?";

const RELEASE: &str = "UPDATE webhook_deliveries SET locked_by = NULL, locked_until = NULL \
    WHERE locked_by = ? AND status = 'PENDING'";

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::parse_retry_after;

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
}
