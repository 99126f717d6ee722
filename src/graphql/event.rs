//! Events as GraphQL types, the `events` query's filter, and the subscription root.

use async_graphql::{Context, ID, InputObject, Json, Object, Subscription};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use serde_json::Value;

use super::{
    connection::Connection,
    enums::{self, EventType},
};
use crate::{
    bulk,
    connections::{self, Scope},
    error::{AppError, AppResult},
    events::{self, Filter, feed::EventFeed},
    ids, sync,
};
use entity::event;

pub struct Event(pub event::Model);

/// Something that happened in the account, as stored in the event log and sent to webhooks.
#[Object]
impl Event {
    /// The event's id (`evt_…`); webhook deliveries send it as `webhook-id`.
    pub async fn id(&self) -> ID {
        ID(ids::encode(ids::Kind::Event, self.0.id))
    }
    /// Resume point: pass it as `after` to `events` (query or subscription).
    async fn cursor(&self) -> String {
        events::encode_cursor(events::LogPosition::of(&self.0))
    }
    /// What happened.
    #[graphql(name = "type")]
    async fn event_type(&self) -> EventType {
        self.0.event_type.into()
    }
    /// When it happened.
    async fn occurred_at(&self) -> DateTime<Utc> {
        self.0.occurred_at
    }
    /// The customer it concerns, if any.
    async fn customer_id(&self) -> Option<ID> {
        self.0
            .customer_id
            .map(|id| ID(ids::encode(ids::Kind::Customer, id)))
    }
    /// The connection it concerns, if any.
    async fn connection_id(&self) -> Option<ID> {
        self.0
            .connection_id
            .map(|id| ID(ids::encode(ids::Kind::Connection, id)))
    }
    /// The connection it concerns; null if none or no longer visible to the caller.
    async fn connection(&self, ctx: &Context<'_>) -> AppResult<Option<Connection>> {
        let Some(id) = self.0.connection_id else {
            return Ok(None);
        };
        let scope = super::principal(ctx).connections_scope()?;
        match connections::find(super::db(ctx).conn(), scope, id).await {
            Ok(model) => Ok(Some(Connection(model))),
            Err(AppError::NotFound(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }
    /// The event's details; their fields depend on `type`.
    async fn data(&self) -> Json<Value> {
        Json(self.0.data.clone())
    }
}

/// Which events to read; the conditions given must all hold.
#[derive(InputObject, Default)]
pub struct EventFilter {
    /// Only events of these types (at most 100 entries, each counted once).
    #[graphql(validator(max_items = 100))]
    pub types: Option<Vec<EventType>>,
    /// Only events about this customer.
    pub customer_id: Option<ID>,
    /// Only events about this connection.
    pub connection_id: Option<ID>,
    /// Of `FLOW_TRIGGERED` events, only those of these flows (`flw_…`, at most 100);
    /// events of other types are not affected.
    #[graphql(validator(max_items = 100))]
    pub flow_ids: Option<Vec<ID>>,
}

/// The events a portal session may receive: its customer's connections and their syncs,
/// nothing of records, credits or webhooks.
const PORTAL_EVENT_TYPES: [events::EventType; 8] = [
    events::EventType::ConnectionCreated,
    events::EventType::ConnectionStatusChanged,
    events::EventType::ConnectionAuthRequired,
    events::EventType::ConnectionDisconnected,
    events::EventType::SyncStarted,
    events::EventType::SyncProgress,
    events::EventType::SyncCompleted,
    events::EventType::SyncFailed,
];

/// A portal session's event types: those it asked for, all of which it must be allowed, or
/// all it is allowed.
fn portal_types(asked: Option<Vec<events::EventType>>) -> AppResult<Vec<events::EventType>> {
    let Some(asked) = asked else {
        return Ok(PORTAL_EVENT_TYPES.to_vec());
    };
    match asked.iter().find(|t| !PORTAL_EVENT_TYPES.contains(t)) {
        Some(refused) => Err(AppError::Forbidden(format!(
            "a portal session receives connection and sync events only, not {}",
            sea_orm::ActiveEnum::to_value(refused)
        ))),
        None => Ok(asked),
    }
}

/// Each value once, in the order first given.
fn distinct<T: PartialEq>(values: Vec<T>) -> Vec<T> {
    let mut seen = Vec::with_capacity(values.len());
    for value in values {
        if !seen.contains(&value) {
            seen.push(value);
        }
    }
    seen
}

/// The caller's scope narrowed by its filter.
pub fn filter_for(scope: Scope, filter: Option<EventFilter>) -> AppResult<Filter> {
    let filter = filter.unwrap_or_default();
    let mut types = filter.types.map(|t| distinct(enums::all(&t)));
    if scope.customer_id.is_some() {
        types = Some(portal_types(types)?);
    }
    Ok(Filter {
        account_id: scope.account_id,
        scope_connection_id: scope.connection_id,
        scope_customer_id: scope.customer_id,
        types,
        customer_id: filter
            .customer_id
            .map(|id| ids::decode(ids::Kind::Customer, &id))
            .transpose()?,
        connection_id: filter
            .connection_id
            .map(|id| ids::decode(ids::Kind::Connection, &id))
            .transpose()?,
        flow_ids: filter
            .flow_ids
            .map(|flows| {
                flows
                    .iter()
                    .map(|id| {
                        let id = ids::decode(ids::Kind::Flow, id)?;
                        Ok(ids::encode(ids::Kind::Flow, id))
                    })
                    .collect::<AppResult<Vec<_>>>()
            })
            .transpose()?,
    })
}

pub struct Subscription;

/// How often the `bulkOperation` subscription looks for progress.
const BULK_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// How long a subscription's setup, and what one event needs before it is sent, may take:
/// the request timeout (a subscription itself lives as long as the client wants).
fn timeout(ctx: &Context<'_>) -> std::time::Duration {
    super::config(ctx).request_timeout()
}

/// Live streams over the `graphql-transport-ws` WebSocket protocol at `/graphql/ws`.
#[Subscription]
impl Subscription {
    /// Stored events after `after` (an `Event.cursor`) first, then live ones: no gap, no
    /// duplicate. Without `after`, live events only.
    async fn events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which events; all the caller may see when omitted.")] filter: Option<
            EventFilter,
        >,
        #[graphql(desc = "An `Event.cursor`: stored events after it come first.")] after: Option<
            String,
        >,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Event>> + use<>> {
        // Boxed: the subscription keeps this resolver's state for as long as it lives, and a
        // setup future held inline there (the cursor check's queries) took about 2 KB on
        // every subscription, measured by the subscriptions bench.
        let setup = Box::pin(async {
            let scope = super::principal(ctx).connections_scope()?;
            let filter = filter_for(scope, filter)?;
            let after = after.as_deref().map(events::decode_cursor).transpose()?;
            if let Some(after) = after {
                events::ensure_retained(super::db(ctx).conn(), after).await?;
            }
            Ok((filter, after))
        });
        let (filter, after) = super::within(timeout(ctx), setup).await?;
        let feed = ctx.data_unchecked::<EventFeed>();
        Ok(feed
            .stream(filter, after)
            .map(|item| item.map(|e| Event((*e).clone())).map_err(Into::into)))
    }

    /// The run each time it changes; completes when it ends.
    async fn sync_run(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The run's id (`run_…`).")] id: ID,
    ) -> async_graphql::Result<
        impl Stream<Item = async_graphql::Result<super::sync::SyncRun>> + use<>,
    > {
        let scope = super::principal(ctx).connections_scope()?;
        let id = ids::decode(ids::Kind::SyncRun, &id)?;
        let db = super::db(ctx).clone();
        let feed = ctx.data_unchecked::<EventFeed>();
        // Noted before the run is read: a change committed between the read and the stream
        // is then read back from the table, not missed.
        let from = feed.position();
        let limit = timeout(ctx);
        let run = super::within(limit, Box::pin(sync::find(db.conn(), scope, id))).await?;
        let types = vec![
            events::EventType::SyncStarted,
            events::EventType::SyncProgress,
            events::EventType::SyncCompleted,
            events::EventType::SyncFailed,
        ];
        let filter = Filter {
            connection_id: Some(run.connection_id),
            types: Some(types),
            ..filter_for(scope, None)?
        };
        let changes = feed.stream(filter, Some(from));
        // The current state first, then every change, until the run has ended.
        let first = futures_util::stream::once(async move { Ok::<_, AppError>(run) });
        let updates = changes.then(move |item| {
            let db = db.clone();
            super::within(limit, async move {
                item?;
                sync::find(db.conn(), scope, id).await
            })
        });
        // Ends right after the state that finishes the run, without waiting for another event.
        let states = first.chain(updates).boxed();
        let until_finished =
            futures_util::stream::unfold((states, false), |(mut states, done)| async move {
                if done {
                    return None;
                }
                let item = states.next().await?;
                let finished = item.as_ref().map_or(true, |run| run.status.is_finished());
                Some((item, (states, finished)))
            });
        Ok(until_finished.map(|item| item.map(super::sync::SyncRun).map_err(Into::into)))
    }

    /// The bulk operation each time its status or counts change (batches that finish close
    /// together may show as one change); completes when it ends.
    async fn bulk_operation(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The operation's id (`blk_…`).")] id: ID,
    ) -> async_graphql::Result<
        impl Stream<Item = async_graphql::Result<super::bulk::BulkOperation>> + use<>,
    > {
        let scope = super::principal(ctx).scope()?;
        let id = ids::decode(ids::Kind::BulkOperation, &id)?;
        let db = super::db(ctx).clone();
        let feed = ctx.data_unchecked::<EventFeed>();
        let from = feed.position();
        let limit = timeout(ctx);
        let op = super::within(limit, Box::pin(bulk::find(db.conn(), scope, id))).await?;
        let filter = Filter {
            connection_id: Some(op.connection_id),
            types: Some(vec![events::EventType::BulkOperationCompleted]),
            ..filter_for(scope, None)?
        };
        // Woken by the operation's end at once, and between batches by a short poll.
        let ends = feed.stream(filter, Some(from)).map(|_| ());
        let ticks = futures_util::stream::unfold((), |()| async {
            tokio::time::sleep(BULK_POLL).await;
            Some(((), ()))
        });
        let reads = futures_util::stream::select(ends, ticks).then(move |()| {
            let db = db.clone();
            super::within(limit, async move { bulk::find(db.conn(), scope, id).await })
        });
        let states = futures_util::stream::once(async move { Ok::<_, AppError>(op) })
            .chain(reads)
            .boxed();
        let changes = futures_util::stream::unfold(
            (states, None, false),
            |(mut states, last, done)| async move {
                if done {
                    return None;
                }
                loop {
                    match states.next().await? {
                        Ok(op) => {
                            let seen = Some((op.status, op.processed, op.failed));
                            if seen == last {
                                continue;
                            }
                            let finished = op.status.is_finished();
                            return Some((Ok(op), (states, seen, finished)));
                        }
                        Err(err) => return Some((Err(err), (states, last, true))),
                    }
                }
            },
        );
        Ok(changes.map(|item| item.map(super::bulk::BulkOperation).map_err(Into::into)))
    }

    /// The connection each time one of the filtered connections is created, changes status,
    /// or is disconnected.
    async fn connection_status(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only this customer's connections.")] customer_id: Option<ID>,
        #[graphql(desc = "Only this connection.")] connection_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Connection>> + use<>> {
        let scope = super::principal(ctx).connections_scope()?;
        let types = vec![
            EventType::ConnectionCreated,
            EventType::ConnectionStatusChanged,
            EventType::ConnectionDisconnected,
        ];
        let filter = filter_for(
            scope,
            Some(EventFilter {
                types: Some(types),
                customer_id,
                connection_id,
                flow_ids: None,
            }),
        )?;
        let db = super::db(ctx).clone();
        let feed = ctx.data_unchecked::<EventFeed>();
        let limit = timeout(ctx);
        Ok(feed
            .stream(filter, None)
            .then(move |item| {
                let db = db.clone();
                super::within(limit, async move {
                    let event = item?;
                    let id = event.connection_id.ok_or_else(|| {
                        AppError::internal(anyhow::anyhow!("connection event without connection"))
                    })?;
                    Ok(Connection(connections::find(db.conn(), scope, id).await?))
                })
            })
            .map(|item| item.map_err(Into::into)))
    }
}
