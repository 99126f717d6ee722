//! The dispatcher: turns stored events into deliveries, one per enabled endpoint of the
//! event's account that accepts its type (and, for a connection's event, whose type the
//! connection sends). Its position moves in the same transaction as the deliveries it
//! creates, so no event is skipped or routed twice across crashes and restarts.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect, sea_query::Expr,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{LINGER, deliver::Handoff, event_types, pending_delivery};
use crate::{connections, db::Db, error::AppResult, events::EventType};
use entity::{connection, event, webhook_delivery, webhook_dispatch, webhook_endpoint};

const BATCH: u64 = 500;

/// Event types each connection sends to webhooks, looked up once per batch.
#[derive(Default)]
pub struct ConnectionTypes(HashMap<Uuid, Vec<EventType>>);

/// Whether the endpoint wants this event.
pub async fn wants(
    db: &impl ConnectionTrait,
    endpoint: &webhook_endpoint::Model,
    event: &event::Model,
    cache: &mut ConnectionTypes,
) -> AppResult<bool> {
    let event_type = event.event_type;
    if event_type == EventType::WebhookTest {
        return Ok(false);
    }
    let accepted = event_types(endpoint)?;
    if !accepted.is_empty() && !accepted.contains(&event_type) {
        return Ok(false);
    }
    let Some(connection_id) = event.connection_id else {
        return Ok(true);
    };
    if let Some(types) = cache.0.get(&connection_id) {
        return Ok(types.contains(&event_type));
    }
    let found = connection::Entity::find_by_id(connection_id)
        .one(db)
        .await?;
    let types = found
        .map(|c| connections::webhook_event_types(&c))
        .transpose()?
        .unwrap_or_default();
    let wanted = types.contains(&event_type);
    cache.0.insert(connection_id, types);
    Ok(wanted)
}

pub struct Dispatcher {
    pub db: Db,
    /// Wakes the delivery workers when deliveries were created for them to claim.
    pub deliveries: Arc<Notify>,
    /// This process's delivery workers, when they run: first attempts are created leased to
    /// them and handed over.
    pub handoff: Option<Handoff>,
}

impl Dispatcher {
    pub async fn run(self, commits: Arc<Notify>, shutdown: CancellationToken) {
        loop {
            match self.dispatch_batch().await {
                Ok(n) if n as u64 == BATCH => continue,
                Ok(_) => {}
                Err(err) => tracing::error!(error = %err, "webhook dispatch failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = commits.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(LINGER) => {}
            }
        }
    }

    /// A read without the write lock: most wake-ups (commits without events) need nothing.
    async fn has_new_events(&self) -> AppResult<bool> {
        let db = self.db.conn();
        let last = webhook_dispatch::Entity::find_by_id(1)
            .one(db)
            .await?
            .map_or(0, |row| row.last_position);
        let next = event::Entity::find()
            .filter(event::Column::Position.gt(last))
            .one(db)
            .await?;
        Ok(next.is_some())
    }

    /// Routes the next batch of events; returns how many events it read.
    pub async fn dispatch_batch(&self) -> AppResult<usize> {
        if !self.has_new_events().await? {
            return Ok(0);
        }
        let txn = self.db.begin_write().await?;
        // Locks the position row first: one dispatcher at a time across processes.
        let last = webhook_dispatch::Entity::update_many()
            .col_expr(
                webhook_dispatch::Column::LastPosition,
                Expr::col(webhook_dispatch::Column::LastPosition),
            )
            .filter(webhook_dispatch::Column::Id.eq(1))
            .exec_with_returning(&*txn)
            .await?
            .first()
            .map_or(0, |row| row.last_position);
        let batch = event::Entity::find()
            .filter(event::Column::Position.gt(last))
            .order_by_asc(event::Column::Position)
            .limit(BATCH)
            .all(&*txn)
            .await?;
        let Some(newest) = batch.last().map(|e| e.position) else {
            return Ok(0);
        };
        let accounts: HashSet<Uuid> = batch.iter().map(|e| e.account_id).collect();
        let mut endpoints: HashMap<Uuid, Vec<Arc<webhook_endpoint::Model>>> = HashMap::new();
        for endpoint in webhook_endpoint::Entity::find()
            .filter(webhook_endpoint::Column::AccountId.is_in(accounts))
            .filter(webhook_endpoint::Column::Enabled.eq(true))
            .all(&*txn)
            .await?
        {
            endpoints
                .entry(endpoint.account_id)
                .or_default()
                .push(Arc::new(endpoint));
        }
        let mut cache = ConnectionTypes::default();
        // (endpoint, event) pairs in event order.
        let mut routed = Vec::new();
        // Deliveries per endpoint, in the order the endpoints first appear.
        let mut per_endpoint: Vec<(Uuid, usize)> = Vec::new();
        let mut slot: HashMap<Uuid, usize> = HashMap::new();
        for event in batch.iter().cloned().map(Arc::new) {
            for endpoint in endpoints.get(&event.account_id).into_iter().flatten() {
                if wants(&*txn, endpoint, &event, &mut cache).await? {
                    let at = *slot.entry(endpoint.id).or_insert_with(|| {
                        per_endpoint.push((endpoint.id, 0));
                        per_endpoint.len() - 1
                    });
                    per_endpoint[at].1 += 1;
                    routed.push((endpoint.clone(), event.clone()));
                }
            }
        }
        let reservation = match &self.handoff {
            Some(handoff) if !routed.is_empty() => {
                Some(handoff.reserve(&*txn, &per_endpoint).await?)
            }
            _ => None,
        };
        let mut to_lease: HashMap<Uuid, usize> = per_endpoint
            .iter()
            .map(|(id, _)| (*id, reservation.as_ref().map_or(0, |r| r.leased(*id))))
            .collect();
        let lease = reservation.as_ref().map(|r| r.lease());
        let now = Utc::now();
        let (mut leased, mut unleased) = (Vec::new(), 0);
        let mut rows = Vec::with_capacity(routed.len());
        for (endpoint, event) in routed {
            let mut delivery = pending_delivery(&endpoint, event.position, now);
            let left = to_lease.get_mut(&endpoint.id).filter(|n| **n > 0);
            match (left, &lease) {
                (Some(left), Some((worker, until))) => {
                    *left -= 1;
                    delivery.locked_by = Some(worker.clone());
                    delivery.locked_until = Some(*until);
                    leased.push((delivery.clone(), endpoint, event));
                }
                _ => unleased += 1,
            }
            rows.push(delivery.into_active_model().reset_all());
        }
        for chunk in rows.chunks(500) {
            webhook_delivery::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(&*txn)
                .await?;
        }
        webhook_dispatch::Entity::update_many()
            .col_expr(webhook_dispatch::Column::LastPosition, Expr::value(newest))
            .filter(webhook_dispatch::Column::Id.eq(1))
            .exec(&*txn)
            .await?;
        txn.commit().await?;
        if let Some(reservation) = reservation {
            reservation.hand_over(leased);
        }
        if unleased > 0 {
            self.deliveries.notify_one();
        }
        Ok(batch.len())
    }
}
