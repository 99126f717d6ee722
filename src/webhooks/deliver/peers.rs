//! The processes whose delivery workers run ([`Peers`]), and the share of the endpoints each
//! one serves.
//!
//! Each process writes its row in `webhook_workers` about once a second from its claim loop
//! ([`HEARTBEAT`]), marking itself alive for [`ALIVE`], and reads which others are alive. An
//! endpoint belongs to the live process that ranks highest for it (rendezvous hashing: a
//! hash of the process's name and the endpoint's id, [`owner`]): every process computes the
//! same split from the same list, without talking to the others, and when a process starts or
//! stops only its own share of the endpoints moves. A process claims (and its dispatcher
//! leases first attempts for) only the endpoints of its share; the deliveries its dispatcher
//! routes to the others' are left to their claimers, which are woken for them.
//!
//! This is a preference, not what keeps two processes from serving one endpoint at once: the
//! leases still do that (`leased_elsewhere`). While the processes' lists differ (for up to a
//! heartbeat after one starts, or [`ALIVE`] after one dies) two may claim for the same
//! endpoint, and the leases decide as before; an endpoint whose process has stopped waits at
//! most that long for another to take it up. A process that knows of no other, or cannot
//! read the list, serves every endpoint, as a single process does.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::Utc;
use sea_orm::{
    ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, sea_query::OnConflict,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{db::Db, error::AppResult};
use entity::webhook_worker;

/// How often a process writes its row (at most; from its claim loop, which turns at least
/// every `IDLE_POLL` and linger).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a process counts as alive after it last wrote its row: several heartbeats, so
/// that a claim loop slowed by a busy database does not hand its endpoints over.
const ALIVE: Duration = Duration::from_secs(5);
/// Rows of processes that died without removing theirs are deleted after this.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// This process and the others whose delivery workers are alive, as last read.
pub struct Peers {
    me: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The other live processes' names, sorted.
    others: Vec<String>,
    /// When this process last wrote its row.
    beat_at: Option<Instant>,
}

impl Peers {
    pub fn new(me: String) -> Self {
        Self {
            me,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the endpoint is in this process's share (a hash per live process: cheap
    /// beside the claim or dispatch it is asked for).
    pub fn serves(&self, endpoint: Uuid) -> bool {
        let state = self.state();
        let workers = state.others.iter().map(String::as_str);
        state.others.is_empty() || owner(workers.chain([self.me.as_str()]), endpoint) == self.me
    }

    /// Whether this process knows of no other live one (it serves every endpoint).
    pub fn alone(&self) -> bool {
        self.state().others.is_empty()
    }

    /// Whether this process's row is to be written again.
    pub fn due(&self) -> bool {
        self.state()
            .beat_at
            .is_none_or(|at| at.elapsed() >= HEARTBEAT)
    }

    /// Writes this process's row (alive for [`ALIVE`] from now), reads which others are
    /// alive, and deletes the rows of processes long gone.
    pub async fn beat(&self, db: &Db) -> AppResult<()> {
        let now = Utc::now();
        let alive_until = now + chrono::Duration::from_std(ALIVE).unwrap_or_default();
        let forget_before = now - chrono::Duration::from_std(FORGET_AFTER).unwrap_or_default();
        let txn = db.begin_write().await?;
        webhook_worker::Entity::insert(webhook_worker::ActiveModel {
            name: sea_orm::Set(self.me.clone()),
            started_at: sea_orm::Set(now),
            alive_until: sea_orm::Set(alive_until),
        })
        .on_conflict(
            OnConflict::column(webhook_worker::Column::Name)
                .update_column(webhook_worker::Column::AliveUntil)
                .to_owned(),
        )
        .exec_without_returning(&*txn)
        .await?;
        webhook_worker::Entity::delete_many()
            .filter(webhook_worker::Column::AliveUntil.lt(forget_before))
            .exec(&*txn)
            .await?;
        let others: Vec<String> = webhook_worker::Entity::find()
            .select_only()
            .column(webhook_worker::Column::Name)
            .filter(webhook_worker::Column::AliveUntil.gte(now))
            .filter(webhook_worker::Column::Name.ne(self.me.as_str()))
            .order_by_asc(webhook_worker::Column::Name)
            .into_tuple()
            .all(&*txn)
            .await?;
        txn.commit().await?;
        let mut state = self.state();
        state.beat_at = Some(Instant::now());
        if state.others != others {
            tracing::info!(
                others = others.len(),
                "webhook delivery processes changed: endpoints split anew"
            );
            state.others = others;
        }
        Ok(())
    }

    /// Removes this process's row (its delivery workers stop): the others take its share
    /// over at their next heartbeat.
    pub async fn leave(&self, db: &Db) -> AppResult<()> {
        *self.state() = State::default();
        let txn = db.begin_write().await?;
        webhook_worker::Entity::delete_by_id(self.me.clone())
            .exec(&*txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }
}

/// The worker an endpoint belongs to: the one with the highest weight for it (ties, which
/// take a 64-bit collision, to the greater name). `workers` is not empty.
fn owner<'a>(workers: impl Iterator<Item = &'a str>, endpoint: Uuid) -> &'a str {
    workers
        .max_by_key(|worker| (weight(worker, endpoint), *worker))
        .unwrap_or_default()
}

/// A worker's weight for an endpoint: the same in every process (SHA-256, not a hasher
/// seeded per process).
fn weight(worker: &str, endpoint: Uuid) -> u64 {
    let digest = Sha256::new()
        .chain_update(worker.as_bytes())
        .chain_update([0])
        .chain_update(endpoint.as_bytes())
        .finalize();
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use uuid::Uuid;

    use super::{Peers, State, owner};

    fn peers(me: &str, others: &[&str]) -> Peers {
        let peers = Peers::new(me.to_owned());
        *peers.state() = State {
            others: others.iter().map(|o| (*o).to_owned()).collect(),
            ..State::default()
        };
        peers
    }

    #[test]
    fn alone_a_process_serves_every_endpoint() {
        let alone = Peers::new("webhook-1".into());
        assert!((0..100).all(|_| alone.serves(Uuid::new_v4())));
    }

    #[test]
    fn every_endpoint_has_one_process_and_the_shares_are_even() {
        let names = ["webhook-a", "webhook-b", "webhook-c"];
        let processes: Vec<Peers> = names
            .iter()
            .map(|me| {
                let others: Vec<&str> = names.iter().copied().filter(|n| n != me).collect();
                peers(me, &others)
            })
            .collect();
        let mut shares: HashMap<usize, usize> = HashMap::new();
        for _ in 0..3000 {
            let endpoint = Uuid::new_v4();
            let serving: Vec<usize> = (0..3).filter(|i| processes[*i].serves(endpoint)).collect();
            assert_eq!(serving.len(), 1, "one process for {endpoint}");
            *shares.entry(serving[0]).or_default() += 1;
            // Asked again, the same answer.
            assert!(processes[serving[0]].serves(endpoint));
        }
        for i in 0..3 {
            let share = shares.get(&i).copied().unwrap_or_default();
            assert!(
                (800..1200).contains(&share),
                "process {i} serves {share} of 3000"
            );
        }
    }

    #[test]
    fn when_a_process_stops_only_its_endpoints_move() {
        let endpoints: Vec<Uuid> = (0..500).map(|_| Uuid::new_v4()).collect();
        let three = ["webhook-a", "webhook-b", "webhook-c"];
        let two = ["webhook-a", "webhook-b"];
        let mut moved = 0;
        for endpoint in &endpoints {
            let before = owner(three.iter().copied(), *endpoint);
            let after = owner(two.iter().copied(), *endpoint);
            if before != "webhook-c" {
                assert_eq!(before, after, "an endpoint of a process that stays moved");
            } else {
                moved += 1;
            }
        }
        assert!(moved > 100, "the stopped process had a share ({moved})");
    }
}
