//! Webhook endpoints, deliveries and attempts as GraphQL types, and their operations.

use async_graphql::{
    Context, ID, InputObject, MaybeUndefined, Object, SimpleObject, connection::Connection,
};
use chrono::{DateTime, Utc};

use super::{
    enums::{self, DeliveryStatus, EventType},
    event::Event,
    pagination::relay,
};
use crate::{
    error::{AppError, AppResult},
    events, ids,
    pagination::{MAX_PAGE_SIZE, PageRequest},
    webhooks::{self, EndpointInput},
};
use entity::{webhook_attempt, webhook_delivery, webhook_endpoint};

pub struct WebhookEndpoint(pub webhook_endpoint::Model);

/// A URL that receives the account's events as signed Standard Webhooks requests.
#[Object]
impl WebhookEndpoint {
    /// The endpoint's id (`whe_…`).
    pub async fn id(&self) -> ID {
        ID(ids::encode(ids::Kind::WebhookEndpoint, self.0.id))
    }
    /// Where events are POSTed.
    async fn url(&self) -> &str {
        &self.0.url
    }
    /// Your description of the endpoint.
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    /// The event types it receives; empty = all.
    async fn event_types(&self) -> AppResult<Vec<EventType>> {
        Ok(enums::all(&webhooks::event_types(&self.0)?))
    }
    /// Of `FLOW_TRIGGERED` events, only those of these flows; null: every flow's. Other
    /// types are not affected.
    async fn flow_ids(&self) -> Option<Vec<ID>> {
        webhooks::flow_ids(&self.0).map(|ids| ids.into_iter().map(ID).collect())
    }
    /// Whether events are delivered to it.
    async fn enabled(&self) -> bool {
        self.0.enabled
    }
    /// Why the server disabled it; null when enabled or disabled by you.
    async fn disabled_reason(&self) -> Option<&str> {
        self.0.disabled_reason.as_deref()
    }
    /// When the endpoint was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// Deliveries to this endpoint, oldest first.
    async fn deliveries(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 0 to 100; 50 when omitted.")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
        #[graphql(desc = "Only deliveries with this status.")] status: Option<DeliveryStatus>,
    ) -> AppResult<Connection<String, WebhookDelivery>> {
        let page = PageRequest::from_args(first, after.as_deref(), None, None)?;
        let status = status.map(Into::into);
        let page = webhooks::deliveries(super::db(ctx).conn(), self.0.id, status, page).await?;
        Ok(relay(page, |d| d.id, WebhookDelivery))
    }
}

pub struct WebhookDelivery(pub webhook_delivery::Model);

/// One event on its way to one endpoint, with every attempt to send it.
#[Object]
impl WebhookDelivery {
    /// The delivery's id (`whd_…`).
    pub async fn id(&self) -> ID {
        ID(ids::encode(ids::Kind::WebhookDelivery, self.0.id))
    }
    /// The endpoint it goes to.
    async fn endpoint(&self, ctx: &Context<'_>) -> AppResult<WebhookEndpoint> {
        let account_id = super::account_id(ctx)?;
        Ok(WebhookEndpoint(
            webhooks::find(super::db(ctx).conn(), account_id, self.0.endpoint_id).await?,
        ))
    }
    /// The event it carries; `NOT_FOUND` once retention pruned the event.
    async fn event(&self, ctx: &Context<'_>) -> AppResult<Event> {
        let found = events::find_for_delivery(super::db(ctx).conn(), &self.0).await?;
        Ok(Event(found))
    }
    /// Where the delivery stands.
    async fn status(&self) -> DeliveryStatus {
        self.0.status.into()
    }
    /// Attempts made so far.
    async fn attempt_count(&self) -> i32 {
        self.0.attempt_count
    }
    /// When the next attempt is due; null once the delivery has ended.
    async fn next_attempt_at(&self) -> Option<DateTime<Utc>> {
        self.0.next_attempt_at
    }
    /// When the delivery was queued.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// The newest attempts, at most `last` of them, oldest first.
    async fn attempts(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "How many of the newest attempts, 0 to 100.", default = 100)] last: Option<
            i32,
        >,
    ) -> AppResult<Vec<WebhookAttempt>> {
        let last = last.unwrap_or(MAX_PAGE_SIZE);
        let limit = PageRequest::from_args(None, None, Some(last), None)?.limit;
        let attempts = webhooks::attempts(super::db(ctx).conn(), self.0.id, limit).await?;
        Ok(attempts.into_iter().map(WebhookAttempt::from).collect())
    }
}

/// One HTTP request of a delivery.
#[derive(SimpleObject)]
pub struct WebhookAttempt {
    /// When the request was made.
    pub attempted_at: DateTime<Utc>,
    /// The HTTP status the endpoint answered; null when there was no answer.
    pub response_status: Option<i32>,
    /// How long the request took, in milliseconds.
    pub duration_ms: i32,
    /// Why the request failed without an answer (timeout, refused address, …).
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

/// The result of `createWebhookEndpoint` and `rotateWebhookSecret`.
#[derive(SimpleObject)]
pub struct CreateWebhookEndpointPayload {
    /// The endpoint.
    pub endpoint: WebhookEndpoint,
    /// The signing secret (`whsec_…`), shown once.
    pub secret: String,
}

/// A new webhook endpoint.
#[derive(InputObject)]
pub struct CreateWebhookEndpointInput {
    /// An `http` or `https` URL on a public address (loopback and private addresses only
    /// when the server allows them).
    pub url: String,
    /// Your description of the endpoint (at most 500 characters).
    pub description: Option<String>,
    /// Empty or omitted = every event type; at most 100 entries, each counted once.
    #[graphql(validator(max_items = 100))]
    pub event_types: Option<Vec<EventType>>,
    /// Of `FLOW_TRIGGERED` events, only those of these flows (`flw_…`, 1 to 100); omitted:
    /// every flow's. Other types are not affected: with `eventTypes: [FLOW_TRIGGERED]` the
    /// endpoint is the flows' custom webhook.
    #[graphql(validator(max_items = 100))]
    pub flow_ids: Option<Vec<ID>>,
}

/// Changes to a webhook endpoint; a field left out keeps its value.
#[derive(InputObject)]
pub struct UpdateWebhookEndpointInput {
    /// The endpoint to change.
    pub id: ID,
    /// A new URL.
    pub url: Option<String>,
    /// A new description; `null` clears it.
    pub description: MaybeUndefined<String>,
    /// The event types it receives; empty means every type; at most 100 entries, each
    /// counted once.
    #[graphql(validator(max_items = 100))]
    pub event_types: Option<Vec<EventType>>,
    /// The flows whose `FLOW_TRIGGERED` events it receives; `null` takes every flow's.
    #[graphql(validator(max_items = 100))]
    pub flow_ids: MaybeUndefined<Vec<ID>>,
    /// `false` stops deliveries, `true` resumes them (and clears `disabledReason`).
    pub enabled: Option<bool>,
}

pub fn endpoint_id(id: &ID) -> AppResult<uuid::Uuid> {
    ids::decode(ids::Kind::WebhookEndpoint, id)
}

fn flow_ids(ids: Vec<ID>) -> AppResult<Vec<uuid::Uuid>> {
    ids.iter()
        .map(|id| ids::decode(ids::Kind::Flow, id))
        .collect()
}

impl TryFrom<CreateWebhookEndpointInput> for EndpointInput {
    type Error = AppError;
    fn try_from(input: CreateWebhookEndpointInput) -> AppResult<Self> {
        Ok(Self {
            url: Some(input.url),
            description: Some(input.description),
            event_types: input.event_types.map(|t| enums::all(&t)),
            flow_ids: Some(input.flow_ids.map(flow_ids).transpose()?),
            enabled: None,
        })
    }
}

impl TryFrom<UpdateWebhookEndpointInput> for EndpointInput {
    type Error = AppError;
    fn try_from(input: UpdateWebhookEndpointInput) -> AppResult<Self> {
        let flows = super::connection::change(input.flow_ids)
            .map(|ids| ids.map(flow_ids).transpose())
            .transpose()?;
        Ok(Self {
            url: input.url,
            description: super::connection::change(input.description),
            event_types: input.event_types.map(|t| enums::all(&t)),
            flow_ids: flows,
            enabled: input.enabled,
        })
    }
}

#[derive(Default)]
pub struct WebhookQuery;

#[Object]
impl WebhookQuery {
    /// The account's webhook endpoints, oldest first.
    async fn webhook_endpoints(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 0 to 100; 50 when omitted.")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> AppResult<Connection<String, WebhookEndpoint>> {
        let account_id = super::account_id(ctx)?;
        let page = PageRequest::from_args(first, after.as_deref(), None, None)?;
        let page = webhooks::list(super::db(ctx).conn(), account_id, page).await?;
        Ok(relay(page, |e| e.id, WebhookEndpoint))
    }

    /// One webhook endpoint by id; null when it does not exist or is not the caller's.
    async fn webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The endpoint's id (`whe_…`).")] id: ID,
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
    /// Creates a webhook endpoint (at most 100 per account); its secret is returned once.
    async fn create_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new endpoint.")] input: CreateWebhookEndpointInput,
    ) -> AppResult<CreateWebhookEndpointPayload> {
        let account_id = super::account_id(ctx)?;
        let allow_private = super::config(ctx).webhooks.allow_private_targets;
        let (endpoint, secret) = webhooks::create(
            super::db(ctx),
            super::cipher(ctx),
            account_id,
            input.try_into()?,
            allow_private,
        )
        .await?;
        Ok(CreateWebhookEndpointPayload {
            endpoint: WebhookEndpoint(endpoint),
            secret,
        })
    }

    /// Changes a webhook endpoint's URL, description, event types or whether it is enabled.
    async fn update_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The endpoint and its changes.")] input: UpdateWebhookEndpointInput,
    ) -> AppResult<WebhookEndpoint> {
        let account_id = super::account_id(ctx)?;
        let id = endpoint_id(&input.id)?;
        let allow_private = super::config(ctx).webhooks.allow_private_targets;
        Ok(WebhookEndpoint(
            webhooks::update(
                super::db(ctx),
                account_id,
                id,
                input.try_into()?,
                allow_private,
            )
            .await?,
        ))
    }

    /// Deletes a webhook endpoint and its deliveries; returns its id.
    async fn delete_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The endpoint's id (`whe_…`).")] id: ID,
    ) -> AppResult<ID> {
        let account_id = super::account_id(ctx)?;
        webhooks::delete(super::db(ctx), account_id, endpoint_id(&id)?).await?;
        Ok(id)
    }

    /// A new secret; the previous one keeps signing beside it for 24 hours.
    async fn rotate_webhook_secret(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The endpoint's id (`whe_…`).")] id: ID,
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
        #[graphql(desc = "The endpoint's id (`whe_…`).")] endpoint_id: ID,
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
        #[graphql(desc = "The delivery's id (`whd_…`).")] delivery_id: ID,
    ) -> AppResult<WebhookDelivery> {
        let account_id = super::account_id(ctx)?;
        let id = ids::decode(ids::Kind::WebhookDelivery, &delivery_id)?;
        let delivery = webhooks::redeliver(super::db(ctx), account_id, id).await?;
        Ok(WebhookDelivery(delivery))
    }

    /// Queues again every stored event since `since` that the endpoint accepts, except those
    /// with a delivery to it still pending; returns how many it queued.
    async fn replay_webhooks(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The endpoint's id (`whe_…`).")] endpoint_id: ID,
        #[graphql(desc = "Events that occurred at or after this instant are queued.")]
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
