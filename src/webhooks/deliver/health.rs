//! Endpoint health: a success clears an endpoint's failure streak, and `410 Gone` or failing
//! continuously for the configured window disables it (with a `webhook_endpoint.disabled`
//! event).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    sea_query::Expr,
};
use serde_json::json;
use uuid::Uuid;

use super::{
    DeliverySettings,
    send::{Outcome, Sent},
};
use crate::{
    error::AppResult,
    events::{self, EventType, NewEvent},
    ids,
};
use entity::webhook_endpoint;

/// Endpoint health, replaying the batch's outcomes per endpoint in the order they finished:
/// any success clears the failure streak, `410 Gone` disables the endpoint, and failing
/// continuously for the configured window disables it too.
pub async fn update_endpoints(
    txn: &impl ConnectionTrait,
    settings: &DeliverySettings,
    batch: &[&Sent],
) -> AppResult<()> {
    let mut outcomes: HashMap<Uuid, Vec<&Outcome>> = HashMap::new();
    for sent in batch {
        outcomes
            .entry(sent.delivery.endpoint_id)
            .or_default()
            .push(&sent.outcome);
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
            } else if attempt.gone() {
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
