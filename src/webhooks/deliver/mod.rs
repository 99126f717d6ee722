//! Delivery: a claimer (`claim`) takes due deliveries in batches under a lease (`lease`),
//! senders post them (`send`), and a recorder (`record`, `health`) writes the attempts in
//! batches. A delivery moves through typed steps: `Claimed` (leased to this process, by the
//! claimer or straight from the dispatcher through [`DirectDispatch`]) → `Sent` with its
//! `Outcome` → recorded (succeeded, or after a failure `AfterFailure`: retried or ended).
//!
//! Limits: at most `per_endpoint` requests in flight per endpoint and `concurrency` overall,
//! of which one account holds at most seven eighths (as of the deliveries claimed ahead), so
//! that one account's stalled backlog never keeps another's deliveries waiting.
//! Across processes an endpoint is served by one process at a time: a process claims an
//! endpoint's deliveries only while no other process holds a lease on any of them. The
//! processes know of each other (`peers`: a row each, written about once a second) and split
//! the endpoints between them, each claiming only for its own share, so that an endpoint does
//! not change hands whenever one process's leases of it run out for a moment. Each
//! process keeps at most `lease ÷ 15 s` rounds of requests claimed ahead, so a claimed
//! delivery is sent before its lease runs out even when every request takes the full 15 s
//! timeout. A process killed mid-delivery leaves its leases to expire and those deliveries
//! are sent again, with the same `webhook-id`; one that shuts down releases them at once.

/// SQL: delivery `d` is pending, due, and not leased. Binds `now` twice.
macro_rules! due_unleased {
    () => {
        "d.status = 'PENDING' AND d.next_attempt_at <= ? \
         AND (d.locked_until IS NULL OR d.locked_until < ?)"
    };
}

/// SQL: another process holds a live lease on a pending delivery of the endpoint whose id
/// is the expression `$endpoint`, and so serves that endpoint for now. Binds `now`, then
/// this process's name.
macro_rules! leased_elsewhere {
    ($endpoint:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM webhook_deliveries x WHERE x.endpoint_id = ",
            $endpoint,
            " AND x.status = 'PENDING' AND x.locked_until >= ? AND x.locked_by <> ?)"
        )
    };
}

mod claim;
mod health;
mod lease;
mod peers;
mod record;
mod send;

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{Mutex, Notify, mpsc},
    task::{JoinHandle, JoinSet},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use lease::{DirectDispatch, HoldBack, LeasedDelivery, Reservation};

use self::{
    claim::{Claimed, Claimer, Claims},
    lease::Capacity,
    peers::Peers,
    send::{REQUEST_TIMEOUT, Sender},
};
use super::LINGER;
use crate::{crypto::Cipher, db::Db, metrics::WebhookMetrics};

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

impl DeliverySettings {
    /// Rounds of requests claimed ahead: all of them can time out within one lease.
    fn rounds_ahead(&self) -> usize {
        (self.lease.as_secs() / REQUEST_TIMEOUT.as_secs()).max(1) as usize
    }
}

/// This process's delivery workers: the claimer, the senders and the recorder.
pub struct DeliveryWorkers {
    db: Db,
    settings: DeliverySettings,
    /// Signalled when deliveries were created for the claimer.
    wake: Arc<Notify>,
    /// This process's name on its leases.
    worker: String,
    /// The processes whose delivery workers run: which endpoints are this one's to serve.
    peers: Arc<Peers>,
    capacity: Arc<Capacity>,
    metrics: WebhookMetrics,
    sender: Arc<Sender>,
    /// Deliveries the dispatcher created already leased to this process; each run (a
    /// restart after a failure is another run) takes it in turn.
    from_dispatcher: Mutex<mpsc::UnboundedReceiver<Vec<Claimed>>>,
    to_senders: mpsc::UnboundedSender<Vec<Claimed>>,
}

impl DeliveryWorkers {
    pub fn new(
        db: Db,
        cipher: Cipher,
        settings: DeliverySettings,
        wake: Arc<Notify>,
        metrics: WebhookMetrics,
    ) -> Self {
        let worker = format!(
            "webhook-{}-{}",
            std::process::id(),
            &Uuid::new_v4().simple().to_string()[..8]
        );
        let capacity = Arc::new(Capacity::new(&settings));
        let sender = Arc::new(Sender::new(
            cipher,
            settings.allow_private,
            capacity.clone(),
        ));
        let (to_senders, from_dispatcher) = mpsc::unbounded_channel();
        Self {
            db,
            settings,
            wake,
            peers: Arc::new(Peers::new(worker.clone())),
            worker,
            capacity,
            metrics,
            sender,
            from_dispatcher: Mutex::new(from_dispatcher),
            to_senders,
        }
    }

    /// For the dispatcher of this process (one: it keeps the dispatcher's pacing).
    pub fn direct_dispatch(&self) -> DirectDispatch {
        DirectDispatch {
            worker: self.worker.clone(),
            peers: self.peers.clone(),
            capacity: self.capacity.clone(),
            lease: self.settings.lease,
            senders: self.to_senders.clone(),
            pacing: Arc::default(),
            metrics: self.metrics.clone(),
        }
    }

    /// Claims and sends until shutdown. A sender or the recorder that panics (or a recorder
    /// that ends) fails the run: it winds down as at shutdown and returns the error, for
    /// its supervisor to run it again.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), String> {
        let mut dispatched = self.from_dispatcher.lock().await;
        let claimer = Claimer {
            db: self.db.clone(),
            worker: self.worker.clone(),
            peers: self.peers.clone(),
            lease: self.settings.lease,
            capacity: self.capacity.clone(),
            metrics: self.metrics.clone(),
        };
        let (done, sent) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(record::record_sent(
            self.db.clone(),
            self.settings.clone(),
            sent,
        ));
        let mut sends = JoinSet::new();
        let send_all = |sends: &mut JoinSet<()>, jobs: Vec<Claimed>| {
            for job in jobs {
                sends.spawn(self.sender.clone().send(job, done.clone()));
            }
        };
        let mut failure = None;
        while !shutdown.is_cancelled() {
            if let Err(error) = check_tasks(&mut sends, &recorder) {
                failure = Some(error);
                break;
            }
            while let Ok(jobs) = dispatched.try_recv() {
                send_all(&mut sends, jobs);
            }
            // From the claim loop: a process whose loop is stuck stops counting as alive, and
            // the others take its endpoints up.
            if self.peers.due()
                && let Err(err) = self.peers.beat(&self.db).await
            {
                tracing::warn!(error = %err, "writing this process's webhook worker row failed");
            }
            let claims = claimer.claim().await.unwrap_or_else(|err| {
                tracing::error!(error = %err, "claiming webhook deliveries failed");
                Claims::nothing(true)
            });
            if !claims.jobs.is_empty() {
                send_all(&mut sends, claims.jobs);
                continue;
            }
            // Room freed by a send matters only to a claim that room held back: otherwise
            // the loop waits for new deliveries (the dispatcher's or another process's
            // announcement) or the poll (retries coming due, leases running out). In a backlog
            // the dispatcher leases itself, and a claim on every send would only read.
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = self.wake.notified() => {}
                () = self.capacity.freed.notified(), if claims.held_by_room => {}
                () = tokio::time::sleep(IDLE_POLL) => {}
                Some(jobs) = dispatched.recv() => {
                    send_all(&mut sends, jobs);
                    continue;
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(LINGER) => {}
            }
        }
        // Requests still in flight are abandoned; what finished is recorded, and the rest is
        // released for the next process rather than left to its leases.
        sends.shutdown().await;
        if failure.is_none() {
            dispatched.close();
        }
        // After a failure the channel stays open for the next run; what is in it now goes
        // back with the leases below.
        while dispatched.try_recv().is_ok() {}
        drop(done);
        if let Err(err) = recorder.await {
            failure = Some(format!("the webhook recorder failed: {err}"));
        }
        if let Err(err) = lease::release_all(&self.db, &self.worker).await {
            tracing::warn!(error = %err, "releasing webhook delivery leases failed");
        }
        if let Err(err) = self.peers.leave(&self.db).await {
            tracing::warn!(error = %err, "removing this process's webhook worker row failed");
        }
        match failure {
            None => Ok(()),
            Some(error) => {
                // Every lease was given up: the next run starts with all its room. (A batch
                // the dispatcher leases meanwhile may briefly count for less; it is sent by
                // the next run, or claimed again: at least once, as always.)
                self.capacity.clear();
                Err(error)
            }
        }
    }
}

/// `Err` when a sender panicked or the recorder ended: deliveries would no longer be sent or
/// recorded. Reaps the senders that finished.
fn check_tasks(sends: &mut JoinSet<()>, recorder: &JoinHandle<()>) -> Result<(), String> {
    while let Some(ended) = sends.try_join_next() {
        if let Err(err) = ended {
            return Err(format!("a webhook sender failed: {err}"));
        }
    }
    if recorder.is_finished() {
        return Err("the webhook recorder ended".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod literal_statuses {
    use sea_orm::ActiveEnum as _;

    use crate::webhooks::DeliveryStatus;

    /// The delivery statements write `'PENDING'` into their SQL (the partial indexes over
    /// pending deliveries serve only a literal match): it must be the stored text.
    #[test]
    fn the_pending_literal_is_the_stored_status() {
        let pending = format!("status = '{}'", DeliveryStatus::Pending.to_value());
        assert!(due_unleased!().contains(&pending));
        assert!(leased_elsewhere!("d.endpoint_id").contains(&pending));
    }
}
