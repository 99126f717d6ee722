//! Endpoint health: a success clears an endpoint's failure streak, and `410 Gone` or failing
//! continuously for the configured window disables it (with a `webhook_endpoint.disabled`
//! event).

use std::{collections::HashMap, time::Duration};

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
        let Health {
            failing_since,
            disable_for,
        } = Health::after(
            endpoint.failing_since,
            &attempts,
            now,
            settings.disable_after,
        );
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

/// An endpoint's health once a batch's outcomes for it are replayed.
#[derive(Debug, PartialEq)]
struct Health {
    /// Start of the current failure streak; `None` after a success.
    failing_since: Option<DateTime<Utc>>,
    /// Why the endpoint is to be disabled, if it is.
    disable_for: Option<&'static str>,
}

impl Health {
    /// Replays `outcomes` in the order they finished, on a streak that started at
    /// `failing_since`.
    fn after(
        mut failing_since: Option<DateTime<Utc>>,
        outcomes: &[&Outcome],
        now: DateTime<Utc>,
        disable_after: Duration,
    ) -> Self {
        let mut disable_for = None;
        for outcome in outcomes {
            if outcome.succeeded() {
                failing_since = None;
            } else if outcome.gone() {
                disable_for = Some("the endpoint answered 410 Gone");
            } else {
                let since = *failing_since.get_or_insert(now);
                if (now - since).to_std().unwrap_or_default() >= disable_after {
                    disable_for = Some("deliveries kept failing for the configured window");
                }
            }
        }
        Self {
            failing_since,
            disable_for,
        }
    }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::{DateTime, Utc};

    use super::{Health, Outcome};

    fn answered(status: u16) -> Outcome {
        Outcome::Answered {
            status,
            duration_ms: 1,
            body: None,
            retry_after: None,
        }
    }

    fn health(since: Option<DateTime<Utc>>, outcomes: &[Outcome], now: DateTime<Utc>) -> Health {
        let outcomes: Vec<&Outcome> = outcomes.iter().collect();
        Health::after(since, &outcomes, now, Duration::from_secs(3600))
    }

    #[test]
    fn a_failure_starts_a_streak_and_a_success_ends_it() {
        let now = Utc::now();
        assert_eq!(
            health(None, &[answered(500)], now),
            Health {
                failing_since: Some(now),
                disable_for: None
            }
        );
        let earlier = now - chrono::Duration::minutes(5);
        assert_eq!(
            health(Some(earlier), &[answered(500), answered(200)], now),
            Health {
                failing_since: None,
                disable_for: None
            }
        );
        assert_eq!(
            health(Some(earlier), &[answered(200), answered(503)], now).failing_since,
            Some(now),
            "a failure after the success starts a new streak"
        );
    }

    #[test]
    fn gone_or_failing_for_the_whole_window_disables_the_endpoint() {
        let now = Utc::now();
        assert_eq!(
            health(None, &[answered(410)], now).disable_for,
            Some("the endpoint answered 410 Gone")
        );
        let long_ago = now - chrono::Duration::hours(2);
        assert_eq!(
            health(Some(long_ago), &[answered(500)], now),
            Health {
                failing_since: Some(long_ago),
                disable_for: Some("deliveries kept failing for the configured window")
            }
        );
        let refused = Outcome::Refused {
            reason: "the URL points to a non-public address".into(),
        };
        assert_eq!(
            health(Some(now - chrono::Duration::minutes(59)), &[refused], now).disable_for,
            None,
            "within the window"
        );
    }
}
