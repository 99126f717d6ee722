//! The event log. Events are stored in the same transaction as the change they report, with
//! a position taken from a single counter row: the row lock orders positions by commit, so a
//! reader that saw position N has seen everything before it.

use chrono::Utc;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter,
    sea_query::{Expr, ExprTrait},
};
use serde_json::Value;
use uuid::Uuid;

use crate::{catalog::text_enum, ids::new_id};
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
    event::Entity::insert_many(rows).exec(txn).await?;
    Ok(positions)
}
