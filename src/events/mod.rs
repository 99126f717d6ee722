//! The event log. Events are stored in the same transaction as the change they report, with
//! a position taken from a single counter row: the row lock orders positions by commit, so a
//! reader that saw position N has seen everything before it.

pub mod feed;

use chrono::Utc;
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, async_graphql::Enum)]
pub enum EventType {
    ConnectionCreated,
    ConnectionStatusChanged,
    ConnectionAuthRequired,
    ConnectionDisconnected,
    SyncStarted,
    SyncProgress,
    SyncCompleted,
    SyncFailed,
    RecordsChanged,
    BulkOperationCompleted,
    CreditsChanged,
    WebhookEndpointDisabled,
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
    let rows = events
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
        });
    event::Entity::insert_many(rows)
        .exec_without_returning(txn)
        .await?;
    if txn.get_database_backend() == DbBackend::Postgres {
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

/// Refuses a cursor whose successors were pruned: reading on would silently skip events.
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
    let pruned = match oldest.flatten() {
        Some(oldest) => oldest > after + 1,
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

/// Deletes events older than the retention; returns how many.
pub async fn prune(db: &Db, retention: std::time::Duration) -> AppResult<u64> {
    let horizon =
        Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let txn = db.begin_write().await?;
    let deleted = event::Entity::delete_many()
        .filter(event::Column::OccurredAt.lt(horizon))
        .exec(&*txn)
        .await?;
    txn.commit().await?;
    Ok(deleted.rows_affected)
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
