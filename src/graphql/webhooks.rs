//! Webhook endpoints, deliveries and attempts as GraphQL types, and their operations.

use async_graphql::{
    Context, ID, InputObject, MaybeUndefined, Object, SimpleObject, connection::Connection,
};
use chrono::{DateTime, Utc};

use super::{
    customer::relay,
    enums::{self, DeliveryStatus, EventType},
    event::Event,
};
use crate::{
    error::{AppError, AppResult},
    events, ids,
    pagination::PageRequest,
    webhooks::{self, EndpointInput},
};
use entity::{webhook_attempt, webhook_delivery, webhook_endpoint};

pub struct WebhookEndpoint(pub webhook_endpoint::Model);

#[Object]
impl WebhookEndpoint {
    pub async fn id(&self) -> ID {
        ID(ids::encode(ids::Kind::WebhookEndpoint, self.0.id))
    }
    async fn url(&self) -> &str {
        &self.0.url
    }
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    /// The event types it receives; empty = all.
    async fn event_types(&self) -> AppResult<Vec<EventType>> {
        Ok(enums::all(&webhooks::event_types(&self.0)?))
    }
    async fn enabled(&self) -> bool {
        self.0.enabled
    }
    async fn disabled_reason(&self) -> Option<&str> {
        self.0.disabled_reason.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn deliveries(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        status: Option<DeliveryStatus>,
    ) -> AppResult<Connection<String, WebhookDelivery>> {
        let page = PageRequest::from_args(first, after.as_deref(), None, None)?;
        let status = status.map(Into::into);
        let page = webhooks::deliveries(super::db(ctx).conn(), self.0.id, status, page).await?;
        Ok(relay(page, |d| d.id, WebhookDelivery))
    }
}

pub struct WebhookDelivery(pub webhook_delivery::Model);

#[Object]
impl WebhookDelivery {
    pub async fn id(&self) -> ID {
        ID(ids::encode(ids::Kind::WebhookDelivery, self.0.id))
    }
    async fn endpoint(&self, ctx: &Context<'_>) -> AppResult<WebhookEndpoint> {
        let account_id = super::account_id(ctx)?;
        Ok(WebhookEndpoint(
            webhooks::find(super::db(ctx).conn(), account_id, self.0.endpoint_id).await?,
        ))
    }
    async fn event(&self, ctx: &Context<'_>) -> AppResult<Event> {
        let found = events::find_for_delivery(super::db(ctx).conn(), &self.0).await?;
        Ok(Event(found))
    }
    async fn status(&self) -> DeliveryStatus {
        self.0.status.into()
    }
    async fn attempt_count(&self) -> i32 {
        self.0.attempt_count
    }
    async fn next_attempt_at(&self) -> Option<DateTime<Utc>> {
        self.0.next_attempt_at
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn attempts(&self, ctx: &Context<'_>) -> AppResult<Vec<WebhookAttempt>> {
        let attempts = webhooks::attempts(super::db(ctx).conn(), self.0.id).await?;
        Ok(attempts.into_iter().map(WebhookAttempt::from).collect())
    }
}

#[derive(SimpleObject)]
pub struct WebhookAttempt {
    pub attempted_at: DateTime<Utc>,
    pub response_status: Option<i32>,
    pub duration_ms: i32,
    pub error: Option<String>,
    /// The first 4 KiB of the response body.
    pub response_body: Option<String>,
}

impl From<webhook_attempt::Model> for WebhookAttempt {
    fn from(a: webhook_attempt::Model) -> Self {
        Self {
            attempted_at: a.attempted_at,
            response_status: a.response_status,
            duration_ms: a.duration_ms,
            error: a.error,
            response_body: a.response_body,
        }
    }
}

#[derive(SimpleObject)]
pub struct CreateWebhookEndpointPayload {
    pub endpoint: WebhookEndpoint,
    /// The signing secret (`whsec_…`), shown once.
    pub secret: String,
}

#[derive(InputObject)]
pub struct CreateWebhookEndpointInput {
    pub url: String,
    pub description: Option<String>,
    /// Empty or omitted = every event type.
    pub event_types: Option<Vec<EventType>>,
}

#[derive(InputObject)]
pub struct UpdateWebhookEndpointInput {
    pub id: ID,
    pub url: Option<String>,
    pub description: MaybeUndefined<String>,
    pub event_types: Option<Vec<EventType>>,
    pub enabled: Option<bool>,
}

pub fn endpoint_id(id: &ID) -> AppResult<uuid::Uuid> {
    ids::decode(ids::Kind::WebhookEndpoint, id)
}

impl From<CreateWebhookEndpointInput> for EndpointInput {
    fn from(input: CreateWebhookEndpointInput) -> Self {
        Self {
            url: Some(input.url),
            description: Some(input.description),
            event_types: input.event_types.map(|t| enums::all(&t)),
            enabled: None,
        }
    }
}

impl From<UpdateWebhookEndpointInput> for EndpointInput {
    fn from(input: UpdateWebhookEndpointInput) -> Self {
        Self {
            url: input.url,
            description: super::connection::change(input.description),
            event_types: input.event_types.map(|t| enums::all(&t)),
            enabled: input.enabled,
        }
    }
}

#[derive(Default)]
pub struct WebhookQuery;

#[Object]
impl WebhookQuery {
    async fn webhook_endpoints(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> AppResult<Connection<String, WebhookEndpoint>> {
        let account_id = super::account_id(ctx)?;
        let page = PageRequest::from_args(first, after.as_deref(), None, None)?;
        let page = webhooks::list(super::db(ctx).conn(), account_id, page).await?;
        Ok(relay(page, |e| e.id, WebhookEndpoint))
    }

    async fn webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> AppResult<Option<WebhookEndpoint>> {
        let account_id = super::account_id(ctx)?;
        let Ok(id) = endpoint_id(&id) else {
            return Ok(None);
        };
        match webhooks::find(super::db(ctx).conn(), account_id, id).await {
            Ok(endpoint) => Ok(Some(WebhookEndpoint(endpoint))),
            Err(AppError::NotFound(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }
}

#[derive(Default)]
pub struct WebhookMutation;

#[Object]
impl WebhookMutation {
    async fn create_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        input: CreateWebhookEndpointInput,
    ) -> AppResult<CreateWebhookEndpointPayload> {
        let account_id = super::account_id(ctx)?;
        let allow_private = super::config(ctx).webhooks.allow_private_targets;
        let (endpoint, secret) = webhooks::create(
            super::db(ctx),
            super::cipher(ctx),
            account_id,
            input.into(),
            allow_private,
        )
        .await?;
        Ok(CreateWebhookEndpointPayload {
            endpoint: WebhookEndpoint(endpoint),
            secret,
        })
    }

    async fn update_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        input: UpdateWebhookEndpointInput,
    ) -> AppResult<WebhookEndpoint> {
        let account_id = super::account_id(ctx)?;
        let id = endpoint_id(&input.id)?;
        let allow_private = super::config(ctx).webhooks.allow_private_targets;
        Ok(WebhookEndpoint(
            webhooks::update(super::db(ctx), account_id, id, input.into(), allow_private).await?,
        ))
    }

    async fn delete_webhook_endpoint(&self, ctx: &Context<'_>, id: ID) -> AppResult<ID> {
        let account_id = super::account_id(ctx)?;
        webhooks::delete(super::db(ctx), account_id, endpoint_id(&id)?).await?;
        Ok(id)
    }

    /// A new secret; the previous one keeps signing beside it for 24 hours.
    async fn rotate_webhook_secret(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> AppResult<CreateWebhookEndpointPayload> {
        let account_id = super::account_id(ctx)?;
        let (endpoint, secret) = webhooks::rotate_secret(
            super::db(ctx),
            super::cipher(ctx),
            account_id,
            endpoint_id(&id)?,
        )
        .await?;
        Ok(CreateWebhookEndpointPayload {
            endpoint: WebhookEndpoint(endpoint),
            secret,
        })
    }

    /// Sends a `webhook.test` event to this endpoint.
    async fn send_test_webhook(
        &self,
        ctx: &Context<'_>,
        endpoint_id: ID,
    ) -> AppResult<WebhookDelivery> {
        let account_id = super::account_id(ctx)?;
        let delivery =
            webhooks::send_test(super::db(ctx), account_id, self::endpoint_id(&endpoint_id)?)
                .await?;
        Ok(WebhookDelivery(delivery))
    }

    /// Sends a delivery again now (its attempts are kept).
    async fn redeliver_webhook(
        &self,
        ctx: &Context<'_>,
        delivery_id: ID,
    ) -> AppResult<WebhookDelivery> {
        let account_id = super::account_id(ctx)?;
        let id = ids::decode(ids::Kind::WebhookDelivery, &delivery_id)?;
        let delivery = webhooks::redeliver(super::db(ctx), account_id, id).await?;
        Ok(WebhookDelivery(delivery))
    }

    /// Queues again every stored event since `since` that the endpoint accepts.
    async fn replay_webhooks(
        &self,
        ctx: &Context<'_>,
        endpoint_id: ID,
        since: DateTime<Utc>,
    ) -> AppResult<i32> {
        let account_id = super::account_id(ctx)?;
        let queued = webhooks::replay(
            super::db(ctx),
            account_id,
            self::endpoint_id(&endpoint_id)?,
            since,
        )
        .await?;
        Ok(queued.min(i32::MAX as u64) as i32)
    }
}
