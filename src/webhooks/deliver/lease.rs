//! Leases: how many claimed deliveries this process holds ([`Capacity`]), the dispatcher's
//! direct line to its senders ([`DirectDispatch`]: first attempts created already leased to
//! this process), how long a leased delivery may still be sent, and the release of every
//! lease at shutdown.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend};
use tokio::sync::{Notify, Semaphore, mpsc};
use uuid::Uuid;

use super::{DeliverySettings, claim::Claimed, peers::Peers, send::REQUEST_TIMEOUT};
use crate::{db, db::Db, error::AppResult};
use entity::{event, webhook_delivery, webhook_endpoint};

/// Time kept between a request's end and its lease's (clocks, the recorder's pick-up).
const LEASE_MARGIN: Duration = Duration::from_millis(500);
/// A claimed job with less of its lease left than this (after the margin) is not sent.
const MIN_REQUEST_TIME: Duration = Duration::from_secs(1);
/// Endpoints one dispatch batch leases first attempts for (see `DirectDispatch::reserve`).
const RESERVED_ENDPOINTS: usize = 1000;

/// How long a request for a delivery leased until `locked_until` may take when it starts
/// at `now`: it ends within the lease, since past it another claim may send the same
/// delivery and two requests of it would be in flight at once. `None`: too little is left.
pub fn request_window(locked_until: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<Duration> {
    let left = match locked_until {
        Some(until) => (until - now).to_std().unwrap_or_default(),
        None => REQUEST_TIMEOUT + LEASE_MARGIN,
    };
    let window = left.saturating_sub(LEASE_MARGIN).min(REQUEST_TIMEOUT);
    (window >= MIN_REQUEST_TIME).then_some(window)
}

/// This process's claimed deliveries: how many per endpoint and per account are claimed and
/// not yet sent, and the permits that bound the requests in flight.
///
/// Fair between accounts: one account may hold at most seven eighths of the room to claim
/// ahead and of the requests in flight ([`share`]), so another account's delivery is claimed
/// and sent at once even while the first one's receivers stall with a backlog.
pub struct Capacity {
    slots: Mutex<Slots>,
    /// Requests in flight over all endpoints.
    pub overall: Arc<Semaphore>,
    /// Signalled when sent deliveries free room for more claims.
    pub freed: Notify,
    per_endpoint: usize,
    per_account: usize,
    endpoint_depth: usize,
    account_depth: usize,
    total_depth: usize,
}

/// What one account may hold of `n`: all but an eighth, and at least one left to the others
/// when there are two or more (a single account that is alone loses little throughput).
fn share(n: usize) -> usize {
    if n < 2 { n } else { n - (n / 8).max(1) }
}

#[derive(Default)]
struct Slots {
    endpoints: HashMap<Uuid, Slot>,
    accounts: HashMap<Uuid, Slot>,
    outstanding: usize,
}

struct Slot {
    permits: Arc<Semaphore>,
    outstanding: usize,
}

/// The permits a claimed delivery's request takes, besides an overall one.
#[derive(Clone)]
pub struct Permits {
    pub endpoint: Arc<Semaphore>,
    pub account: Arc<Semaphore>,
}

impl Capacity {
    pub fn new(settings: &DeliverySettings) -> Self {
        let (per_endpoint, overall) = (settings.per_endpoint.max(1), settings.concurrency.max(1));
        let total_depth = overall * settings.rounds_ahead();
        Self {
            slots: Mutex::default(),
            overall: Arc::new(Semaphore::new(overall)),
            freed: Notify::new(),
            per_endpoint,
            per_account: share(overall),
            endpoint_depth: per_endpoint * settings.rounds_ahead(),
            account_depth: share(total_depth),
            total_depth,
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many more deliveries of this endpoint (of `account`) may be claimed now.
    pub fn room(&self, endpoint: Uuid, account: Uuid) -> usize {
        let slots = self.slots();
        let taken = |slots: &HashMap<Uuid, Slot>, id| slots.get(&id).map_or(0, |s| s.outstanding);
        self.endpoint_depth
            .saturating_sub(taken(&slots.endpoints, endpoint))
            .min(
                self.account_depth
                    .saturating_sub(taken(&slots.accounts, account)),
            )
            .min(self.total_depth.saturating_sub(slots.outstanding))
    }

    /// How many more deliveries this process may claim now, over all endpoints.
    pub fn total_room(&self) -> usize {
        self.total_depth.saturating_sub(self.slots().outstanding)
    }

    /// How many more deliveries of this account may be claimed now, over its endpoints.
    pub fn account_room(&self, account: Uuid) -> usize {
        let slots = self.slots();
        let taken = slots.accounts.get(&account).map_or(0, |s| s.outstanding);
        self.account_depth.saturating_sub(taken)
    }

    /// Takes room for `n` deliveries of an endpoint of `account`; returns their permits.
    pub fn take(&self, endpoint: Uuid, account: Uuid, n: usize) -> Permits {
        let mut slots = self.slots();
        slots.outstanding += n;
        let hold = |slots: &mut HashMap<Uuid, Slot>, id, size| {
            let slot = slots.entry(id).or_insert_with(|| Slot {
                permits: Arc::new(Semaphore::new(size)),
                outstanding: 0,
            });
            slot.outstanding += n;
            slot.permits.clone()
        };
        Permits {
            endpoint: hold(&mut slots.endpoints, endpoint, self.per_endpoint),
            account: hold(&mut slots.accounts, account, self.per_account),
        }
    }

    /// One delivery of the endpoint (of `account`) was sent (or given up to its lease).
    pub fn release(&self, endpoint: Uuid, account: Uuid) {
        self.give_back(endpoint, account, 1);
    }

    /// Frees all room, once every lease of this process was released (after its delivery
    /// workers failed and before they start again): what their sends held is not coming back.
    pub fn clear(&self) {
        *self.slots() = Slots::default();
        self.freed.notify_one();
    }

    /// Frees room taken for `n` deliveries of an endpoint of `account`.
    fn give_back(&self, endpoint: Uuid, account: Uuid, n: usize) {
        let mut slots = self.slots();
        slots.outstanding = slots.outstanding.saturating_sub(n);
        let free = |slots: &mut HashMap<Uuid, Slot>, id| {
            if let Some(slot) = slots.get_mut(&id) {
                slot.outstanding = slot.outstanding.saturating_sub(n);
                if slot.outstanding == 0 {
                    slots.remove(&id);
                }
            }
        };
        free(&mut slots.endpoints, endpoint);
        free(&mut slots.accounts, account);
        drop(slots);
        self.freed.notify_one();
    }
}

/// The dispatcher's direct line to this process's senders: it creates first attempts
/// already leased to them, in its own transaction, and passes them over after the commit:
/// no claim (and no write) per new delivery.
#[derive(Clone)]
pub struct DirectDispatch {
    pub(super) worker: String,
    pub(super) peers: Arc<Peers>,
    pub(super) capacity: Arc<Capacity>,
    pub(super) lease: Duration,
    pub(super) senders: mpsc::UnboundedSender<Vec<Claimed>>,
}

/// A new delivery created leased to this process, with what sending it needs.
pub struct LeasedDelivery {
    pub delivery: webhook_delivery::Model,
    pub endpoint: Arc<webhook_endpoint::Model>,
    pub event: Arc<event::Model>,
}

/// Room taken for new deliveries; given back unless they are passed to the senders.
pub struct Reservation<'a> {
    direct: &'a DirectDispatch,
    rooms: HashMap<Uuid, Room>,
    locked_until: DateTime<Utc>,
}

/// One endpoint's reserved room.
struct Room {
    account: Uuid,
    /// New deliveries of the endpoint to create leased, at most.
    reserved: usize,
    /// How many of them were leased so far.
    leased: usize,
    permits: Permits,
}

impl DirectDispatch {
    /// Takes room for new deliveries (one endpoint id and its account's per delivery, in the
    /// order they are created), within the dispatcher's write transaction. An endpoint gets
    /// none when it is another process's share (their claimers take its new deliveries) or
    /// another process serves it ([`FREE`]). On PostgreSQL the endpoint rows are
    /// locked as the claimer locks them.
    pub async fn reserve(
        &self,
        txn: &impl ConnectionTrait,
        deliveries_to: impl IntoIterator<Item = (Uuid, Uuid)>,
    ) -> AppResult<Reservation<'_>> {
        let now = Utc::now();
        let mut reservation = Reservation {
            direct: self,
            rooms: HashMap::new(),
            locked_until: now + chrono::Duration::from_std(self.lease).unwrap_or_default(),
        };
        // Deliveries per endpoint, in the order the endpoints first appear.
        let mut wanted: Vec<(Uuid, Uuid, usize)> = Vec::new();
        let mut at: HashMap<Uuid, usize> = HashMap::new();
        for (endpoint, account) in deliveries_to {
            let i = *at.entry(endpoint).or_insert_with(|| {
                wanted.push((endpoint, account, 0));
                wanted.len() - 1
            });
            wanted[i].2 += 1;
        }
        // At most RESERVED_ENDPOINTS endpoints a batch (one bound value each): the others'
        // new deliveries are created unleased and go through the claimer, as any backlog.
        let candidates: Vec<Uuid> = wanted
            .iter()
            .filter(|(id, account, _)| {
                self.peers.serves(*id) && self.capacity.room(*id, *account) > 0
            })
            .map(|(id, _, _)| *id)
            .take(RESERVED_ENDPOINTS)
            .collect();
        if candidates.is_empty() {
            return Ok(reservation);
        }
        let free = self.free_endpoints(txn, &candidates, now).await?;
        for (id, account, n) in wanted {
            if !free.contains(&id) {
                continue;
            }
            let n = n.min(self.capacity.room(id, account));
            if n > 0 {
                let permits = self.capacity.take(id, account, n);
                let room = Room {
                    account,
                    reserved: n,
                    leased: 0,
                    permits,
                };
                reservation.rooms.insert(id, room);
            }
        }
        Ok(reservation)
    }

    /// The candidates no other process serves.
    async fn free_endpoints(
        &self,
        txn: &impl ConnectionTrait,
        candidates: &[Uuid],
        now: DateTime<Utc>,
    ) -> AppResult<HashSet<Uuid>> {
        let backend = txn.get_database_backend();
        let mut sql = format!(
            "SELECT e.id FROM webhook_endpoints e WHERE e.id IN ({}) AND {FREE}",
            vec!["?"; candidates.len()].join(", ")
        );
        if backend == DbBackend::Postgres {
            sql.push_str(" FOR NO KEY UPDATE SKIP LOCKED");
        }
        let mut values: Vec<sea_orm::Value> = candidates.iter().map(|id| (*id).into()).collect();
        values.extend([now.into(), self.worker.clone().into()]);
        Ok(txn
            .query_all_raw(db::statement(backend, &sql, values))
            .await?
            .iter()
            .map(|row| row.try_get_by_index::<Uuid>(0))
            .collect::<Result<_, _>>()?)
    }
}

impl Reservation<'_> {
    /// Leases a new delivery to this process's senders if its endpoint has reserved room
    /// left; returns whether it did.
    pub fn try_lease(&mut self, delivery: &mut webhook_delivery::Model) -> bool {
        let Some(room) = self.rooms.get_mut(&delivery.endpoint_id) else {
            return false;
        };
        if room.leased == room.reserved {
            return false;
        }
        room.leased += 1;
        delivery.locked_by = Some(self.direct.worker.clone());
        delivery.locked_until = Some(self.locked_until);
        true
    }

    /// After the commit: the leased deliveries go to the senders.
    pub fn pass_to_senders(mut self, leased: Vec<LeasedDelivery>) {
        let mut jobs = Vec::with_capacity(leased.len());
        for LeasedDelivery {
            delivery,
            endpoint,
            event,
        } in leased
        {
            let Some(room) = self.rooms.get_mut(&endpoint.id).filter(|r| r.reserved > 0) else {
                continue;
            };
            room.reserved -= 1;
            jobs.push(Claimed {
                permits: room.permits.clone(),
                endpoint,
                event: Some(event),
                delivery,
            });
        }
        // Jobs the senders are gone for stay leased to this process: the workers release
        // their leases at shutdown, and a lease that outlives them expires.
        let _ = self.direct.senders.send(jobs);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        for (endpoint, room) in self.rooms.drain() {
            if room.reserved > 0 {
                self.direct
                    .capacity
                    .give_back(endpoint, room.account, room.reserved);
            }
        }
    }
}

/// Gives up every pending delivery this process (`worker`) holds, for the next process
/// rather than left to their leases.
pub async fn release_all(db: &Db, worker: &str) -> AppResult<()> {
    let txn = db.begin_write().await?;
    txn.execute_raw(db::statement(
        txn.get_database_backend(),
        RELEASE,
        [worker.into()],
    ))
    .await?;
    txn.commit().await?;
    Ok(())
}

/// An enabled endpoint (`e`) no other process serves. Deliveries of it waiting unleased do
/// not keep its new ones from the senders: the claimer works those off beside them, within
/// the same room. (They once did, to send the waiting ones first; under a steady stream one
/// delivery created unleased then sent every later one of the endpoint through the claimer,
/// which never caught up: webhooks a few hundred milliseconds late on PostgreSQL, #20.)
const FREE: &str = concat!("e.enabled AND NOT ", leased_elsewhere!("e.id"));

const RELEASE: &str = "UPDATE webhook_deliveries SET locked_by = NULL, locked_until = NULL \
    WHERE locked_by = ? AND status = 'PENDING'";

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;
    use uuid::Uuid;

    use super::{Capacity, request_window, share};
    use crate::webhooks::deliver::DeliverySettings;

    #[test]
    fn a_request_ends_within_its_lease_or_is_not_sent() {
        let now = Utc::now();
        let at = |secs: i64| Some(now + chrono::Duration::seconds(secs));
        assert_eq!(request_window(at(60), now), Some(Duration::from_secs(15)));
        assert_eq!(
            request_window(at(10), now),
            Some(Duration::from_millis(9500)),
            "the margin is kept"
        );
        assert_eq!(request_window(at(1), now), None, "too little left");
        assert_eq!(request_window(at(-5), now), None, "an expired lease");
        assert_eq!(
            request_window(None, now),
            Some(Duration::from_secs(15)),
            "unleased"
        );
    }

    #[test]
    fn one_account_never_takes_all_the_room() {
        assert_eq!([share(1), share(2), share(4), share(32)], [1, 1, 3, 28]);
        let capacity = Capacity::new(&DeliverySettings {
            schedule: vec![5],
            allow_private: false,
            disable_after: Duration::from_secs(60),
            per_endpoint: 8,
            concurrency: 32,
            lease: Duration::from_secs(120),
        });
        let (busy, other) = (Uuid::new_v4(), Uuid::new_v4());
        // 8 rounds ahead of 32 workers: 256 claimed at most, 224 of them by one account.
        for _ in 0..100 {
            let endpoint = Uuid::new_v4();
            let room = capacity.room(endpoint, busy);
            capacity.take(endpoint, busy, room);
        }
        assert_eq!(capacity.account_room(busy), 0);
        assert_eq!(capacity.total_room(), 32);
        let endpoint = Uuid::new_v4();
        assert_eq!(
            capacity.room(endpoint, other),
            32,
            "room left for another account"
        );
        let permits = capacity.take(endpoint, other, 1);
        assert_eq!(permits.account.available_permits(), 28);
    }
}
