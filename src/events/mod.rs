//! The event log. Events are stored in the same transaction as the change they report, with
//! a position taken from a single counter row: the row lock orders positions by commit, so a
//! reader that saw position N has seen everything before it.

pub mod feed;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Select, Statement,
    sea_query::{Expr, ExprTrait},
};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    catalog::text_enum,
    db::Db,
    error::{AppError, AppResult},
    ids::new_id,
};
use entity::{event, event_sequence};

/// What happened; in webhook payloads and stored data the same types are written in lower
/// case with dots (`connection.created`, `sync.completed`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, async_graphql::Enum)]
pub enum EventType {
    /// A customer's system was connected (`connection.created`).
    ConnectionCreated,
    /// A connection's status changed (`connection.status_changed`).
    ConnectionStatusChanged,
    /// The remote refused a connection's credentials (`connection.auth_required`).
    ConnectionAuthRequired,
    /// A connection was disconnected and its credits returned (`connection.disconnected`).
    ConnectionDisconnected,
    /// A sync run began reading (`sync.started`).
    SyncStarted,
    /// A running sync's counts, at most once a second (`sync.progress`).
    SyncProgress,
    /// A sync run succeeded (`sync.completed`).
    SyncCompleted,
    /// A sync run failed or was cancelled (`sync.failed`).
    SyncFailed,
    /// A sync pass over one entity type added, updated or deleted records (`records.changed`).
    RecordsChanged,
    /// Reserved for bulk writes, which the API does not offer yet
    /// (`bulk_operation.completed`); never emitted by this version.
    BulkOperationCompleted,
    /// The account's credit pool moved (`credits.changed`).
    CreditsChanged,
    /// A webhook endpoint was disabled: it answered 410 Gone or kept failing too long
    /// (`webhook_endpoint.disabled`).
    WebhookEndpointDisabled,
    /// A remote system failed during a sync or a health check (`system.error`).
    SystemError,
    /// A test delivery asked for with `sendTestWebhook`; only ever sent to that endpoint.
    WebhookTest,
}
text_enum!(EventType {
    ConnectionCreated => "connection.created",
    ConnectionStatusChanged => "connection.status_changed",
    ConnectionAuthRequired => "connection.auth_required",
    ConnectionDisconnected => "connection.disconnected",
    SyncStarted => "sync.started",
    SyncProgress => "sync.progress",
    SyncCompleted => "sync.completed",
    SyncFailed => "sync.failed",
    RecordsChanged => "records.changed",
    BulkOperationCompleted => "bulk_operation.completed",
    CreditsChanged => "credits.changed",
    WebhookEndpointDisabled => "webhook_endpoint.disabled",
    SystemError => "system.error",
    WebhookTest => "webhook.test",
});

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
            event_type: Set(e.event_type.as_str().to_owned()),
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
            e.event_type.as_str().into(),
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
    pub types: Option<Vec<EventType>>,
    pub customer_id: Option<Uuid>,
    pub connection_id: Option<Uuid>,
}

impl Filter {
    pub fn matches(&self, event: &event::Model) -> bool {
        event.account_id == self.account_id
            && self
                .scope_connection_id
                .is_none_or(|c| event.connection_id == Some(c))
            && self
                .connection_id
                .is_none_or(|c| event.connection_id == Some(c))
            && self
                .customer_id
                .is_none_or(|c| event.customer_id == Some(c))
            && self
                .types
                .as_ref()
                .is_none_or(|types| types.iter().any(|t| t.as_str() == event.event_type))
    }

    fn apply(&self, mut select: Select<event::Entity>) -> Select<event::Entity> {
        select = select.filter(event::Column::AccountId.eq(self.account_id));
        if let Some(id) = self.scope_connection_id {
            select = select.filter(event::Column::ConnectionId.eq(id));
        }
        if let Some(id) = self.connection_id {
            select = select.filter(event::Column::ConnectionId.eq(id));
        }
        if let Some(id) = self.customer_id {
            select = select.filter(event::Column::CustomerId.eq(id));
        }
        if let Some(types) = &self.types {
            select =
                select.filter(event::Column::EventType.is_in(types.iter().map(|t| t.as_str())));
        }
        select
    }
}

/// Refuses a cursor whose successors were pruned (reading on would silently skip events),
/// and one past the end of the log (a reader would wait for positions that were never
/// given, say after a restore from backup).
pub async fn ensure_retained(db: &impl ConnectionTrait, after: i64) -> AppResult<()> {
    let oldest: Option<Option<i64>> = event::Entity::find()
        .select_only()
        .column_as(Expr::col(event::Column::Position).min(), "oldest")
        .into_tuple()
        .one(db)
        .await?;
    let last = event_sequence::Entity::find_by_id(1)
        .one(db)
        .await?
        .map_or(0, |s| s.last_position);
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
        .apply(event::Entity::find())
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
    let horizon = chrono::Duration::from_std(retention)
        .ok()
        .and_then(|retention| Utc::now().checked_sub_signed(retention))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
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

/// Prunes expired events now and then: every tenth of the retention, at most hourly.
pub async fn prune_periodically(
    db: Db,
    retention: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let every = (retention / 10).clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(3600),
    );
    loop {
        match prune(&db, retention).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "expired events pruned"),
            Err(err) => tracing::error!(error = %err, "pruning events failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
