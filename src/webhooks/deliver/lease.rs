//! Leases: how many claimed deliveries this process holds ([`Capacity`]), the dispatcher's
//! direct line to its senders ([`DirectDispatch`]: first attempts created already leased to
//! this process), how long a leased delivery may still be sent, and the release of every
//! lease at shutdown.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend};
use tokio::sync::{Notify, Semaphore, mpsc};
use uuid::Uuid;

use super::{DeliverySettings, claim::Claimed, peers::Peers, send::REQUEST_TIMEOUT};
use crate::{db, db::Db, error::AppResult, metrics::WebhookMetrics};
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
    /// The same, for the dispatcher when it waits for room (see [`Pacing`]).
    freed_for_dispatch: Notify,
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
            freed_for_dispatch: Notify::new(),
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
        self.endpoint_room(endpoint)
            .min(self.account_room(account))
            .min(self.total_room())
    }

    /// How many more deliveries of this endpoint may be claimed now, as far as its own
    /// depth goes (its account's and the process's aside).
    pub fn endpoint_room(&self, endpoint: Uuid) -> usize {
        let taken = self
            .slots()
            .endpoints
            .get(&endpoint)
            .map_or(0, |s| s.outstanding);
        self.endpoint_depth.saturating_sub(taken)
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
        self.freed_for_dispatch.notify_one();
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
        self.freed_for_dispatch.notify_one();
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
    pub(super) pacing: Arc<Pacing>,
    pub(super) metrics: WebhookMetrics,
}

/// How long the dispatcher waits for an account's room after it stopped for it.
const PACE_WAIT: Duration = Duration::from_millis(50);
/// How long an account whose room did not come back within [`PACE_WAIT`] holds nothing back.
const PACE_PAUSE: Duration = Duration::from_secs(5);

/// The dispatcher reads on only as far as this process has room for.
///
/// In a backlog the dispatcher reads a batch of events (500, two thousand deliveries for four
/// endpoints) where the process has room to send a couple of hundred. Those it has no room
/// for were created unleased, and claimed later: one more write of each delivery row than a
/// delivery created leased. So, while the process is alone (another would wait for this one's
/// room), a batch stops before the first event with a delivery this process would lease but
/// for its account's or its own room; the dispatcher waits for a round's room and reads on
/// from there. It never stops for an endpoint without room (a slow receiver would pace every
/// other), nor when it leased nothing (the process may be stalled: the batch is created
/// unleased as before); and an account whose room does not come back within [`PACE_WAIT`]
/// (its receivers are slow) holds nothing back for [`PACE_PAUSE`], so that another account's
/// events are not kept waiting behind it.
#[derive(Default)]
pub struct Pacing {
    /// Accounts that hold nothing back, until when.
    paused: Mutex<HashMap<Uuid, Instant>>,
}

impl Pacing {
    fn paused(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Instant>> {
        self.paused.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the account's deliveries may hold the dispatcher back now.
    fn paces(&self, account: Uuid) -> bool {
        let mut paused = self.paused();
        let now = Instant::now();
        paused.retain(|_, until| *until > now);
        !paused.contains_key(&account)
    }

    fn pause(&self, account: Uuid) {
        tracing::debug!(%account, "webhook dispatch no longer waits for the account's room for a while");
        self.paused().insert(account, Instant::now() + PACE_PAUSE);
    }
}

/// Which new deliveries a dispatch batch leases, and where it stops.
#[derive(Debug, Default)]
struct Plan {
    /// Per endpoint: its account and how many of its first deliveries are leased.
    leased: HashMap<Uuid, (Uuid, usize)>,
    hold_back: Option<HoldBack>,
}

/// Leases new deliveries (endpoint and account ids, in the order they are created) to the
/// endpoints in `free` while the endpoint, its account and the process have room, and finds
/// the first one that would be leased but for its account's or the process's room, once
/// something was leased, when its account `may_hold_back` (see [`Pacing`]): the plan ends
/// there.
fn plan(
    capacity: &Capacity,
    deliveries_to: &[(Uuid, Uuid)],
    free: &HashSet<Uuid>,
    may_hold_back: impl Fn(Uuid) -> bool,
) -> Plan {
    let mut plan = Plan::default();
    let mut total = capacity.total_room();
    let mut endpoint_room: HashMap<Uuid, usize> = HashMap::new();
    let mut account_room: HashMap<Uuid, usize> = HashMap::new();
    for (at, (id, account)) in deliveries_to.iter().enumerate() {
        if !free.contains(id) {
            continue;
        }
        let endpoint_left = endpoint_room
            .entry(*id)
            .or_insert_with(|| capacity.endpoint_room(*id));
        if *endpoint_left == 0 {
            // An endpoint without room holds nothing back: a slow receiver must not pace
            // the others.
            continue;
        }
        let account_left = account_room
            .entry(*account)
            .or_insert_with(|| capacity.account_room(*account));
        if *account_left > 0 && total > 0 {
            *endpoint_left -= 1;
            *account_left -= 1;
            total -= 1;
            plan.leased.entry(*id).or_insert((*account, 0)).1 += 1;
        } else if !plan.leased.is_empty() && may_hold_back(*account) {
            // Nothing after it is created in this batch (but the rest of its event when that
            // is the batch's first, whose deliveries find no room either).
            plan.hold_back = Some(HoldBack {
                at,
                account: *account,
            });
            break;
        }
    }
    plan
}

/// Where a dispatch batch stops: the index of the first delivery held back, and its account.
#[derive(Clone, Copy, Debug)]
pub struct HoldBack {
    pub at: usize,
    pub account: Uuid,
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
    hold_back: Option<HoldBack>,
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
    /// order they are created), within the dispatcher's write transaction, and leases them in
    /// that order while the endpoint, its account and the process have room. An endpoint gets
    /// none when it is another process's share (their claimers take its new deliveries) or
    /// another process serves it ([`FREE`]). On PostgreSQL the endpoint rows are locked as
    /// the claimer locks them.
    ///
    /// It also finds where the dispatcher is to stop reading on (see [`Pacing`]): the first
    /// delivery that would be leased but for its account's or the process's room, when
    /// something before it was leased.
    pub async fn reserve(
        &self,
        txn: &impl ConnectionTrait,
        deliveries_to: &[(Uuid, Uuid)],
    ) -> AppResult<Reservation<'_>> {
        let now = Utc::now();
        let mut reservation = Reservation {
            direct: self,
            rooms: HashMap::new(),
            locked_until: now + chrono::Duration::from_std(self.lease).unwrap_or_default(),
            hold_back: None,
        };
        // At most RESERVED_ENDPOINTS endpoints a batch (one bound value each): the others'
        // new deliveries are created unleased and go through the claimer, as any backlog.
        let mut seen = HashSet::new();
        let candidates: Vec<Uuid> = deliveries_to
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| seen.insert(*id))
            .filter(|id| self.peers.serves(*id) && self.capacity.endpoint_room(*id) > 0)
            .take(RESERVED_ENDPOINTS)
            .collect();
        // Without any room nothing is leased, and so nothing held back either.
        if candidates.is_empty() || self.capacity.total_room() == 0 {
            return Ok(reservation);
        }
        let free = self.free_endpoints(txn, &candidates, now).await?;
        let pace = self.peers.alone();
        let plan = plan(&self.capacity, deliveries_to, &free, |account| {
            pace && self.pacing.paces(account)
        });
        reservation.hold_back = plan.hold_back;
        for (id, (account, n)) in plan.leased {
            let permits = self.capacity.take(id, account, n);
            let room = Room {
                account,
                reserved: n,
                leased: 0,
                permits,
            };
            reservation.rooms.insert(id, room);
        }
        Ok(reservation)
    }

    /// As if `n` deliveries of the endpoint (of `account`) this process held were sent.
    #[cfg(test)]
    pub fn sent(&self, endpoint: Uuid, account: Uuid, n: usize) {
        self.capacity.give_back(endpoint, account, n);
    }

    /// Waits until `account` and the process have room for a round of requests again after
    /// the dispatcher stopped for it, or [`PACE_WAIT`]; then the account's deliveries stop
    /// holding the dispatcher back for [`PACE_PAUSE`].
    pub async fn room_for(&self, account: Uuid) {
        self.metrics.held_back();
        let capacity = &self.capacity;
        // A round: the account's share of the requests in flight.
        let enough = capacity.per_account;
        let deadline = tokio::time::Instant::now() + PACE_WAIT;
        loop {
            if capacity.account_room(account) >= enough && capacity.total_room() >= enough {
                return;
            }
            let freed = capacity.freed_for_dispatch.notified();
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                self.pacing.pause(account);
                self.metrics.paused();
                return;
            }
        }
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
    /// Where the batch is to stop, if anywhere (see [`Pacing`]).
    pub fn hold_back(&self) -> Option<HoldBack> {
        self.hold_back
    }

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
        self.direct.metrics.leased_by_dispatcher(jobs.len());
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

    use std::collections::HashSet;

    use super::{Capacity, plan, request_window, share};
    use crate::webhooks::deliver::DeliverySettings;

    /// 2 requests per endpoint and 4 overall, 8 rounds ahead: 16 claimed per endpoint, 32 in
    /// all, 28 of them by one account.
    fn small() -> Capacity {
        Capacity::new(&DeliverySettings {
            schedule: vec![5],
            allow_private: false,
            disable_after: Duration::from_secs(60),
            per_endpoint: 2,
            concurrency: 4,
            lease: Duration::from_secs(120),
        })
    }

    #[test]
    fn a_batch_leases_in_order_and_stops_where_its_account_runs_out_of_room() {
        let capacity = small();
        let account = Uuid::new_v4();
        let endpoints: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        // 10 events to each of the 4 endpoints: 40 deliveries, room for 28.
        let deliveries: Vec<(Uuid, Uuid)> = (0..10)
            .flat_map(|_| endpoints.iter().map(|e| (*e, account)))
            .collect();
        let free: HashSet<Uuid> = endpoints.iter().copied().collect();
        let planned = plan(&capacity, &deliveries, &free, |_| true);
        let leased: usize = planned.leased.values().map(|(_, n)| n).sum();
        assert_eq!(leased, 28);
        let hold = planned.hold_back.expect("held back");
        assert_eq!((hold.at, hold.account), (28, account));
        let unpaced = plan(&capacity, &deliveries, &free, |_| false);
        assert!(
            unpaced.hold_back.is_none(),
            "a paused account holds nothing back"
        );
        assert_eq!(unpaced.leased.values().map(|(_, n)| n).sum::<usize>(), 28);
    }

    #[test]
    fn an_endpoint_without_room_or_a_process_without_any_holds_nothing_back() {
        let capacity = small();
        let (account, full, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        capacity.take(full, account, 16);
        let deliveries = [(full, account), (other, account), (full, account)];
        let free = HashSet::from([full, other]);
        let planned = plan(&capacity, &deliveries, &free, |_| true);
        assert!(
            planned.hold_back.is_none(),
            "a slow receiver paces no other"
        );
        assert_eq!(planned.leased.get(&other), Some(&(account, 1)));
        assert!(!planned.leased.contains_key(&full));
        // All the account's room taken: nothing leased, so nothing held back either (the
        // process may be stalled; the batch goes unleased to the claimer).
        capacity.take(other, account, 12);
        let planned = plan(&capacity, &deliveries, &free, |_| true);
        assert!(planned.leased.is_empty() && planned.hold_back.is_none());
    }

    #[test]
    fn another_account_is_leased_before_the_batch_stops_for_one_without_room() {
        let capacity = small();
        let (busy, other) = (Uuid::new_v4(), Uuid::new_v4());
        let (busy_endpoint, other_endpoint) = (Uuid::new_v4(), Uuid::new_v4());
        capacity.take(Uuid::new_v4(), busy, 16);
        capacity.take(Uuid::new_v4(), busy, 12);
        let deliveries = [
            (other_endpoint, other),
            (busy_endpoint, busy),
            (other_endpoint, other),
        ];
        let free = HashSet::from([busy_endpoint, other_endpoint]);
        let planned = plan(&capacity, &deliveries, &free, |_| true);
        assert_eq!(planned.leased.get(&other_endpoint), Some(&(other, 1)));
        let hold = planned.hold_back.expect("held back");
        assert_eq!((hold.at, hold.account), (1, busy));
        let elsewhere = plan(
            &capacity,
            &deliveries,
            &HashSet::from([other_endpoint]),
            |_| true,
        );
        assert!(
            elsewhere.hold_back.is_none(),
            "an endpoint another process serves holds nothing back"
        );
        assert_eq!(elsewhere.leased.get(&other_endpoint), Some(&(other, 2)));
    }

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
