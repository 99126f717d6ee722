//! The dispatcher: turns stored events into deliveries, one per enabled endpoint of the
//! event's account that accepts its type (and, for a connection's event, whose type the
//! connection sends). Its position moves in the same transaction as the deliveries it
//! creates, so no event is skipped or routed twice across crashes and restarts.
//!
//! Routing ([`route`]) is pure: events, endpoints and the connections' event types in, the
//! deliveries to create out. `Dispatcher::dispatch_batch` reads those inputs and persists
//! what they route to.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QuerySelect, sea_query::Expr,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    LINGER,
    deliver::{DirectDispatch, HoldBack, LeasedDelivery, Reservation},
    event_types, pending_delivery,
};
use crate::{
    connections,
    db::{Db, WriteTxn},
    error::AppResult,
    events::{EventType, HORIZON, LogPosition, after_in_order},
};
use entity::{connection, event, webhook_delivery, webhook_dispatch, webhook_endpoint};

const BATCH: u64 = 500;
/// Rows read or written per statement (SQLite binds at most 32,766 values in one).
const ROWS_PER_STATEMENT: usize = 500;

/// Event types each connection sends to webhooks.
#[derive(Default)]
pub struct ConnectionTypes(HashMap<Uuid, Vec<EventType>>);

impl ConnectionTypes {
    /// Loads the types of these connections, those not loaded yet; a connection that is not
    /// found sends none.
    async fn load(
        &mut self,
        db: &impl ConnectionTrait,
        ids: impl IntoIterator<Item = Uuid>,
    ) -> AppResult<()> {
        let missing: HashSet<Uuid> = ids
            .into_iter()
            .filter(|id| !self.0.contains_key(id))
            .collect();
        let missing: Vec<Uuid> = missing.into_iter().collect();
        for chunk in missing.chunks(ROWS_PER_STATEMENT) {
            for found in connection::Entity::find()
                .filter(connection::Column::Id.is_in(chunk.to_vec()))
                .all(db)
                .await?
            {
                self.0
                    .insert(found.id, connections::webhook_event_types(&found)?);
            }
        }
        for id in missing {
            self.0.entry(id).or_default();
        }
        Ok(())
    }

    fn sends(&self, connection: Uuid, event_type: EventType) -> bool {
        self.0
            .get(&connection)
            .is_some_and(|types| types.contains(&event_type))
    }
}

/// Whether the endpoint's own filter accepts the event's type. A test event is never routed
/// (it goes only to the endpoint it was made for).
fn accepted_type(endpoint: &webhook_endpoint::Model, event: &event::Model) -> AppResult<bool> {
    if event.event_type == EventType::WebhookTest {
        return Ok(false);
    }
    let accepted = event_types(endpoint)?;
    Ok(
        (accepted.is_empty() || accepted.contains(&event.event_type))
            && (event.event_type != EventType::FlowTriggered
                || crate::events::of_flows(super::flow_ids(endpoint).as_deref(), event)),
    )
}

/// Whether the endpoint wants this event, given the types of the event's connection.
fn accepts(
    endpoint: &webhook_endpoint::Model,
    event: &event::Model,
    connections: &ConnectionTypes,
) -> AppResult<bool> {
    Ok(accepted_type(endpoint, event)?
        && event
            .connection_id
            .is_none_or(|connection| connections.sends(connection, event.event_type)))
}

/// Whether the endpoint wants this event, loading the types of its connection on first sight.
pub async fn wants(
    db: &impl ConnectionTrait,
    endpoint: &webhook_endpoint::Model,
    event: &event::Model,
    cache: &mut ConnectionTypes,
) -> AppResult<bool> {
    if !accepted_type(endpoint, event)? {
        return Ok(false);
    }
    if let Some(connection) = event.connection_id {
        cache.load(db, [connection]).await?;
    }
    accepts(endpoint, event, cache)
}

/// Enabled endpoints, by account.
pub type EndpointsByAccount = HashMap<Uuid, Vec<Arc<webhook_endpoint::Model>>>;

/// One delivery to create: this event to this endpoint.
pub struct Route {
    pub endpoint: Arc<webhook_endpoint::Model>,
    pub event: Arc<event::Model>,
}

/// Routes a batch of events, with no IO: one delivery per event and enabled endpoint of the
/// event's account that wants it, in event order (and for one event in the endpoints'
/// order). `connections` holds the types of every connection the events come from. An
/// endpoint gets only events that occurred once it existed: one created while the
/// dispatcher was behind (say, after a restart) is not sent the backlog before it, which
/// `replayWebhooks` sends on request.
pub fn route(
    events: &[Arc<event::Model>],
    endpoints: &EndpointsByAccount,
    connections: &ConnectionTypes,
) -> AppResult<Vec<Route>> {
    let mut routes = Vec::new();
    for event in events {
        for endpoint in endpoints.get(&event.account_id).into_iter().flatten() {
            if event.occurred_at >= endpoint.created_at && accepts(endpoint, event, connections)? {
                routes.push(Route {
                    endpoint: endpoint.clone(),
                    event: event.clone(),
                });
            }
        }
    }
    Ok(routes)
}

/// What a dispatcher's turn came to.
enum Batch {
    /// It routed this many events (none: nothing new).
    Read(usize),
    /// It routed this many events and stopped before the others for this account's room,
    /// which its process's senders will free (`Pacing`).
    HeldBack(usize, Uuid),
    /// Another process's dispatcher holds the position (PostgreSQL).
    OtherAtWork,
}

/// How long a dispatcher that found another process's at work waits before it looks again.
const STAND_BACK: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct Dispatcher {
    pub db: Db,
    /// Wakes the delivery workers when deliveries were created for them to claim.
    pub deliveries: Arc<Notify>,
    /// This process's delivery workers, when they run: first attempts are created leased to
    /// them and passed to them directly.
    pub direct: Option<DirectDispatch>,
}

impl Dispatcher {
    pub async fn run(self, commits: Arc<Notify>, shutdown: CancellationToken) {
        loop {
            match self.dispatch().await {
                Ok(Batch::Read(n)) if n as u64 == BATCH => continue,
                Ok(Batch::Read(_)) => {}
                Ok(Batch::HeldBack(_, account)) => {
                    if let Some(direct) = &self.direct {
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = direct.room_for(account) => {}
                        }
                    }
                    continue;
                }
                Ok(Batch::OtherAtWork) => {
                    // The other process's dispatcher reads on until it finds no more, and
                    // wakes on every commit as this one does: this one stands back for a
                    // while rather than try again on every commit (it takes over within
                    // that while of the other's process ending, which releases the row).
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(STAND_BACK) => {}
                    }
                }
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

    /// A read without the write lock, one statement: most wake-ups (commits without events)
    /// need nothing. Whether an event lies past the dispatcher's position that a reader may
    /// pass (on PostgreSQL, below the horizon: as `after_in_order` reads).
    async fn has_new_events(&self) -> AppResult<bool> {
        let db = self.db.conn();
        let backend = db.get_database_backend();
        let sql = match backend {
            // `LATERAL … ORDER BY … LIMIT 1`: the position's values become the bounds of a
            // scan of the (txid, position) index, which stops at the first event.
            sea_orm::DbBackend::Postgres => format!(
                "SELECT EXISTS (SELECT 1 FROM webhook_dispatch w, LATERAL (SELECT 1 FROM events \
                 WHERE (events.txid, events.position) > (w.last_txid, w.last_position) \
                 AND events.txid < {HORIZON} ORDER BY events.txid, events.position LIMIT 1) e \
                 WHERE w.id = 1) AS new"
            ),
            _ => "SELECT EXISTS (SELECT 1 FROM events WHERE events.position > \
                  (SELECT last_position FROM webhook_dispatch WHERE id = 1)) AS new"
                .to_owned(),
        };
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(backend, sql))
            .await?;
        Ok(row
            .map(|row| row.try_get::<bool>("", "new"))
            .transpose()?
            .unwrap_or(false))
    }

    /// Routes the next batch of events; returns how many events it read.
    pub async fn dispatch_batch(&self) -> AppResult<usize> {
        Ok(match self.dispatch().await? {
            Batch::Read(n) | Batch::HeldBack(n, _) => n,
            Batch::OtherAtWork => 0,
        })
    }

    async fn dispatch(&self) -> AppResult<Batch> {
        if !self.has_new_events().await? {
            return Ok(Batch::Read(0));
        }
        let txn = self.db.begin_write().await?;
        let Some(last) = lock_position(&*txn).await? else {
            return Ok(Batch::OtherAtWork);
        };
        let events: Vec<Arc<event::Model>> =
            after_in_order(txn.get_database_backend(), event::Entity::find(), last)
                .limit(BATCH)
                .all(&*txn)
                .await?
                .into_iter()
                .map(Arc::new)
                .collect();
        let Some(mut newest) = events.last().map(|e| LogPosition::of(e)) else {
            return Ok(Batch::Read(0));
        };
        let endpoints = enabled_endpoints(&*txn, &events).await?;
        let mut connections = ConnectionTypes::default();
        let routed_connections = events
            .iter()
            .filter(|e| endpoints.contains_key(&e.account_id))
            .filter_map(|e| e.connection_id);
        connections.load(&*txn, routed_connections).await?;
        let mut routes = route(&events, &endpoints, &connections)?;
        let reservation = match &self.direct {
            Some(direct) => {
                let deliveries_to: Vec<(Uuid, Uuid)> = routes
                    .iter()
                    .map(|r| (r.endpoint.id, r.endpoint.account_id))
                    .collect();
                Some(direct.reserve(&*txn, &deliveries_to).await?)
            }
            None => None,
        };
        let mut read = events.len();
        let mut held_back_for = None;
        if let Some(hold) = reservation.as_ref().and_then(Reservation::hold_back)
            && let Some(kept) = held_back(&events, &routes, hold)
        {
            routes.truncate(kept.routes);
            newest = LogPosition::of(&events[kept.events - 1]);
            read = kept.events;
            held_back_for = Some(hold.account);
        }
        self.persist(txn, routes, reservation, newest).await?;
        Ok(match held_back_for {
            Some(account) => Batch::HeldBack(read, account),
            None => Batch::Read(read),
        })
    }

    /// Creates the routed deliveries and moves the position to `newest`, in the batch's
    /// transaction. First attempts this process has room for are created leased to its
    /// senders and passed to them after the commit; the claimer is woken for the others.
    async fn persist(
        &self,
        txn: WriteTxn,
        routes: Vec<Route>,
        mut reservation: Option<Reservation<'_>>,
        newest: LogPosition,
    ) -> AppResult<()> {
        let now = Utc::now();
        let (mut leased, mut unleased) = (Vec::new(), 0);
        let mut rows = Vec::with_capacity(routes.len());
        for Route { endpoint, event } in routes {
            let mut delivery = pending_delivery(&endpoint, event.position, now);
            if reservation
                .as_mut()
                .is_some_and(|r| r.try_lease(&mut delivery))
            {
                leased.push(LeasedDelivery {
                    delivery: delivery.clone(),
                    endpoint,
                    event,
                });
            } else {
                unleased += 1;
            }
            rows.push(delivery.into_active_model().reset_all());
        }
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            webhook_delivery::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(&*txn)
                .await?;
        }
        if unleased > 0 {
            // The endpoint's deliveries may be served by another process's workers, which
            // learn of these from this rather than from their next poll.
            txn.announce(
                crate::events::feed::CHANNEL,
                crate::events::feed::DELIVERIES_QUEUED.to_owned(),
            );
        }
        webhook_dispatch::Entity::update_many()
            .col_expr(
                webhook_dispatch::Column::LastPosition,
                Expr::value(newest.position),
            )
            .col_expr(webhook_dispatch::Column::LastTxid, Expr::value(newest.txid))
            .filter(webhook_dispatch::Column::Id.eq(1))
            .exec(&*txn)
            .await?;
        txn.commit().await?;
        if let Some(reservation) = reservation {
            reservation.pass_to_senders(leased);
        }
        if unleased > 0 {
            self.deliveries.notify_one();
        }
        Ok(())
    }
}

/// How much of a batch a dispatcher keeps when it holds back: events and routes.
struct Kept {
    events: usize,
    routes: usize,
}

/// What of the batch comes before the event of the delivery held back (`hold.at`, an index
/// into `routes`), or the first event alone when it is that one: `None` when that is the
/// whole batch.
fn held_back(events: &[Arc<event::Model>], routes: &[Route], hold: HoldBack) -> Option<Kept> {
    let index: HashMap<i64, usize> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e.position, i))
        .collect();
    let event_of = |route: &Route| index.get(&route.event.position).copied();
    let kept = event_of(routes.get(hold.at)?)?.max(1);
    if kept >= events.len() {
        return None;
    }
    // The routes are in event order: those of the kept events come first.
    let routes_kept = routes
        .iter()
        .take_while(|r| event_of(r).is_some_and(|i| i < kept))
        .count();
    Some(Kept {
        events: kept,
        routes: routes_kept,
    })
}

/// Locks the position row and reads it: one dispatcher at a time across processes. On
/// PostgreSQL `None` when another process's dispatcher holds it: rather than wait for it
/// (holding a connection) only to find the events it waited for routed, this one lets it be.
async fn lock_position(txn: &impl ConnectionTrait) -> AppResult<Option<LogPosition>> {
    let of = |row: &webhook_dispatch::Model| LogPosition {
        txid: row.last_txid,
        position: row.last_position,
    };
    if txn.get_database_backend() == sea_orm::DbBackend::Postgres {
        let row = webhook_dispatch::Entity::find_by_id(1)
            .lock_with_behavior(
                sea_orm::sea_query::LockType::Update,
                sea_orm::sea_query::LockBehavior::SkipLocked,
            )
            .one(txn)
            .await?;
        // The row exists from the first migration on: none here means another holds it.
        return Ok(row.as_ref().map(of));
    }
    // SQLite: the transaction already holds the database's write lock.
    Ok(Some(
        webhook_dispatch::Entity::update_many()
            .col_expr(
                webhook_dispatch::Column::LastPosition,
                Expr::col(webhook_dispatch::Column::LastPosition),
            )
            .filter(webhook_dispatch::Column::Id.eq(1))
            .exec_with_returning(txn)
            .await?
            .first()
            .map_or_else(LogPosition::default, of),
    ))
}

/// The enabled endpoints of the events' accounts.
async fn enabled_endpoints(
    txn: &impl ConnectionTrait,
    events: &[Arc<event::Model>],
) -> AppResult<EndpointsByAccount> {
    let accounts: HashSet<Uuid> = events.iter().map(|e| e.account_id).collect();
    let mut endpoints = EndpointsByAccount::new();
    for endpoint in webhook_endpoint::Entity::find()
        .filter(webhook_endpoint::Column::AccountId.is_in(accounts))
        .filter(webhook_endpoint::Column::Enabled.eq(true))
        .all(txn)
        .await?
    {
        endpoints
            .entry(endpoint.account_id)
            .or_default()
            .push(Arc::new(endpoint));
    }
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, sync::Arc};

    use chrono::Utc;
    use serde_json::json;
    use uuid::Uuid;

    use super::{ConnectionTypes, EndpointsByAccount, HoldBack, held_back, route};
    use crate::events::EventType;
    use entity::{event, webhook_endpoint};

    fn endpoint(account_id: Uuid, types: &[&str]) -> Arc<webhook_endpoint::Model> {
        Arc::new(webhook_endpoint::Model {
            id: Uuid::new_v4(),
            account_id,
            url: "https://example.com/hook".into(),
            description: None,
            event_types: json!(types),
            flow_ids: None,
            enabled: true,
            disabled_reason: None,
            secret: Vec::new(),
            previous_secret: None,
            previous_secret_until: None,
            failing_since: None,
            // Before any event the tests make.
            created_at: Utc::now() - chrono::Duration::hours(1),
        })
    }

    fn event(
        position: i64,
        account_id: Uuid,
        event_type: &str,
        connection_id: Option<Uuid>,
    ) -> Arc<event::Model> {
        Arc::new(event::Model {
            position,
            id: Uuid::new_v4(),
            account_id,
            customer_id: None,
            connection_id,
            event_type: sea_orm::ActiveEnum::try_from_value(&event_type.to_owned()).unwrap(),
            data: json!({}),
            occurred_at: Utc::now(),
            txid: 0,
        })
    }

    fn by_account(endpoints: &[&Arc<webhook_endpoint::Model>]) -> EndpointsByAccount {
        let mut by_account = EndpointsByAccount::new();
        for endpoint in endpoints {
            by_account
                .entry(endpoint.account_id)
                .or_default()
                .push(Arc::clone(endpoint));
        }
        by_account
    }

    /// The routes as (event position, endpoint id), in order.
    fn routed(
        events: &[Arc<event::Model>],
        endpoints: &EndpointsByAccount,
        connections: &ConnectionTypes,
    ) -> Vec<(i64, Uuid)> {
        route(events, endpoints, connections)
            .unwrap()
            .iter()
            .map(|r| (r.event.position, r.endpoint.id))
            .collect()
    }

    #[test]
    fn each_event_goes_to_every_endpoint_of_its_account_in_event_order() {
        let (mine, theirs) = (Uuid::new_v4(), Uuid::new_v4());
        let (first, second, other) = (
            endpoint(mine, &[]),
            endpoint(mine, &[]),
            endpoint(theirs, &[]),
        );
        let endpoints = by_account(&[&first, &second, &other]);
        let events = [
            event(1, mine, "credits.changed", None),
            event(2, theirs, "credits.changed", None),
            event(3, mine, "system.error", None),
            event(4, Uuid::new_v4(), "credits.changed", None),
        ];
        assert_eq!(
            routed(&events, &endpoints, &ConnectionTypes::default()),
            [
                (1, first.id),
                (1, second.id),
                (2, other.id),
                (3, first.id),
                (3, second.id)
            ]
        );
    }

    #[test]
    fn an_endpoint_gets_only_the_types_it_asked_for_and_never_a_test_event() {
        let account = Uuid::new_v4();
        let picky = endpoint(account, &["sync.failed"]);
        let endpoints = by_account(&[&picky]);
        let events = [
            event(1, account, "sync.completed", None),
            event(2, account, "sync.failed", None),
            event(3, account, "webhook.test", None),
        ];
        assert_eq!(
            routed(&events, &endpoints, &ConnectionTypes::default()),
            [(2, picky.id)]
        );
        let all = endpoint(account, &[]);
        assert_eq!(
            routed(&events, &by_account(&[&all]), &ConnectionTypes::default()),
            [(1, all.id), (2, all.id)],
            "an empty filter takes every type but test and unknown events"
        );
    }

    #[test]
    fn an_endpoint_is_not_sent_what_happened_before_it_existed() {
        let account = Uuid::new_v4();
        let before = event(1, account, "credits.changed", None);
        let mut later = endpoint(account, &[]);
        Arc::make_mut(&mut later).created_at =
            before.occurred_at + chrono::Duration::milliseconds(1);
        let after = Arc::new(event::Model {
            position: 2,
            occurred_at: later.created_at,
            ..(*before).clone()
        });
        assert_eq!(
            routed(
                &[before, after],
                &by_account(&[&later]),
                &ConnectionTypes::default()
            ),
            [(2, later.id)]
        );
    }

    #[test]
    fn a_connections_event_goes_out_only_when_the_connection_sends_its_type() {
        let account = Uuid::new_v4();
        let (quiet, chatty, gone) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let all = endpoint(account, &[]);
        let endpoints = by_account(&[&all]);
        let connections = ConnectionTypes(HashMap::from([
            (quiet, vec![]),
            (
                chatty,
                vec![EventType::SyncCompleted, EventType::SyncFailed],
            ),
        ]));
        let events = [
            event(1, account, "sync.completed", Some(quiet)),
            event(2, account, "sync.completed", Some(chatty)),
            event(3, account, "records.changed", Some(chatty)),
            event(4, account, "sync.failed", Some(gone)),
            event(5, account, "credits.changed", None),
        ];
        assert_eq!(
            routed(&events, &endpoints, &connections),
            [(2, all.id), (5, all.id)]
        );
    }

    #[test]
    fn a_batch_held_back_keeps_the_events_before_the_one_held_or_the_first_alone() {
        let account = Uuid::new_v4();
        let (a, b) = (endpoint(account, &["sync.failed"]), endpoint(account, &[]));
        let endpoints = by_account(&[&a, &b]);
        // Routes: 1→a, 1→b, 2→b, 3→a, 3→b (event 2 goes to b alone).
        let events = [
            event(1, account, "sync.failed", None),
            event(2, account, "credits.changed", None),
            event(3, account, "sync.failed", None),
        ];
        let connections = ConnectionTypes::default();
        let routes = route(&events, &endpoints, &connections).unwrap();
        assert_eq!(routes.len(), 5);
        let kept = |at: usize| {
            held_back(&events, &routes, HoldBack { at, account }).map(|k| (k.events, k.routes))
        };
        assert_eq!(kept(3), Some((2, 3)), "before event 3");
        assert_eq!(
            kept(4),
            Some((2, 3)),
            "event 3's second delivery: all of it goes"
        );
        assert_eq!(kept(2), Some((1, 2)), "before event 2");
        assert_eq!(kept(1), Some((1, 2)), "the first event goes whole");
        let one = &events[..1];
        let its_routes = route(one, &endpoints, &connections).unwrap();
        assert!(
            held_back(one, &its_routes, HoldBack { at: 1, account }).is_none(),
            "a batch of one event is kept whole"
        );
    }
}

/// The dispatcher against a database, with this process's delivery workers' room (their
/// senders not running: room is freed by hand).
#[cfg(test)]
mod pacing_tests {
    use std::{sync::Arc, time::Duration};

    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    use serde_json::json;

    use super::Dispatcher;
    use crate::{
        accounts,
        config::Config,
        crypto::Cipher,
        db::Db,
        events::{self, EventType, NewEvent},
        webhooks::{
            self, EndpointInput,
            deliver::{DeliverySettings, DeliveryWorkers},
        },
    };
    use entity::webhook_delivery;

    async fn migrated_sqlite() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        let file = dir.path().join("pacing.db");
        config.database.url = format!("sqlite://{}?mode=rwc", file.display());
        let db = Db::connect(&config).await.unwrap();
        db.migrate().await.unwrap();
        (dir, db)
    }

    /// Deliveries created leased to a process, and unleased.
    async fn deliveries(db: &Db) -> (u64, u64) {
        let count = |leased: bool| {
            let column = webhook_delivery::Column::LockedBy;
            let filter = if leased {
                column.is_not_null()
            } else {
                column.is_null()
            };
            webhook_delivery::Entity::find()
                .filter(filter)
                .count(db.conn())
        };
        (count(true).await.unwrap(), count(false).await.unwrap())
    }

    #[tokio::test]
    async fn a_backlog_is_read_as_far_as_there_is_room_and_a_stalled_account_holds_back_nothing() {
        let (_dir, db) = migrated_sqlite().await;
        let cipher = Cipher::new(&[7u8; 32]);
        let account = accounts::create_account(&db, "pacing", 0)
            .await
            .unwrap()
            .account
            .id;
        let mut endpoints = Vec::new();
        for i in 0..3 {
            let input = EndpointInput {
                url: Some(format!("http://127.0.0.1:9/hook/{i}")),
                description: None,
                event_types: None,
                flow_ids: None,
                enabled: None,
            };
            let (endpoint, _) = webhooks::create(&db, &cipher, account, input, true)
                .await
                .unwrap();
            endpoints.push(endpoint.id);
        }
        let txn = db.begin_write().await.unwrap();
        let backlog = (0..100).map(|_| NewEvent {
            account_id: account,
            customer_id: None,
            connection_id: None,
            event_type: EventType::CreditsChanged,
            data: json!({}),
        });
        events::record(&*txn, backlog.collect()).await.unwrap();
        txn.commit().await.unwrap();
        // 2 requests per endpoint and 4 overall, 8 rounds ahead: room for 16 deliveries per
        // endpoint and 28 of one account; a round is 3.
        let settings = DeliverySettings {
            schedule: vec![5],
            allow_private: true,
            disable_after: Duration::from_secs(60),
            per_endpoint: 2,
            concurrency: 4,
            lease: Duration::from_secs(120),
        };
        let metrics = crate::metrics::WebhookMetrics::new();
        let workers = DeliveryWorkers::new(db.clone(), cipher, settings, Arc::default(), metrics);
        let direct = workers.direct_dispatch();
        let dispatcher = Dispatcher {
            db: db.clone(),
            deliveries: Arc::default(),
            direct: Some(direct.clone()),
        };

        // Room for 28: nine events of three deliveries (the tenth's would not all fit).
        assert_eq!(dispatcher.dispatch_batch().await.unwrap(), 9);
        assert_eq!(deliveries(&db).await, (27, 0), "all created leased");
        // Three of each endpoint's sent: room for 10 more, three events' worth.
        for endpoint in &endpoints {
            direct.sent(*endpoint, account, 3);
        }
        assert_eq!(dispatcher.dispatch_batch().await.unwrap(), 3);
        assert_eq!(deliveries(&db).await, (36, 0));
        // Nothing more is sent: the account's room does not come back, and then it holds
        // nothing back (its receivers may have stalled; another account's events must not
        // wait behind its): the rest is created at once, unleased but for the room left.
        let waited = std::time::Instant::now();
        direct.room_for(account).await;
        assert!(waited.elapsed() >= Duration::from_millis(50));
        assert_eq!(dispatcher.dispatch_batch().await.unwrap(), 88);
        assert_eq!(deliveries(&db).await, (37, 263));
    }
}
