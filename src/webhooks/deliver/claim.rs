//! Claiming: due deliveries of every endpoint this process has room for, leased to it in one
//! write transaction and loaded with their events, become [`Claimed`] jobs for the senders.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use rand::seq::SliceRandom;
use sea_orm::{
    ColumnTrait, DbBackend, EntityTrait, QueryFilter, QuerySelect,
    sea_query::{LockBehavior, LockType},
};
use uuid::Uuid;

use super::{
    lease::{Capacity, Permits},
    peers::Peers,
};
use crate::{db, db::Db, error::AppResult, metrics::WebhookMetrics};
use entity::{event, webhook_delivery, webhook_endpoint};

/// A delivery leased to this process, ready to send.
pub struct Claimed {
    pub delivery: webhook_delivery::Model,
    pub endpoint: Arc<webhook_endpoint::Model>,
    /// `None`: the event was pruned; the attempt fails with a reason (it cannot be sent).
    pub event: Option<Arc<event::Model>>,
    /// The endpoint's and its account's permits: they bound their requests in flight.
    pub permits: Permits,
}

/// Claims due deliveries for this process (`worker`, the name on its leases).
pub struct Claimer {
    pub db: Db,
    pub worker: String,
    /// Which endpoints are this process's share.
    pub peers: Arc<Peers>,
    pub lease: Duration,
    pub capacity: Arc<Capacity>,
    pub metrics: WebhookMetrics,
}

/// A claim's SQL and values, and how many deliveries of each endpoint it may lease.
type ClaimStatement = (String, Vec<sea_orm::Value>, Vec<(Uuid, usize)>);

/// What a claim came to: the jobs, and whether this process's room kept it from claiming
/// more (then room freed by a send may let the next claim take more; otherwise only new or
/// newly due deliveries can).
pub struct Claims {
    pub jobs: Vec<Claimed>,
    pub held_by_room: bool,
}

impl Claims {
    /// No jobs; `held_by_room` as found.
    pub fn nothing(held_by_room: bool) -> Self {
        Claims {
            jobs: Vec::new(),
            held_by_room,
        }
    }
}

impl Claimer {
    /// Claims due deliveries for every endpoint with room, in one write transaction.
    pub async fn claim(&self) -> AppResult<Claims> {
        let now = Utc::now();
        let (endpoints, mut held_by_room) = self.candidates(now).await?;
        if endpoints.is_empty() {
            return Ok(Claims::nothing(held_by_room));
        }
        let mut candidates: Vec<(Uuid, Uuid)> =
            endpoints.iter().map(|e| (e.id, e.account_id)).collect();
        // Fair to every endpoint when the process-wide depth runs out (and to every account
        // by the accounts' shares, see `Capacity`).
        candidates.shuffle(&mut rand::rng());
        let until = now + chrono::Duration::from_std(self.lease).unwrap_or_default();
        let backend = self.db.conn().get_database_backend();
        let txn = self.db.begin_write().await?;
        if backend == DbBackend::Postgres {
            // One claimer per endpoint at a time across processes (on SQLite the write
            // transaction is already exclusive).
            let locked: Vec<Uuid> = webhook_endpoint::Entity::find()
                .select_only()
                .column(webhook_endpoint::Column::Id)
                .filter(webhook_endpoint::Column::Id.is_in(candidates.iter().map(|c| c.0)))
                .lock_with_behavior(LockType::NoKeyUpdate, LockBehavior::SkipLocked)
                .into_tuple()
                .all(&*txn)
                .await?;
            candidates.retain(|(id, _)| locked.contains(id));
        }
        let Some((sql, values, rooms)) = self.claim_statement(candidates, now, until) else {
            return Ok(Claims::nothing(true));
        };
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
        // An endpoint that filled its room may have more waiting; one short of it does not.
        held_by_room |= rooms
            .iter()
            .any(|(id, room)| by_endpoint.get(id).map_or(0, Vec::len) >= *room);
        let claimed = endpoints
            .into_iter()
            .filter_map(|e| {
                let rows = by_endpoint.remove(&e.id)?;
                Some((Arc::new(e), rows))
            })
            .collect();
        let jobs = self.with_events(claimed).await?;
        self.metrics.leased_by_claim(jobs.len());
        Ok(Claims { jobs, held_by_room })
    }

    /// Enabled endpoints of this process's share with due, unleased deliveries that no other
    /// process serves and this one has room for: a read without the write lock, since most
    /// rounds find nothing to do. And whether any of its share had no room.
    async fn candidates(
        &self,
        now: DateTime<Utc>,
    ) -> AppResult<(Vec<webhook_endpoint::Model>, bool)> {
        let backend = self.db.conn().get_database_backend();
        let values = [
            now.into(),
            now.into(),
            now.into(),
            self.worker.clone().into(),
        ];
        let mut held_by_room = false;
        let endpoints = webhook_endpoint::Entity::find()
            .from_raw_sql(db::statement(backend, CANDIDATES, values))
            .all(self.db.conn())
            .await?
            .into_iter()
            .filter(|e| self.peers.serves(e.id))
            .filter(|e| {
                let room = self.capacity.room(e.id, e.account_id) > 0;
                held_by_room |= !room;
                room
            })
            .collect();
        Ok((endpoints, held_by_room))
    }

    /// One statement leasing each endpoint's share of the room left (`candidates`: endpoint
    /// and account ids), and how many it may lease of each; `None` when no endpoint has room.
    fn claim_statement(
        &self,
        candidates: Vec<(Uuid, Uuid)>,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Option<ClaimStatement> {
        let mut total = self.capacity.total_room();
        let (mut parts, mut values) = (Vec::new(), vec![self.worker.clone().into(), until.into()]);
        let mut accounts: HashMap<Uuid, usize> = HashMap::new();
        let mut rooms = Vec::new();
        for (id, account) in candidates {
            let account_room = accounts
                .entry(account)
                .or_insert_with(|| self.capacity.account_room(account));
            let room = self
                .capacity
                .room(id, account)
                .min(total)
                .min(*account_room);
            if room == 0 {
                continue;
            }
            total -= room;
            *account_room -= room;
            rooms.push((id, room));
            parts.push(format!("SELECT id FROM ({CLAIM_ONE}) AS c{}", parts.len()));
            values.extend([
                id.into(),
                now.into(),
                now.into(),
                now.into(),
                self.worker.clone().into(),
                (room as i64).into(),
            ]);
        }
        if parts.is_empty() {
            return None;
        }
        let sql = format!(
            "UPDATE webhook_deliveries SET locked_by = ?, locked_until = ? WHERE id IN ({}) \
             RETURNING *",
            parts.join(" UNION ALL ")
        );
        Some((sql, values, rooms))
    }

    /// Loads the claimed deliveries' events and takes their room.
    async fn with_events(
        &self,
        claimed: Vec<(Arc<webhook_endpoint::Model>, Vec<webhook_delivery::Model>)>,
    ) -> AppResult<Vec<Claimed>> {
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
            let permits = self
                .capacity
                .take(endpoint.id, endpoint.account_id, rows.len());
            jobs.extend(rows.into_iter().map(|delivery| Claimed {
                event: events.get(&delivery.event_position).cloned(),
                endpoint: endpoint.clone(),
                permits: permits.clone(),
                delivery,
            }));
        }
        Ok(jobs)
    }
}

/// Enabled endpoints with due, unleased deliveries that no other process is serving.
const CANDIDATES: &str = concat!(
    "SELECT e.* FROM webhook_endpoints e WHERE e.enabled \
     AND EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.endpoint_id = e.id AND ",
    due_unleased!(),
    ") AND NOT ",
    leased_elsewhere!("e.id")
);

/// Up to n due deliveries of one enabled endpoint, unless another process serves it.
const CLAIM_ONE: &str = concat!(
    "SELECT d.id FROM webhook_deliveries d WHERE d.endpoint_id = ? AND ",
    due_unleased!(),
    " AND EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.id = d.endpoint_id AND e.enabled) \
     AND NOT ",
    leased_elsewhere!("d.endpoint_id"),
    " ORDER BY d.next_attempt_at LIMIT ?"
);
