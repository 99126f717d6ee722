//! Recording: writes sent attempts in batches, one write transaction for as many attempts as
//! have finished since the last one. A success is a bulk update; a failure reschedules its
//! delivery on the retry schedule or ends it ([`AfterFailure`]), and every outcome counts
//! towards its endpoint's health (`health.rs`).

use sea_orm::ActiveEnum as _;
use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use chrono::{DateTime, Utc};
use rand::Rng;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
    sea_query::{Expr, ExprTrait},
};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{DeliverySettings, health, send::Sent};
use crate::{
    db::Db,
    error::AppResult,
    ids::new_id,
    webhooks::{DeliveryStatus, LINGER},
};
use entity::{webhook_attempt, webhook_delivery};

const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// SQLite allows 32,766 bound values per statement; an attempt row binds 7.
const ROWS_PER_STATEMENT: usize = 500;
/// Sent attempts written per transaction, at most.
const RECORD_BATCH: usize = 512;
/// Tries to write one batch before leaving its deliveries to their leases.
const RECORD_TRIES: u32 = 5;

/// Writes sent attempts in batches until every sender is gone.
pub async fn record_sent(
    db: Db,
    settings: DeliverySettings,
    mut sent: mpsc::UnboundedReceiver<Sent>,
) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while sent.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        if batch.len() < RECORD_BATCH / 8 {
            tokio::time::sleep(LINGER).await;
            while batch.len() < RECORD_BATCH
                && let Ok(more) = sent.try_recv()
            {
                batch.push(more);
            }
        }
        for tries in 1..=RECORD_TRIES {
            match record_batch(&db, &settings, &batch).await {
                Ok(()) => break,
                Err(err) if tries < RECORD_TRIES => {
                    tracing::warn!(error = %err, tries, "recording webhook attempts failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(tries))).await;
                }
                // The deliveries stay leased and are sent again once their leases expire.
                Err(err) => {
                    tracing::error!(error = %err, attempts = batch.len(), "recording webhook attempts failed");
                }
            }
        }
        batch.clear();
    }
}

/// Writes one batch of sent attempts in one transaction.
async fn record_batch(db: &Db, settings: &DeliverySettings, batch: &[Sent]) -> AppResult<()> {
    let txn = db.begin_write().await?;
    let batch = still_stored(&*txn, batch).await?;
    let attempts: Vec<webhook_attempt::ActiveModel> = batch
        .iter()
        .map(|sent| webhook_attempt::ActiveModel {
            id: Set(new_id()),
            delivery_id: Set(sent.delivery.id),
            attempted_at: Set(sent.attempted_at),
            response_status: Set(sent.outcome.status().map(i32::from)),
            duration_ms: Set(sent.outcome.duration_ms()),
            error: Set(sent.outcome.error()),
            response_body: Set(sent.outcome.body()),
        })
        .collect();
    for chunk in attempts.chunks(ROWS_PER_STATEMENT) {
        webhook_attempt::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(&*txn)
            .await?;
    }
    let (succeeded, failed): (Vec<&Sent>, Vec<&Sent>) =
        batch.iter().partition(|sent| sent.outcome.succeeded());
    mark_succeeded(&*txn, &succeeded).await?;
    let now = Utc::now();
    for sent in failed {
        let after = AfterFailure::of(settings, sent, now);
        reschedule(&*txn, sent, &after).await?;
    }
    health::update_endpoints(&*txn, settings, &batch).await?;
    txn.commit().await?;
    Ok(())
}

/// The attempts whose delivery is still stored: one whose endpoint was deleted meanwhile is
/// gone (cascade), with nothing to record.
async fn still_stored<'a>(
    txn: &impl ConnectionTrait,
    batch: &'a [Sent],
) -> AppResult<Vec<&'a Sent>> {
    let mut live = HashSet::with_capacity(batch.len());
    for chunk in batch.chunks(ROWS_PER_STATEMENT) {
        let ids: Vec<Uuid> = chunk.iter().map(|sent| sent.delivery.id).collect();
        live.extend(
            webhook_delivery::Entity::find()
                .select_only()
                .column(webhook_delivery::Column::Id)
                .filter(webhook_delivery::Column::Id.is_in(ids))
                .into_tuple::<Uuid>()
                .all(txn)
                .await?,
        );
    }
    Ok(batch
        .iter()
        .filter(|sent| live.contains(&sent.delivery.id))
        .collect())
}

/// Ends the succeeded deliveries, per lease holder (one per process in practice): a
/// delivery is only finished while this process still holds it. `redeliverWebhook` may have
/// reset it between the response and this transaction; the redelivery then stands.
async fn mark_succeeded(txn: &impl ConnectionTrait, succeeded: &[&Sent]) -> AppResult<()> {
    let mut by_holder: HashMap<Option<&str>, Vec<Uuid>> = HashMap::new();
    for sent in succeeded {
        by_holder
            .entry(sent.delivery.locked_by.as_deref())
            .or_default()
            .push(sent.delivery.id);
    }
    for (holder, ids) in by_holder {
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
            release_held(update, holder).exec(txn).await?;
        }
    }
    Ok(())
}

/// What a failed attempt makes of its delivery.
#[derive(Debug, PartialEq)]
enum AfterFailure {
    /// Tried again at this time, on the retry schedule (or later, when the receiver asked).
    RetryAt(DateTime<Utc>),
    /// No more attempts: `FAILED` after `410 Gone`, `EXHAUSTED` once the schedule is used up.
    End(DeliveryStatus),
}

impl AfterFailure {
    fn of(settings: &DeliverySettings, failed: &Sent, now: DateTime<Utc>) -> Self {
        if failed.outcome.gone() {
            return Self::End(DeliveryStatus::Failed);
        }
        let attempts = failed.delivery.attempt_count as usize + 1;
        match retry_delay(settings, attempts, failed.outcome.retry_after()) {
            Some(delay) => Self::RetryAt(now + delay),
            None => Self::End(DeliveryStatus::Exhausted),
        }
    }

    fn status(&self) -> DeliveryStatus {
        match self {
            Self::RetryAt(_) => DeliveryStatus::Pending,
            Self::End(status) => *status,
        }
    }

    fn next_attempt_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Self::RetryAt(at) => Some(*at),
            Self::End(_) => None,
        }
    }
}

/// Stores a failed attempt's consequence for its delivery.
async fn reschedule(
    txn: &impl ConnectionTrait,
    failed: &Sent,
    after: &AfterFailure,
) -> AppResult<()> {
    let update = webhook_delivery::Entity::update_many()
        .col_expr(
            webhook_delivery::Column::Status,
            Expr::value(after.status().to_value()),
        )
        .col_expr(
            webhook_delivery::Column::AttemptCount,
            Expr::value(failed.delivery.attempt_count + 1),
        )
        .col_expr(
            webhook_delivery::Column::NextAttemptAt,
            Expr::value(after.next_attempt_at()),
        )
        .filter(webhook_delivery::Column::Id.eq(failed.delivery.id));
    release_held(update, failed.delivery.locked_by.as_deref())
        .exec(txn)
        .await?;
    Ok(())
}

/// Ends the lease of the selected deliveries, and selects only those `holder` (the lease
/// the attempt was made under) still holds.
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;
    use uuid::Uuid;

    use super::{AfterFailure, DeliverySettings, Sent};
    use crate::webhooks::{DeliveryStatus, deliver::send::Outcome, pending_delivery};

    fn settings() -> DeliverySettings {
        DeliverySettings {
            schedule: vec![10, 100],
            allow_private: false,
            disable_after: Duration::from_secs(3600),
            per_endpoint: 1,
            concurrency: 1,
            lease: Duration::from_secs(60),
        }
    }

    fn failed(attempts_before: i32, status: u16, retry_after: Option<u64>) -> Sent {
        let endpoint = entity::webhook_endpoint::Model {
            id: Uuid::new_v4(),
            account_id: Uuid::new_v4(),
            url: "https://example.com/hook".into(),
            description: None,
            event_types: serde_json::json!([]),
            flow_ids: None,
            enabled: true,
            disabled_reason: None,
            secret: Vec::new(),
            previous_secret: None,
            previous_secret_until: None,
            failing_since: None,
            created_at: Utc::now(),
        };
        let mut delivery = pending_delivery(&endpoint, 1, Utc::now());
        delivery.attempt_count = attempts_before;
        Sent {
            delivery,
            attempted_at: Utc::now(),
            outcome: Outcome::Answered {
                status,
                duration_ms: 5,
                body: None,
                retry_after: retry_after.map(Duration::from_secs),
            },
        }
    }

    /// The delay the retry is scheduled after, in whole seconds.
    fn retried_after(after: &AfterFailure, now: chrono::DateTime<Utc>) -> i64 {
        match after {
            AfterFailure::RetryAt(at) => (*at - now).num_seconds(),
            AfterFailure::End(status) => panic!("ended as {status:?}"),
        }
    }

    #[test]
    fn a_failure_is_retried_on_the_schedule_with_jitter_until_it_is_used_up() {
        let now = Utc::now();
        let first = AfterFailure::of(&settings(), &failed(0, 500, None), now);
        assert_eq!(first.status(), DeliveryStatus::Pending);
        assert!((8..12).contains(&retried_after(&first, now)));
        let second = AfterFailure::of(&settings(), &failed(1, 500, None), now);
        assert!((80..120).contains(&retried_after(&second, now)));
        let third = AfterFailure::of(&settings(), &failed(2, 500, None), now);
        assert_eq!(third, AfterFailure::End(DeliveryStatus::Exhausted));
        assert_eq!(third.next_attempt_at(), None);
    }

    #[test]
    fn gone_ends_a_delivery_and_retry_after_only_lengthens_the_wait() {
        let now = Utc::now();
        assert_eq!(
            AfterFailure::of(&settings(), &failed(0, 410, None), now),
            AfterFailure::End(DeliveryStatus::Failed)
        );
        let asked_longer = AfterFailure::of(&settings(), &failed(0, 429, Some(600)), now);
        assert_eq!(retried_after(&asked_longer, now), 600);
        let asked_shorter = AfterFailure::of(&settings(), &failed(0, 429, Some(1)), now);
        assert!((8..12).contains(&retried_after(&asked_shorter, now)));
        let asked_too_long = AfterFailure::of(&settings(), &failed(0, 429, Some(7 * 86_400)), now);
        assert_eq!(
            retried_after(&asked_too_long, now),
            86_400,
            "capped at a day"
        );
    }
}
