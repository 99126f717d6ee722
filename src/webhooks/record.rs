//! The recorder: writes finished attempts in batches, one write transaction for as many
//! attempts as have finished since the last one. A success is a bulk update; a failure
//! reschedules its delivery on the retry schedule (or ends it) and counts against its
//! endpoint's failure window.

use sea_orm::ActiveEnum as _;
use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use chrono::{DateTime, Utc};
use rand::Rng;
use reqwest::StatusCode;
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
    sea_query::{Expr, ExprTrait},
};
use serde_json::json;
use uuid::Uuid;

use super::{
    DeliveryStatus,
    deliver::{Attempt, DeliverySettings},
};
use crate::{
    db::Db,
    error::AppResult,
    events::{self, EventType, NewEvent},
    ids::{self, new_id},
};
use entity::{webhook_attempt, webhook_delivery, webhook_endpoint};

const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// SQLite allows 32,766 bound values per statement; an attempt row binds 7.
const ROWS_PER_STATEMENT: usize = 500;

/// One attempt, sent and waiting to be written.
pub struct Finished {
    pub delivery: webhook_delivery::Model,
    pub attempted_at: DateTime<Utc>,
    pub attempt: Attempt,
}

/// Writes one batch of finished attempts in one transaction.
pub async fn record_batch(
    db: &Db,
    settings: &DeliverySettings,
    batch: &[Finished],
) -> AppResult<()> {
    let txn = db.begin_write().await?;
    // A delivery whose endpoint was deleted meanwhile is gone (cascade): nothing to record.
    let mut live = HashSet::with_capacity(batch.len());
    for chunk in batch.chunks(ROWS_PER_STATEMENT) {
        let ids: Vec<Uuid> = chunk.iter().map(|f| f.delivery.id).collect();
        live.extend(
            webhook_delivery::Entity::find()
                .select_only()
                .column(webhook_delivery::Column::Id)
                .filter(webhook_delivery::Column::Id.is_in(ids))
                .into_tuple::<Uuid>()
                .all(&*txn)
                .await?,
        );
    }
    let batch: Vec<&Finished> = batch
        .iter()
        .filter(|f| live.contains(&f.delivery.id))
        .collect();
    let attempts: Vec<webhook_attempt::ActiveModel> = batch
        .iter()
        .map(|f| webhook_attempt::ActiveModel {
            id: Set(new_id()),
            delivery_id: Set(f.delivery.id),
            attempted_at: Set(f.attempted_at),
            response_status: Set(f.attempt.status.map(i32::from)),
            duration_ms: Set(f.attempt.duration_ms),
            error: Set(f.attempt.error.clone()),
            response_body: Set(f.attempt.body.clone()),
        })
        .collect();
    for chunk in attempts.chunks(ROWS_PER_STATEMENT) {
        webhook_attempt::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(&*txn)
            .await?;
    }
    // Per lease holder (one per process in practice): a delivery is only finished while this
    // process still holds it. `redeliverWebhook` may have reset it between the response and
    // this transaction; the redelivery then stands.
    let mut succeeded: HashMap<Option<String>, Vec<Uuid>> = HashMap::new();
    for f in batch.iter().filter(|f| f.attempt.succeeded()) {
        succeeded
            .entry(f.delivery.locked_by.clone())
            .or_default()
            .push(f.delivery.id);
    }
    for (holder, ids) in &succeeded {
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let update = webhook_delivery::Entity::update_many()
                .col_expr(
                    webhook_delivery::Column::Status,
                    Expr::value(DeliveryStatus::Succeeded.to_value()),
                )
                .col_expr(
                    webhook_delivery::Column::AttemptCount,
                    Expr::col(webhook_delivery::Column::AttemptCount).add(1),
                )
                .col_expr(
                    webhook_delivery::Column::NextAttemptAt,
                    Expr::value(Option::<DateTime<Utc>>::None),
                )
                .filter(webhook_delivery::Column::Id.is_in(chunk.to_vec()));
            release_held(update, holder.as_deref()).exec(&*txn).await?;
        }
    }
    for failed in batch.iter().filter(|f| !f.attempt.succeeded()) {
        reschedule(&*txn, settings, failed).await?;
    }
    update_endpoints(&*txn, settings, &batch).await?;
    txn.commit().await?;
    Ok(())
}

/// A failed attempt: the next one on the schedule, or the end of the delivery.
async fn reschedule(
    txn: &impl ConnectionTrait,
    settings: &DeliverySettings,
    failed: &Finished,
) -> AppResult<()> {
    let attempts = failed.delivery.attempt_count + 1;
    let (status, next) = if failed.attempt.status == Some(StatusCode::GONE.as_u16()) {
        (DeliveryStatus::Failed, None)
    } else {
        match retry_delay(settings, attempts as usize, failed.attempt.retry_after) {
            Some(delay) => (DeliveryStatus::Pending, Some(Utc::now() + delay)),
            None => (DeliveryStatus::Exhausted, None),
        }
    };
    let update = webhook_delivery::Entity::update_many()
        .col_expr(
            webhook_delivery::Column::Status,
            Expr::value(status.to_value()),
        )
        .col_expr(
            webhook_delivery::Column::AttemptCount,
            Expr::value(attempts),
        )
        .col_expr(webhook_delivery::Column::NextAttemptAt, Expr::value(next))
        .filter(webhook_delivery::Column::Id.eq(failed.delivery.id));
    release_held(update, failed.delivery.locked_by.as_deref())
        .exec(txn)
        .await?;
    Ok(())
}

/// Ends the lease of the selected deliveries, and selects only those `holder` (the lease
/// the finished attempt was made under) still holds.
fn release_held(
    update: sea_orm::UpdateMany<webhook_delivery::Entity>,
    holder: Option<&str>,
) -> sea_orm::UpdateMany<webhook_delivery::Entity> {
    let held = match holder {
        Some(holder) => webhook_delivery::Column::LockedBy.eq(holder),
        None => webhook_delivery::Column::LockedBy.is_null(),
    };
    update
        .col_expr(
            webhook_delivery::Column::LockedBy,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            webhook_delivery::Column::LockedUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(held)
}

/// The wait before the next attempt: the schedule with ±20 % jitter, or the receiver's
/// `Retry-After` when it asks for longer; `None` once the schedule is used up.
fn retry_delay(
    settings: &DeliverySettings,
    attempts: usize,
    retry_after: Option<Duration>,
) -> Option<chrono::Duration> {
    let scheduled = *settings.schedule.get(attempts.checked_sub(1)?)?;
    let jitter = rand::rng().random_range(0.8..1.2);
    let delay = Duration::from_secs_f64(scheduled as f64 * jitter);
    let delay = retry_after.map_or(delay, |asked| asked.min(MAX_RETRY_AFTER).max(delay));
    chrono::Duration::from_std(delay).ok()
}

/// Endpoint health, replaying the batch's outcomes per endpoint in the order they finished:
/// any success clears the failure streak, `410 Gone` disables the endpoint, and failing
/// continuously for the configured window disables it too.
async fn update_endpoints(
    txn: &impl ConnectionTrait,
    settings: &DeliverySettings,
    batch: &[&Finished],
) -> AppResult<()> {
    let mut outcomes: HashMap<Uuid, Vec<&Attempt>> = HashMap::new();
    for finished in batch {
        outcomes
            .entry(finished.delivery.endpoint_id)
            .or_default()
            .push(&finished.attempt);
    }
    let (only_successes, mixed): (Vec<_>, Vec<_>) = outcomes
        .into_iter()
        .partition(|(_, attempts)| attempts.iter().all(|a| a.succeeded()));
    let healthy: Vec<Uuid> = only_successes.into_iter().map(|(id, _)| id).collect();
    if !healthy.is_empty() {
        webhook_endpoint::Entity::update_many()
            .col_expr(
                webhook_endpoint::Column::FailingSince,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(webhook_endpoint::Column::Id.is_in(healthy))
            .filter(webhook_endpoint::Column::FailingSince.is_not_null())
            .exec(txn)
            .await?;
    }
    let now = Utc::now();
    for (endpoint_id, attempts) in mixed {
        let Some(endpoint) = webhook_endpoint::Entity::find_by_id(endpoint_id)
            .one(txn)
            .await?
        else {
            continue;
        };
        let mut failing_since = endpoint.failing_since;
        let mut disable_for = None;
        for attempt in attempts {
            if attempt.succeeded() {
                failing_since = None;
            } else if attempt.status == Some(StatusCode::GONE.as_u16()) {
                disable_for = Some("the endpoint answered 410 Gone");
            } else {
                let since = *failing_since.get_or_insert(now);
                if (now - since).to_std().unwrap_or_default() >= settings.disable_after {
                    disable_for = Some("deliveries kept failing for the configured window");
                }
            }
        }
        match disable_for {
            Some(reason) => disable(txn, endpoint, failing_since, reason).await?,
            None if failing_since != endpoint.failing_since => {
                let mut active: webhook_endpoint::ActiveModel = endpoint.into();
                active.failing_since = Set(failing_since);
                active.update(txn).await?;
            }
            None => {}
        }
    }
    Ok(())
}

/// Disables an endpoint and stores `webhook_endpoint.disabled`.
async fn disable(
    txn: &impl ConnectionTrait,
    endpoint: webhook_endpoint::Model,
    failing_since: Option<DateTime<Utc>>,
    reason: &str,
) -> AppResult<()> {
    if !endpoint.enabled {
        return Ok(());
    }
    let (account_id, id) = (endpoint.account_id, endpoint.id);
    let mut active: webhook_endpoint::ActiveModel = endpoint.into();
    active.enabled = Set(false);
    active.disabled_reason = Set(Some(reason.to_owned()));
    active.failing_since = Set(failing_since);
    active.update(txn).await?;
    let event = NewEvent {
        account_id,
        customer_id: None,
        connection_id: None,
        event_type: EventType::WebhookEndpointDisabled,
        data: json!({ "endpoint_id": ids::encode(ids::Kind::WebhookEndpoint, id), "reason": reason }),
    };
    events::record(txn, vec![event]).await?;
    tracing::warn!(endpoint.id = %id, reason, "webhook endpoint disabled");
    Ok(())
}
