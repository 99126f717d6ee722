//! Outbound webhooks: endpoints per account, deliveries created from the event log by the
//! dispatcher, and sent, signed and retried by the delivery workers.

pub mod deliver;
pub mod dispatch;
pub mod retention;
pub mod sign;

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde_json::json;
use uuid::Uuid;

use crate::{
    crypto::Cipher,
    db::Db,
    error::{AppError, AppResult},
    events::{self, EventType, NewEvent},
    ids::new_id,
    notify::Notice,
    pagination::{Page, PageRequest, fetch_page},
};
pub use entity::enums::DeliveryStatus;
use entity::{event, webhook_attempt, webhook_delivery, webhook_endpoint};

const MAX_DESCRIPTION_LEN: usize = 500;
/// How long the dispatcher, the claimer and the recorder wait after a wake-up to gather more
/// work: a few milliseconds of latency buy far fewer write transactions while events trickle
/// in one at a time, which leaves SQLite's single writer to the API.
pub(crate) const LINGER: std::time::Duration = std::time::Duration::from_millis(5);
/// How long the previous secret keeps signing after a rotation.
const ROTATION_OVERLAP: chrono::Duration = chrono::Duration::hours(24);

pub struct EndpointInput {
    pub url: Option<String>,
    pub description: Option<Option<String>>,
    pub event_types: Option<Vec<EventType>>,
    /// `Some(None)` clears the flow filter.
    pub flow_ids: Option<Option<Vec<Uuid>>>,
    pub enabled: Option<bool>,
}

/// The flows whose `flow.triggered` events the endpoint wants (`flw_…` ids); `None`: all.
pub fn flow_ids(endpoint: &webhook_endpoint::Model) -> Option<Vec<String>> {
    endpoint.flow_ids.as_ref().map(|ids| {
        ids.as_array()
            .into_iter()
            .flatten()
            .filter_map(|id| id.as_str().map(str::to_owned))
            .collect()
    })
}

/// Checks a flow filter's flows are the account's; the value to store.
async fn flow_filter(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    ids: Option<Vec<Uuid>>,
) -> AppResult<Option<serde_json::Value>> {
    let Some(ids) = ids else {
        return Ok(None);
    };
    if ids.is_empty() {
        return Err(AppError::bad_input(
            "`flowIds` must name at least one flow; null takes every flow's events",
        ));
    }
    crate::flows::check_ids(db, account_id, &ids).await?;
    let mut encoded: Vec<String> = ids
        .into_iter()
        .map(|id| crate::ids::encode(crate::ids::Kind::Flow, id))
        .collect();
    encoded.sort_unstable();
    encoded.dedup();
    Ok(Some(serde_json::Value::from(encoded)))
}

pub fn event_types(endpoint: &webhook_endpoint::Model) -> AppResult<Vec<EventType>> {
    events::types_from_json(&endpoint.event_types, "webhook_endpoints.event_types")
}

fn validate_description(description: Option<String>) -> AppResult<Option<String>> {
    let description = description
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty());
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_LEN)
    {
        return Err(AppError::bad_input(format!(
            "`description` must be at most {MAX_DESCRIPTION_LEN} characters"
        )));
    }
    Ok(description)
}

async fn checked_url(url: &str, allow_private: bool) -> AppResult<String> {
    let parsed = crate::guard::parse(url, "url")?;
    crate::guard::resolve(&parsed, allow_private, "url").await?;
    Ok(parsed.to_string())
}

/// Endpoints one account may have: every event is routed to each of them, inside the
/// dispatcher's transaction.
pub const MAX_ENDPOINTS_PER_ACCOUNT: u64 = 100;

/// Creates an endpoint; returns it with its secret (shown once).
pub async fn create(
    db: &Db,
    cipher: &Cipher,
    account_id: Uuid,
    input: EndpointInput,
    allow_private: bool,
) -> AppResult<(webhook_endpoint::Model, String)> {
    let flow_ids = flow_filter(db.conn(), account_id, input.flow_ids.flatten()).await?;
    let url = checked_url(input.url.as_deref().unwrap_or_default(), allow_private).await?;
    let description = validate_description(input.description.flatten())?;
    let id = new_id();
    let secret = sign::new_secret();
    let txn = db.begin_write().await?;
    // Concurrent creates of one account count one after another: the account row is locked
    // on PostgreSQL (sea-query leaves the lock out on SQLite, whose write lock already
    // serializes them), as `connections::find_for_update` does.
    entity::account::Entity::find_by_id(account_id)
        .lock_exclusive()
        .one(&*txn)
        .await?;
    let existing = webhook_endpoint::Entity::find()
        .filter(webhook_endpoint::Column::AccountId.eq(account_id))
        .count(&*txn)
        .await?;
    if existing >= MAX_ENDPOINTS_PER_ACCOUNT {
        return Err(AppError::Conflict(format!(
            "an account has at most {MAX_ENDPOINTS_PER_ACCOUNT} webhook endpoints; delete one first"
        )));
    }
    let endpoint = webhook_endpoint::ActiveModel {
        id: Set(id),
        account_id: Set(account_id),
        url: Set(url),
        description: Set(description),
        event_types: Set(events::types_to_json(
            &input.event_types.unwrap_or_default(),
        )),
        flow_ids: Set(flow_ids),
        enabled: Set(input.enabled.unwrap_or(true)),
        disabled_reason: Set(None),
        secret: Set(cipher.encrypt(secret.as_bytes(), id.as_bytes())),
        previous_secret: Set(None),
        previous_secret_until: Set(None),
        failing_since: Set(None),
        created_at: Set(Utc::now()),
    }
    .insert(&*txn)
    .await?;
    txn.commit().await?;
    Ok((endpoint, secret))
}

pub async fn find(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    id: Uuid,
) -> AppResult<webhook_endpoint::Model> {
    webhook_endpoint::Entity::find_by_id(id)
        .filter(webhook_endpoint::Column::AccountId.eq(account_id))
        .one(db)
        .await?
        .ok_or(AppError::NotFound("webhook endpoint"))
}

pub async fn list(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    page: PageRequest,
) -> AppResult<Page<webhook_endpoint::Model>> {
    let select =
        webhook_endpoint::Entity::find().filter(webhook_endpoint::Column::AccountId.eq(account_id));
    Ok(fetch_page(db, select, webhook_endpoint::Column::Id, page).await?)
}

pub async fn update(
    db: &Db,
    account_id: Uuid,
    id: Uuid,
    input: EndpointInput,
    allow_private: bool,
) -> AppResult<webhook_endpoint::Model> {
    let url = match input.url.as_deref() {
        Some(url) => Some(checked_url(url, allow_private).await?),
        None => None,
    };
    let description = input.description.map(validate_description).transpose()?;
    let flow_ids = match input.flow_ids {
        Some(ids) => Some(flow_filter(db.conn(), account_id, ids).await?),
        None => None,
    };
    let txn = db.begin_write().await?;
    let mut active: webhook_endpoint::ActiveModel = find(&*txn, account_id, id).await?.into();
    if let Some(url) = url {
        active.url = Set(url);
    }
    if let Some(description) = description {
        active.description = Set(description);
    }
    if let Some(types) = input.event_types {
        active.event_types = Set(events::types_to_json(&types));
    }
    if let Some(flow_ids) = flow_ids {
        active.flow_ids = Set(flow_ids);
    }
    if let Some(enabled) = input.enabled {
        active.enabled = Set(enabled);
        if enabled {
            active.disabled_reason = Set(None);
            active.failing_since = Set(None);
        }
    }
    let endpoint = active.update(&*txn).await?;
    txn.commit().await?;
    Ok(endpoint)
}

pub async fn delete(db: &Db, account_id: Uuid, id: Uuid) -> AppResult<()> {
    let txn = db.begin_write().await?;
    find(&*txn, account_id, id).await?;
    webhook_endpoint::Entity::delete_by_id(id)
        .exec(&*txn)
        .await?;
    txn.commit().await?;
    Ok(())
}

/// A new secret; the previous one keeps signing for 24 hours.
pub async fn rotate_secret(
    db: &Db,
    cipher: &Cipher,
    account_id: Uuid,
    id: Uuid,
) -> AppResult<(webhook_endpoint::Model, String)> {
    let secret = sign::new_secret();
    let txn = db.begin_write().await?;
    let endpoint = find(&*txn, account_id, id).await?;
    let previous = endpoint.secret.clone();
    let mut active: webhook_endpoint::ActiveModel = endpoint.into();
    active.secret = Set(cipher.encrypt(secret.as_bytes(), id.as_bytes()));
    active.previous_secret = Set(Some(previous));
    active.previous_secret_until = Set(Some(Utc::now() + ROTATION_OVERLAP));
    let endpoint = active.update(&*txn).await?;
    txn.commit().await?;
    Ok((endpoint, secret))
}

/// The secrets that sign now: the current one, and the previous one during a rotation.
pub fn signing_secrets(
    cipher: &Cipher,
    endpoint: &webhook_endpoint::Model,
) -> AppResult<Vec<String>> {
    let open = |sealed: &[u8]| {
        cipher
            .decrypt(sealed, endpoint.id.as_bytes())
            .and_then(|s| String::from_utf8(s).ok())
            .ok_or_else(|| {
                AppError::internal(anyhow::anyhow!(
                    "secret of endpoint {} does not decrypt",
                    endpoint.id
                ))
            })
    };
    let mut secrets = vec![open(&endpoint.secret)?];
    if let (Some(previous), Some(until)) =
        (&endpoint.previous_secret, endpoint.previous_secret_until)
        && until > Utc::now()
    {
        secrets.push(open(previous)?);
    }
    Ok(secrets)
}

pub async fn insert_delivery(
    txn: &impl ConnectionTrait,
    endpoint: &webhook_endpoint::Model,
    position: i64,
) -> AppResult<webhook_delivery::Model> {
    Ok(new_delivery(endpoint, position).insert(txn).await?)
}

/// A pending delivery of the event at `position` to `endpoint`, due now.
pub fn new_delivery(
    endpoint: &webhook_endpoint::Model,
    position: i64,
) -> webhook_delivery::ActiveModel {
    pending_delivery(endpoint, position, Utc::now())
        .into_active_model()
        .reset_all()
}

/// A pending, unleased delivery of the event at `position` to `endpoint`, due at `now`.
pub fn pending_delivery(
    endpoint: &webhook_endpoint::Model,
    position: i64,
    now: chrono::DateTime<Utc>,
) -> webhook_delivery::Model {
    webhook_delivery::Model {
        id: new_id(),
        endpoint_id: endpoint.id,
        account_id: endpoint.account_id,
        event_position: position,
        status: DeliveryStatus::Pending,
        attempt_count: 0,
        next_attempt_at: Some(now),
        locked_by: None,
        locked_until: None,
        created_at: now,
    }
}

/// Stores a `webhook.test` event and a delivery of it to this endpoint only.
pub async fn send_test(
    db: &Db,
    account_id: Uuid,
    endpoint_id: Uuid,
) -> AppResult<webhook_delivery::Model> {
    let txn = db.begin_write().await?;
    let endpoint = enabled(find(&*txn, account_id, endpoint_id).await?)?;
    let event = NewEvent {
        account_id,
        customer_id: None,
        connection_id: None,
        event_type: EventType::WebhookTest,
        data: json!({ "endpoint_id": crate::ids::encode(crate::ids::Kind::WebhookEndpoint, endpoint_id), "message": "test delivery" }),
    };
    let position = events::record(&*txn, vec![event]).await?[0];
    let delivery = insert_delivery(&*txn, &endpoint, position).await?;
    txn.after_commit(Notice::DeliveriesQueued);
    txn.commit().await?;
    Ok(delivery)
}

pub async fn find_delivery(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    id: Uuid,
) -> AppResult<webhook_delivery::Model> {
    webhook_delivery::Entity::find_by_id(id)
        .filter(webhook_delivery::Column::AccountId.eq(account_id))
        .one(db)
        .await?
        .ok_or(AppError::NotFound("webhook delivery"))
}

/// Sends a delivery again, now, whatever its status; its attempts are kept.
pub async fn redeliver(db: &Db, account_id: Uuid, id: Uuid) -> AppResult<webhook_delivery::Model> {
    let txn = db.begin_write().await?;
    let delivery = find_delivery(&*txn, account_id, id).await?;
    enabled(find(&*txn, account_id, delivery.endpoint_id).await?)?;
    if delivery
        .locked_until
        .is_some_and(|until| until > Utc::now())
    {
        // Reset now, the attempt in flight would be recorded against the redelivery's own
        // claim, and the delivery sent once more than asked.
        return Err(AppError::Conflict(
            "the delivery is being sent now; redeliver it once this attempt is recorded".into(),
        ));
    }
    let mut active: webhook_delivery::ActiveModel = delivery.into();
    active.status = Set(DeliveryStatus::Pending);
    active.next_attempt_at = Set(Some(Utc::now()));
    active.locked_by = Set(None);
    active.locked_until = Set(None);
    let delivery = active.update(&*txn).await?;
    txn.after_commit(Notice::DeliveriesQueued);
    txn.commit().await?;
    Ok(delivery)
}

/// Queues again every stored event since `since` that the endpoint accepts, but for those
/// already pending for it; returns how many it queued.
pub async fn replay(
    db: &Db,
    account_id: Uuid,
    endpoint_id: Uuid,
    since: chrono::DateTime<Utc>,
) -> AppResult<u64> {
    let endpoint = enabled(find(db.conn(), account_id, endpoint_id).await?)?;
    let mut connections = dispatch::ConnectionTypes::default();
    let mut queued = 0;
    let mut after = None;
    // Page by page, a transaction each: a long history neither sits in memory at once nor
    // holds the write lock for long.
    loop {
        let mut page = event::Entity::find()
            .filter(event::Column::AccountId.eq(account_id))
            .filter(event::Column::OccurredAt.gte(since));
        if let Some(position) = after {
            page = page.filter(event::Column::Position.gt(position));
        }
        let stored = page
            .order_by_asc(event::Column::Position)
            .limit(REPLAY_PAGE)
            .all(db.conn())
            .await?;
        let Some(last) = stored.last() else {
            return Ok(queued);
        };
        after = Some(last.position);
        let txn = db.begin_write().await?;
        let pending = pending_positions(&*txn, endpoint_id, &stored).await?;
        let mut deliveries = Vec::new();
        for event in &stored {
            if pending.contains(&event.position) {
                continue;
            }
            if dispatch::wants(&*txn, &endpoint, event, &mut connections).await? {
                deliveries.push(new_delivery(&endpoint, event.position));
            }
        }
        queued += deliveries.len() as u64;
        if !deliveries.is_empty() {
            webhook_delivery::Entity::insert_many(deliveries)
                .exec_without_returning(&*txn)
                .await?;
            txn.after_commit(Notice::DeliveriesQueued);
        }
        txn.commit().await?;
    }
}

/// Those of the events with a delivery to the endpoint that is still pending (not sent
/// yet, or to be retried): a replay does not queue them again.
async fn pending_positions(
    txn: &impl ConnectionTrait,
    endpoint_id: Uuid,
    events: &[event::Model],
) -> AppResult<std::collections::HashSet<i64>> {
    let positions: Vec<i64> = webhook_delivery::Entity::find()
        .select_only()
        .column(webhook_delivery::Column::EventPosition)
        .filter(webhook_delivery::Column::EndpointId.eq(endpoint_id))
        // Literal, as in the delivery statements: the partial index over pending deliveries
        // (idx_webhook_deliveries_pending_due) serves only a literal match, and holds only
        // the endpoint's few pending rows, not its whole history.
        .filter(sea_orm::sea_query::Expr::cust("status = 'PENDING'"))
        .filter(webhook_delivery::Column::EventPosition.is_in(events.iter().map(|e| e.position)))
        .into_tuple()
        .all(txn)
        .await?;
    Ok(positions.into_iter().collect())
}

/// Events read and queued per transaction by `replay`.
const REPLAY_PAGE: u64 = 500;

/// The endpoint, if it is enabled: a disabled one takes no test, redelivery or replay (they
/// would wait, unsent, until it is enabled).
fn enabled(endpoint: webhook_endpoint::Model) -> AppResult<webhook_endpoint::Model> {
    if endpoint.enabled {
        Ok(endpoint)
    } else {
        Err(AppError::Conflict(
            "the endpoint is disabled; enable it first (updateWebhookEndpoint)".into(),
        ))
    }
}

pub async fn deliveries(
    db: &impl ConnectionTrait,
    endpoint_id: Uuid,
    status: Option<DeliveryStatus>,
    page: PageRequest,
) -> AppResult<Page<webhook_delivery::Model>> {
    let mut select = webhook_delivery::Entity::find()
        .filter(webhook_delivery::Column::EndpointId.eq(endpoint_id));
    if let Some(status) = status {
        select = select.filter(webhook_delivery::Column::Status.eq(status));
    }
    Ok(fetch_page(db, select, webhook_delivery::Column::Id, page).await?)
}

/// The newest `limit` attempts of a delivery, oldest first.
pub async fn attempts(
    db: &impl ConnectionTrait,
    delivery_id: Uuid,
    limit: u64,
) -> AppResult<Vec<webhook_attempt::Model>> {
    let mut attempts = webhook_attempt::Entity::find()
        .filter(webhook_attempt::Column::DeliveryId.eq(delivery_id))
        .order_by_desc(webhook_attempt::Column::Id)
        .limit(limit)
        .all(db)
        .await?;
    attempts.reverse();
    Ok(attempts)
}
