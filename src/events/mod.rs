//! The event log. Events are stored in the same transaction as the change they report. Every
//! reader goes through the log in one order, in which nothing ever appears behind what a
//! reader has already passed (docs/events.md, "Ordering"):
//!
//! - SQLite has one writer at a time: positions come from the `event_sequence` row under
//!   the write lock, so they become visible in commit order; readers go by position.
//! - PostgreSQL has many writers and no row all of them lock: positions come from the
//!   sequence `event_positions`, each event carries the id of the transaction that wrote it
//!   (`txid`), and readers go in (`txid`, `position`) order up to the horizon: the oldest
//!   transaction of this database still in flight ([`HORIZON`]). Everything before the
//!   horizon is final, and everything written later sorts after it.

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

/// Where a reader of the log stands: the last event it passed, in reading order (`txid`
/// first; always 0 on SQLite, whose order is the position's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition {
    pub txid: i64,
    pub position: i64,
}

impl LogPosition {
    pub fn of(event: &event::Model) -> Self {
        Self {
            txid: event.txid,
            position: event.position,
        }
    }
}

/// PostgreSQL: the horizon of the statement's snapshot, as a transaction id. Every
/// transaction with a smaller id has ended (it is not among the snapshot's in-flight
/// transactions `xip`, nor at or past its `xmax`), so no event with a smaller `txid` can
/// appear later. Transactions that pg_stat_activity shows running in another database are
/// left out (they cannot write this database's events; one it does not show, or shows
/// without its id, counts), and so is the reader's own (whose uncommitted events it sees).
pub const HORIZON: &str = "(SELECT LEAST(\
    pg_snapshot_xmax(s)::text::bigint, \
    pg_current_xact_id_if_assigned()::text::bigint, \
    (SELECT MIN(x::text::bigint) FROM pg_snapshot_xip(s) AS x \
     WHERE x::text::bigint % 4294967296 NOT IN (\
       SELECT a.backend_xid::text::bigint FROM pg_stat_activity a \
       WHERE a.backend_xid IS NOT NULL AND a.datname <> current_database()))) \
    FROM pg_current_snapshot() AS s)";

/// `select` narrowed to the events after `after` that a reader may pass, in reading order.
pub fn after_in_order(
    backend: DbBackend,
    select: Select<event::Entity>,
    after: LogPosition,
) -> Select<event::Entity> {
    if backend != DbBackend::Postgres {
        return select
            .filter(event::Column::Position.gt(after.position))
            .order_by_asc(event::Column::Position);
    }
    select
        .filter(Expr::cust_with_values(
            "(events.txid, events.position) > ($1, $2)",
            [after.txid, after.position],
        ))
        .filter(Expr::cust(format!("events.txid < {HORIZON}")))
        .order_by_asc(event::Column::Txid)
        .order_by_asc(event::Column::Position)
}

/// Stores events inside the caller's transaction and returns their positions.
pub async fn record(txn: &impl ConnectionTrait, events: Vec<NewEvent>) -> Result<Vec<i64>, DbErr> {
    record_after(txn, Vec::new(), events).await
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

/// Runs `before` (statements without results, such as the row of the change the events
/// report), then stores the events, inside the caller's transaction; returns their
/// positions. Up to `EVENTS_PER_ROUND_TRIP` events it is all one round trip: on SQLite to
/// the database thread (each statement is otherwise a round trip made while holding the
/// single write lock), on PostgreSQL one statement (a data-modifying `WITH`). The statements of `before` must not depend on each
/// other's rows, as the parts of one such statement see none of each other's changes (a
/// foreign key between them is checked at the statement's end, and holds).
pub async fn record_after(
    txn: &impl ConnectionTrait,
    before: Vec<Statement>,
    events: Vec<NewEvent>,
) -> Result<Vec<i64>, DbErr> {
    let backend = txn.get_database_backend();
    if backend == DbBackend::Sqlite && !events.is_empty() && events.len() <= EVENTS_PER_ROUND_TRIP {
        return record_sqlite(txn, before, events).await;
    }
    if backend == DbBackend::Postgres {
        return record_postgres(txn, before, events).await;
    }
    for before in before {
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
            txid: Set(0),
        })
        .collect();
    // 9 bound values a row: SQLite takes at most 32,766 a statement.
    for chunk in rows.chunks(EVENTS_PER_ROUND_TRIP) {
        event::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(txn)
            .await?;
    }
    Ok(positions)
}

/// PostgreSQL: `before` and the event rows in one statement (a data-modifying `WITH`), so
/// that a write holds its row locks for fewer round trips. Positions come from the
/// sequence and `txid` is the transaction's id: nothing every writer locks.
async fn record_postgres(
    txn: &impl ConnectionTrait,
    before: Vec<Statement>,
    events: Vec<NewEvent>,
) -> Result<Vec<i64>, DbErr> {
    use std::fmt::Write as _;
    if events.is_empty() {
        for before in before {
            txn.execute_raw(before).await?;
        }
        return Ok(Vec::new());
    }
    let now = Utc::now();
    let mut before = before.into_iter().peekable();
    let mut positions = Vec::with_capacity(events.len());
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        let mut sql = String::from("WITH ");
        let mut values: Vec<sea_orm::Value> = Vec::new();
        for (n, before) in before.by_ref().enumerate() {
            let _ = write!(
                sql,
                "before{n} AS ({}), ",
                shift_placeholders(&before.sql, values.len())
            );
            values.extend(before.values.map(|v| v.0).unwrap_or_default());
        }
        sql.push_str(
            "inserted AS (INSERT INTO events (position, id, account_id, customer_id, \
             connection_id, event_type, data, occurred_at, txid) VALUES ",
        );
        for (n, e) in events.by_ref().take(EVENTS_PER_ROUND_TRIP).enumerate() {
            if n > 0 {
                sql.push_str(", ");
            }
            let base = values.len();
            let _ = write!(
                sql,
                "(nextval('event_positions'), ${}, ${}, ${}, ${}, ${}, ${}, ${}, \
                 pg_current_xact_id()::text::bigint)",
                base + 1,
                base + 2,
                base + 3,
                base + 4,
                base + 5,
                base + 6,
                base + 7,
            );
            values.extend(row_values(e, now));
        }
        sql.push_str(" RETURNING position) SELECT position FROM inserted ORDER BY position");
        let rows = txn
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                sql,
                values,
            ))
            .await?;
        for row in rows {
            positions.push(row.try_get_by_index::<i64>(0)?);
        }
    }
    Ok(positions)
}

/// PostgreSQL: `sql` with its placeholders `$1, $2, …` numbered from `offset + 1`, to follow
/// `offset` values of other statements in one. Quoted text (`'…'`, `"…"`) is left as it is.
fn shift_placeholders(sql: &str, offset: usize) -> String {
    if offset == 0 {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, '$') if chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut digits = String::new();
                while let Some(d) = chars.next_if(char::is_ascii_digit) {
                    digits.push(d);
                }
                let n: usize = digits.parse().unwrap_or(0);
                out.push('$');
                out.push_str(&(n + offset).to_string());
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// An event row's values after its position: id, account, customer, connection, type, data,
/// time.
fn row_values(e: NewEvent, now: chrono::DateTime<Utc>) -> [sea_orm::Value; 7] {
    [
        new_id().into(),
        e.account_id.into(),
        e.customer_id.into(),
        e.connection_id.into(),
        e.event_type.to_value().into(),
        e.data.into(),
        now.into(),
    ]
}

/// `before`, the position counter and the event rows in one multi-statement query: the rows
/// take their positions from the counter as just moved (the write lock is held throughout).
async fn record_sqlite(
    txn: &impl ConnectionTrait,
    before: Vec<Statement>,
    events: Vec<NewEvent>,
) -> Result<Vec<i64>, DbErr> {
    let count = events.len() as i64;
    let now = Utc::now();
    let mut sql = String::new();
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(1 + 8 * events.len());
    for before in before {
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
        values.push((count - 1 - n as i64).into());
        values.extend(row_values(e, now));
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

/// Where a listener of the whole log resumes; encoded in `Event.cursor`. A cursor of an
/// earlier release (`e1:` and a position) reads as transaction 0, where every event it
/// could name still is.
pub fn encode_cursor(at: LogPosition) -> String {
    use base64::Engine;
    let text = if at.txid == 0 {
        format!("e1:{}", at.position)
    } else {
        format!("e2:{}:{}", at.txid, at.position)
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

pub fn decode_cursor(cursor: &str) -> Result<LogPosition, AppError> {
    use base64::Engine;
    let invalid = || AppError::bad_input("malformed event cursor");
    if cursor.len() > 64 {
        return Err(invalid());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let number = |n: &str| n.parse::<i64>().ok().filter(|n| *n >= 0);
    let at = if let Some(position) = text.strip_prefix("e1:") {
        number(position).map(|position| LogPosition { txid: 0, position })
    } else if let Some(rest) = text.strip_prefix("e2:") {
        rest.split_once(':').and_then(|(txid, position)| {
            Some(LogPosition {
                txid: number(txid).filter(|t| *t > 0)?,
                position: number(position)?,
            })
        })
    } else {
        None
    };
    at.ok_or_else(invalid)
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

pub async fn ensure_retained(db: &impl ConnectionTrait, after: LogPosition) -> AppResult<()> {
    let log = event_sequence::Entity::find_by_id(1).one(db).await?;
    let pruned = log
        .as_ref()
        .map_or_else(LogPosition::default, |log| LogPosition {
            txid: log.pruned_txid,
            position: log.pruned_position,
        });
    if after.position > last_position(db).await? {
        return Err(AppError::bad_input(
            "the cursor is ahead of the event log: no event has that position yet",
        ));
    }
    if after < pruned {
        return Err(AppError::bad_input(
            "the cursor is older than the event retention; events after it were pruned",
        ));
    }
    Ok(())
}

/// The last position given to an event (0 before the first).
async fn last_position(db: &impl ConnectionTrait) -> AppResult<i64> {
    let backend = db.get_database_backend();
    if backend == DbBackend::Postgres {
        let row = db
            .query_one_raw(Statement::from_string(
                backend,
                "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM event_positions",
            ))
            .await?;
        return Ok(match row {
            Some(row) => row.try_get_by_index::<i64>(0)?,
            None => 0,
        });
    }
    Ok(event_sequence::Entity::find_by_id(1)
        .one(db)
        .await?
        .map_or(0, |s| s.last_position))
}

/// The last event a reader may pass now: where a reader that starts at the end of the log
/// starts.
pub async fn end_of_log(db: &impl ConnectionTrait) -> AppResult<LogPosition> {
    let backend = db.get_database_backend();
    if backend != DbBackend::Postgres {
        return Ok(LogPosition {
            txid: 0,
            position: last_position(db).await?,
        });
    }
    let last = event::Entity::find()
        .filter(Expr::cust(format!("events.txid < {HORIZON}")))
        .order_by_desc(event::Column::Txid)
        .order_by_desc(event::Column::Position)
        .one(db)
        .await?;
    Ok(last.as_ref().map(LogPosition::of).unwrap_or_default())
}

/// Events matching the filter after a position, in reading order.
pub async fn read_after(
    db: &impl ConnectionTrait,
    filter: &Filter,
    after: LogPosition,
    limit: u64,
) -> AppResult<Vec<event::Model>> {
    let backend = db.get_database_backend();
    let select = after_in_order(backend, filter.apply(backend, event::Entity::find()), after);
    Ok(select.limit(limit).all(db).await?)
}

/// How long a page of the `events` query waits for older transactions still in flight.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// One page of the `events` query: `limit` events after the cursor, and whether more exist.
/// On PostgreSQL it first waits (up to `SETTLE_WAIT`) until every event of the filter that
/// is committed can be passed, so that a client reads its own writes: an event its request
/// committed comes after the horizon while an older transaction is still in flight.
pub async fn list(
    db: &impl ConnectionTrait,
    filter: &Filter,
    after: Option<LogPosition>,
    limit: u64,
) -> AppResult<(Vec<event::Model>, bool)> {
    if let Some(after) = after {
        ensure_retained(db, after).await?;
    }
    if db.get_database_backend() == DbBackend::Postgres {
        wait_until_settled(db, filter).await?;
    }
    let mut rows = read_after(db, filter, after.unwrap_or_default(), limit + 1).await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    Ok((rows, more))
}

/// Waits until no committed event of the filter is past the horizon, for `SETTLE_WAIT` at
/// most (then the page holds what can be passed, and the rest comes on a later page).
async fn wait_until_settled(db: &impl ConnectionTrait, filter: &Filter) -> AppResult<()> {
    let backend = db.get_database_backend();
    let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        let unsettled = filter
            .apply(backend, event::Entity::find())
            .filter(Expr::cust(format!("events.txid >= {HORIZON}")))
            .one(db)
            .await?;
        if unsettled.is_none() || tokio::time::Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(50));
    }
}

/// Events deleted per transaction by `prune`.
const PRUNE_BATCH: u64 = 5000;

/// Deletes events older than the retention; returns how many. They are found in reading
/// order up to the first event that stays (so a cursor is either before the pruning mark or
/// sure to find every event after it) and deleted in short transactions, so that writers
/// never wait long for the write lock; each moves the pruning mark to its last event.
pub async fn prune(db: &Db, retention: std::time::Duration) -> AppResult<u64> {
    let horizon = crate::db::horizon(retention);
    let backend = db.conn().get_database_backend();
    // The first event that stays; everything before it in reading order has expired.
    let kept = after_in_order(
        backend,
        event::Entity::find().filter(event::Column::OccurredAt.gte(horizon)),
        LogPosition::default(),
    )
    .one(db.conn())
    .await?
    .map(|e| LogPosition::of(&e));
    let mut deleted = 0;
    let mut after = LogPosition::default();
    loop {
        let mut expired = after_in_order(backend, event::Entity::find(), after)
            .filter(event::Column::OccurredAt.lt(horizon))
            .limit(PRUNE_BATCH);
        if let Some(kept) = kept {
            let before_kept = match backend {
                DbBackend::Postgres => "(events.txid, events.position) < ($1, $2)",
                _ => "(events.txid, events.position) < (?, ?)",
            };
            expired = expired.filter(Expr::cust_with_values(
                before_kept,
                [kept.txid, kept.position],
            ));
        }
        let batch: Vec<LogPosition> = expired
            .select_only()
            .column(event::Column::Txid)
            .column(event::Column::Position)
            .into_tuple::<(i64, i64)>()
            .all(db.conn())
            .await?
            .into_iter()
            .map(|(txid, position)| LogPosition { txid, position })
            .collect();
        let Some(&last) = batch.last() else {
            return Ok(deleted);
        };
        let txn = db.begin_write().await?;
        let result = event::Entity::delete_many()
            .filter(event::Column::Position.is_in(batch.iter().map(|e| e.position)))
            .exec(&*txn)
            .await?;
        // The mark only moves forward (a concurrent pruner may be ahead).
        txn.execute_raw(Statement::from_sql_and_values(
            backend,
            match backend {
                DbBackend::Postgres => {
                    "UPDATE event_sequence SET pruned_txid = $1, pruned_position = $2 \
                     WHERE id = 1 AND (pruned_txid, pruned_position) < ($1, $2)"
                }
                _ => {
                    "UPDATE event_sequence SET pruned_txid = ?1, pruned_position = ?2 \
                     WHERE id = 1 AND (pruned_txid < ?1 OR (pruned_txid = ?1 AND pruned_position < ?2))"
                }
            },
            [last.txid.into(), last.position.into()],
        ))
        .await?;
        txn.commit().await?;
        deleted += result.rows_affected;
        after = last;
        if (batch.len() as u64) < PRUNE_BATCH {
            return Ok(deleted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shift_placeholders;

    #[test]
    fn placeholders_are_renumbered_outside_quoted_text() {
        assert_eq!(
            shift_placeholders("DELETE FROM t WHERE a = $1 AND b = $12", 3),
            "DELETE FROM t WHERE a = $4 AND b = $15"
        );
        assert_eq!(
            shift_placeholders(r#"SELECT '$1', "$2" FROM t WHERE c = $2"#, 10),
            r#"SELECT '$1', "$2" FROM t WHERE c = $12"#
        );
        assert_eq!(shift_placeholders("SELECT $1", 0), "SELECT $1");
        assert_eq!(shift_placeholders("SELECT $ 1, $a", 5), "SELECT $ 1, $a");
    }
}
