//! The event log. Events are stored in the same transaction as the change they report, with
//! a position taken from a single counter row: the row lock orders positions by commit, so a
//! reader that saw position N has seen everything before it.

pub mod feed;

use chrono::Utc;
use sea_orm::ActiveEnum as _;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Select, Statement,
    sea_query::{Expr, ExprTrait},
};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    db::Db,
    error::{AppError, AppResult},
    ids::new_id,
};
pub use entity::enums::EventType;
use entity::{event, event_sequence};

/// Event types as stored in a JSON column: their wire names, sorted, each once.
pub fn types_to_json(types: &[EventType]) -> Value {
    let mut names: Vec<String> = types.iter().map(|t| t.to_value()).collect();
    names.sort_unstable();
    names.dedup();
    Value::from(names)
}

/// Reads event types stored by [`types_to_json`]; `column` names where they were read from
/// when one is not a known wire name.
pub fn types_from_json(value: &Value, column: &str) -> AppResult<Vec<EventType>> {
    let unknown = || {
        AppError::internal(anyhow::anyhow!(
            "{column} holds event types this release does not know: {value}"
        ))
    };
    value
        .as_array()
        .ok_or_else(unknown)?
        .iter()
        .map(|name| {
            let name = name.as_str().ok_or_else(unknown)?;
            EventType::try_from_value(&name.to_owned()).map_err(|_| unknown())
        })
        .collect()
}

/// An event about to be stored.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub account_id: Uuid,
    pub customer_id: Option<Uuid>,
    pub connection_id: Option<Uuid>,
    pub event_type: EventType,
    pub data: Value,
}

/// Stores events inside the caller's transaction and returns their positions.
pub async fn record(txn: &impl ConnectionTrait, events: Vec<NewEvent>) -> Result<Vec<i64>, DbErr> {
    record_after(txn, None, events).await
}

/// Events a single SQLite round trip stores at most (8 bound values each, far below SQLite's
/// 32,766 per statement); more are stored with separate statements.
const EVENTS_PER_ROUND_TRIP: usize = 500;

/// Records one event of `connection_id` (of `account_id`), with the connection's customer.
pub async fn record_for_connection(
    txn: &impl ConnectionTrait,
    account_id: Uuid,
    connection_id: Uuid,
    event_type: EventType,
    data: Value,
) -> Result<Vec<i64>, DbErr> {
    let customer_id = entity::connection::Entity::find_by_id(connection_id)
        .one(txn)
        .await?
        .map(|c| c.customer_id);
    let event = NewEvent {
        account_id,
        customer_id,
        connection_id: Some(connection_id),
        event_type,
        data,
    };
    record(txn, vec![event]).await
}

/// Runs `before` (a statement without results, such as the ledger row of the change the
/// events report), then stores the events, inside the caller's transaction; returns their
/// positions. On SQLite all of it is one round trip to the database thread: each statement
/// is otherwise a round trip made while holding the single write lock.
pub async fn record_after(
    txn: &impl ConnectionTrait,
    before: Option<Statement>,
    events: Vec<NewEvent>,
) -> Result<Vec<i64>, DbErr> {
    let backend = txn.get_database_backend();
    if backend == DbBackend::Sqlite && !events.is_empty() && events.len() <= EVENTS_PER_ROUND_TRIP {
        return record_sqlite(txn, before, events).await;
    }
    if let Some(before) = before {
        txn.execute_raw(before).await?;
    }
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let count = events.len() as i64;
    let last = event_sequence::Entity::update_many()
        .col_expr(
            event_sequence::Column::LastPosition,
            Expr::col(event_sequence::Column::LastPosition).add(count),
        )
        .filter(event_sequence::Column::Id.eq(1))
        .exec_with_returning(txn)
        .await?
        .first()
        .map(|row| row.last_position)
        .ok_or_else(|| DbErr::RecordNotFound("event_sequence row".into()))?;
    let now = Utc::now();
    let positions: Vec<i64> = (last - count + 1..=last).collect();
    let rows: Vec<event::ActiveModel> = events
        .into_iter()
        .zip(&positions)
        .map(|(e, position)| event::ActiveModel {
            position: Set(*position),
            id: Set(new_id()),
            account_id: Set(e.account_id),
            customer_id: Set(e.customer_id),
            connection_id: Set(e.connection_id),
            event_type: Set(e.event_type),
            data: Set(e.data),
            occurred_at: Set(now),
        })
        .collect();
    // 8 bound values a row: SQLite takes at most 32,766 a statement, PostgreSQL 65,535.
    for chunk in rows.chunks(EVENTS_PER_ROUND_TRIP) {
        event::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(txn)
            .await?;
    }
    if backend == DbBackend::Postgres {
        // Delivered at commit, to every process listening: carries only the position.
        let notify = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_notify($1, $2)",
            [feed::CHANNEL.into(), last.to_string().into()],
        );
        txn.execute_raw(notify).await?;
    }
    Ok(positions)
}

/// `before`, the position counter and the event rows in one multi-statement query: the rows
/// take their positions from the counter as just moved (the write lock is held throughout).
async fn record_sqlite(
    txn: &impl ConnectionTrait,
    before: Option<Statement>,
    events: Vec<NewEvent>,
) -> Result<Vec<i64>, DbErr> {
    let count = events.len() as i64;
    let now = Utc::now();
    let mut sql = String::new();
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(1 + 8 * events.len());
    if let Some(before) = before {
        sql.push_str(&before.sql);
        sql.push_str(";\n");
        values.extend(before.values.map(|v| v.0).unwrap_or_default());
    }
    sql.push_str(
        "UPDATE event_sequence SET last_position = last_position + ? WHERE id = 1 \
         RETURNING last_position;\nINSERT INTO events (position, id, account_id, customer_id, \
         connection_id, event_type, data, occurred_at) VALUES ",
    );
    values.push(count.into());
    for (n, e) in events.into_iter().enumerate() {
        if n > 0 {
            sql.push_str(", ");
        }
        sql.push_str(
            "((SELECT last_position FROM event_sequence WHERE id = 1) - ?, ?, ?, ?, ?, ?, ?, ?)",
        );
        values.extend([
            (count - 1 - n as i64).into(),
            new_id().into(),
            e.account_id.into(),
            e.customer_id.into(),
            e.connection_id.into(),
            e.event_type.to_value().into(),
            e.data.into(),
            now.into(),
        ]);
    }
    let rows = txn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            sql,
            values,
        ))
        .await?;
    let last: i64 = rows
        .first()
        .ok_or_else(|| DbErr::RecordNotFound("event_sequence row".into()))?
        .try_get_by_index(0)?;
    Ok((last - count + 1..=last).collect())
}

/// Where a listener of the whole log resumes; encoded in `Event.cursor`.
pub fn encode_cursor(position: i64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("e1:{position}"))
}

pub fn decode_cursor(cursor: &str) -> Result<i64, AppError> {
    use base64::Engine;
    let invalid = || AppError::bad_input("malformed event cursor");
    if cursor.len() > 64 {
        return Err(invalid());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.strip_prefix("e1:")
        .and_then(|p| p.parse::<i64>().ok())
        .filter(|p| *p >= 0)
        .ok_or_else(invalid)
}

/// Which events a reader wants, within what it may see.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub account_id: Uuid,
    /// Set for a connection token: only that connection's events.
    pub scope_connection_id: Option<Uuid>,
    /// Set for a portal session: only its customer's events.
    pub scope_customer_id: Option<Uuid>,
    pub types: Option<Vec<EventType>>,
    pub customer_id: Option<Uuid>,
    pub connection_id: Option<Uuid>,
    /// Of `flow.triggered` events, only those of these flows (their `flw_…` ids, as the
    /// events' `data.flow_id` holds them); events of other types are not affected.
    pub flow_ids: Option<Vec<String>>,
}

/// Whether a `flow.triggered` event is of one of `flows` (`None`: of any flow).
pub fn of_flows(flows: Option<&[String]>, event: &event::Model) -> bool {
    event.event_type != EventType::FlowTriggered
        || flows.is_none_or(|flows| {
            event
                .data
                .get("flow_id")
                .and_then(Value::as_str)
                .is_some_and(|id| flows.iter().any(|f| f == id))
        })
}

impl Filter {
    pub fn matches(&self, event: &event::Model) -> bool {
        event.account_id == self.account_id
            && self
                .scope_connection_id
                .is_none_or(|c| event.connection_id == Some(c))
            && self
                .scope_customer_id
                .is_none_or(|c| event.customer_id == Some(c))
            && self
                .connection_id
                .is_none_or(|c| event.connection_id == Some(c))
            && self
                .customer_id
                .is_none_or(|c| event.customer_id == Some(c))
            && self
                .types
                .as_ref()
                .is_none_or(|types| types.contains(&event.event_type))
            && of_flows(self.flow_ids.as_deref(), event)
    }

    fn apply(
        &self,
        backend: DbBackend,
        mut select: Select<event::Entity>,
    ) -> Select<event::Entity> {
        select = select.filter(event::Column::AccountId.eq(self.account_id));
        if let Some(id) = self.scope_connection_id {
            select = select.filter(event::Column::ConnectionId.eq(id));
        }
        if let Some(id) = self.scope_customer_id {
            select = select.filter(event::Column::CustomerId.eq(id));
        }
        if let Some(id) = self.connection_id {
            select = select.filter(event::Column::ConnectionId.eq(id));
        }
        if let Some(id) = self.customer_id {
            select = select.filter(event::Column::CustomerId.eq(id));
        }
        if let Some(types) = &self.types {
            select =
                select.filter(event::Column::EventType.is_in(types.iter().map(|t| t.to_value())));
        }
        if let Some(flows) = &self.flow_ids {
            let flow_id = match backend {
                DbBackend::Postgres => "(data->>'flow_id')",
                _ => "json_extract(data, '$.flow_id')",
            };
            select = select.filter(
                sea_orm::Condition::any()
                    .add(event::Column::EventType.ne(EventType::FlowTriggered.to_value()))
                    .add(Expr::cust(flow_id).is_in(flows.iter().cloned())),
            );
        }
        select
    }
}

/// Refuses a cursor whose successors were pruned (reading on would silently skip events),
/// and one past the end of the log (a reader would wait for positions that were never
/// given, say after a restore from backup).
/// An event by its id, if the caller may see it (a connection token sees its own only).
pub async fn find(
    db: &impl ConnectionTrait,
    scope: crate::connections::Scope,
    id: Uuid,
) -> AppResult<event::Model> {
    event::Entity::find()
        .filter(event::Column::Id.eq(id))
        .filter(event::Column::AccountId.eq(scope.account_id))
        .one(db)
        .await?
        .filter(|e| {
            scope
                .connection_id
                .is_none_or(|c| e.connection_id == Some(c))
        })
        .ok_or(AppError::NotFound("event"))
}

/// The event a webhook delivery carries; `NotFound` once retention pruned it.
pub async fn find_for_delivery(
    db: &impl ConnectionTrait,
    delivery: &entity::webhook_delivery::Model,
) -> AppResult<event::Model> {
    event::Entity::find()
        .filter(event::Column::Position.eq(delivery.event_position))
        .filter(event::Column::AccountId.eq(delivery.account_id))
        .one(db)
        .await?
        .ok_or(AppError::NotFound("event (pruned by retention)"))
}

pub async fn ensure_retained(db: &impl ConnectionTrait, after: i64) -> AppResult<()> {
    // The last position first, then the oldest event: events committed between the two reads
    // come after `last`, so they never make the log look pruned. (Read the other way round,
    // an empty log that gets its first events in between looked pruned.)
    let last = event_sequence::Entity::find_by_id(1)
        .one(db)
        .await?
        .map_or(0, |s| s.last_position);
    let oldest: Option<Option<i64>> = event::Entity::find()
        .select_only()
        .column_as(Expr::col(event::Column::Position).min(), "oldest")
        .into_tuple()
        .one(db)
        .await?;
    if after > last {
        return Err(AppError::bad_input(
            "the cursor is ahead of the event log: no event has that position yet",
        ));
    }
    let pruned = match oldest.flatten() {
        Some(oldest) => oldest > after.saturating_add(1),
        None => last > after,
    };
    if pruned {
        return Err(AppError::bad_input(
            "the cursor is older than the event retention; events after it were pruned",
        ));
    }
    Ok(())
}

/// Events matching the filter after a position, oldest first.
pub async fn read_after(
    db: &impl ConnectionTrait,
    filter: &Filter,
    after: i64,
    limit: u64,
) -> AppResult<Vec<event::Model>> {
    let select = filter
        .apply(db.get_database_backend(), event::Entity::find())
        .filter(event::Column::Position.gt(after));
    Ok(select
        .order_by_asc(event::Column::Position)
        .limit(limit)
        .all(db)
        .await?)
}

/// One page of the `events` query: `limit` events after the cursor, and whether more exist.
pub async fn list(
    db: &impl ConnectionTrait,
    filter: &Filter,
    after: Option<i64>,
    limit: u64,
) -> AppResult<(Vec<event::Model>, bool)> {
    if let Some(after) = after {
        ensure_retained(db, after).await?;
    }
    let mut rows = read_after(db, filter, after.unwrap_or(0), limit + 1).await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    Ok((rows, more))
}

/// Events deleted per transaction by `prune`.
const PRUNE_BATCH: u64 = 5000;

/// Deletes events older than the retention; returns how many. Positions follow commit
/// time, so the expired events are the oldest positions: found in position order (the
/// primary key, no scan of the table) and deleted in short transactions, so that writers
/// never wait long for the write lock.
pub async fn prune(db: &Db, retention: std::time::Duration) -> AppResult<u64> {
    let horizon = crate::db::horizon(retention);
    // The first position that stays; everything before it has expired.
    let kept: Option<i64> = event::Entity::find()
        .select_only()
        .column(event::Column::Position)
        .filter(event::Column::OccurredAt.gte(horizon))
        .order_by_asc(event::Column::Position)
        .limit(1)
        .into_tuple()
        .one(db.conn())
        .await?;
    let mut deleted = 0;
    loop {
        let mut expired = event::Entity::find()
            .select_only()
            .column(event::Column::Position)
            .order_by_asc(event::Column::Position)
            .limit(PRUNE_BATCH);
        if let Some(kept) = kept {
            expired = expired.filter(event::Column::Position.lt(kept));
        } else {
            expired = expired.filter(event::Column::OccurredAt.lt(horizon));
        }
        let positions: Vec<i64> = expired.into_tuple().all(db.conn()).await?;
        let Some(&newest) = positions.last() else {
            return Ok(deleted);
        };
        let txn = db.begin_write().await?;
        let result = event::Entity::delete_many()
            .filter(event::Column::Position.lte(newest))
            .filter(event::Column::OccurredAt.lt(horizon))
            .exec(&*txn)
            .await?;
        txn.commit().await?;
        deleted += result.rows_affected;
        if (positions.len() as u64) < PRUNE_BATCH {
            return Ok(deleted);
        }
    }
}
