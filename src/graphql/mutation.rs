//! Mutation root.

use async_graphql::{Context, ID, InputObject, Json, MaybeUndefined, Object};
use uuid::Uuid;

use super::{
    account::{
        Account, AccountRateLimit, ApiKey, CreateAccountPayload, CreateApiKeyPayload, CreditBalance,
    },
    connection::{
        ConnectInput, ConnectPayload, Connection, RotateConnectionTokenPayload,
        UpdateConnectionInput, change,
    },
    customer::{CreateCustomerInput, Customer, UpdateCustomerInput},
    enums::{self, SyncKind},
    sync::SyncRun,
};
use crate::{
    accounts,
    catalog::Deployment,
    connections::{self, ConnectRequest, ConnectionChanges},
    credits,
    customers::{self, CustomerChanges, NewCustomer},
    error::{AppError, AppResult},
    ids,
    limits::RateLimit,
    sync,
};

/// What can be changed: with an API key everything but `createAccount`, `grantCredits` and
/// `setAccountRateLimit`, which need the admin token; with a connection token `triggerSync`,
/// `cancelSyncRun`, `bulkWrite` and `cancelBulkOperation` on its own connection; with a
/// portal session `connect`, `updateConnectionCredentials`, `checkConnection` and
/// `disconnect` for its own customer.
#[derive(async_graphql::MergedObject, Default)]
pub struct Mutation(
    BaseMutation,
    super::webhooks::WebhookMutation,
    super::bulk::BulkMutation,
    super::portal::PortalMutation,
    super::flows::FlowMutation,
);

#[derive(Default)]
pub struct BaseMutation;

/// A new account.
#[derive(InputObject)]
pub struct CreateAccountInput {
    /// The account's name (1 to 200 characters).
    pub name: String,
    /// Credits the account's pool starts with.
    #[graphql(default = 0)]
    pub credits: Option<i32>,
}

/// An account's own API rate limit.
#[derive(InputObject)]
pub struct RateLimitInput {
    /// Requests per second each token may make on average (1 to 1,000,000).
    pub requests_per_second: i32,
    /// Requests a token may make at once beyond that rate (1 to 1,000,000).
    pub burst: i32,
}

#[Object]
impl BaseMutation {
    /// Admin token only: creates an account and its first API key.
    async fn create_account(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new account.")] input: CreateAccountInput,
    ) -> AppResult<CreateAccountPayload> {
        super::principal(ctx).require_admin()?;
        let created = accounts::create_account(
            super::db(ctx),
            &input.name,
            input.credits.unwrap_or(0).into(),
        )
        .await?;
        Ok(CreateAccountPayload {
            account: Account(created.account),
            api_key: created.key,
        })
    }

    /// Admin token only: adds credits to an account's pool.
    async fn grant_credits(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The account to credit (`acc_…`).")] account_id: ID,
        #[graphql(desc = "Credits to add; at least 1.")] amount: i32,
        #[graphql(desc = "A note kept in the credit ledger.")] note: Option<String>,
    ) -> AppResult<CreditBalance> {
        super::principal(ctx).require_admin()?;
        let account_id = ids::decode(ids::Kind::Account, &account_id)?;
        let account = credits::grant(super::db(ctx), account_id, amount.into(), note).await?;
        Ok(CreditBalance::of(&account))
    }

    /// Admin token only: sets the rate limit of each of an account's tokens (API keys and
    /// connection tokens), or with `limit: null` returns it to the configured default. It
    /// applies at the tokens' next request, with a full bucket.
    async fn set_account_rate_limit(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The account (`acc_…`).")] account_id: ID,
        #[graphql(desc = "The account's own limit; null for the configured default.")]
        limit: Option<RateLimitInput>,
    ) -> AppResult<AccountRateLimit> {
        super::principal(ctx).require_admin()?;
        let account_id = ids::decode(ids::Kind::Account, &account_id)?;
        let limit = limit
            .map(|l| RateLimit::new(l.requests_per_second.into(), l.burst.into()))
            .transpose()?;
        let account = accounts::set_rate_limit(super::db(ctx), account_id, limit).await?;
        Ok(AccountRateLimit::of(&account, super::config(ctx)))
    }

    /// Creates an API key for the caller's account; the key is returned once.
    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A name to recognise the key by (1 to 200 characters).")] name: String,
    ) -> AppResult<CreateApiKeyPayload> {
        let account_id = super::account_id(ctx)?;
        let (api_key, key) = accounts::create_api_key(super::db(ctx), account_id, &name).await?;
        Ok(CreateApiKeyPayload {
            api_key: ApiKey(api_key),
            key,
        })
    }

    /// Revokes an API key at once; revoking it again changes nothing.
    async fn revoke_api_key(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The key's id (`key_…`).")] id: ID,
    ) -> AppResult<ApiKey> {
        let account_id = super::account_id(ctx)?;
        let id = ids::decode(ids::Kind::ApiKey, &id)?;
        let key = accounts::revoke_api_key(super::db(ctx), account_id, id).await?;
        Ok(ApiKey(key))
    }

    /// Creates a customer.
    async fn create_customer(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new customer.")] input: CreateCustomerInput,
    ) -> AppResult<Customer> {
        let account_id = super::account_id(ctx)?;
        let new = NewCustomer {
            name: input.name,
            external_id: input.external_id,
        };
        Ok(Customer(
            customers::create(super::db(ctx), account_id, new).await?,
        ))
    }

    /// Changes a customer's name or external id.
    async fn update_customer(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The customer and its changes.")] input: UpdateCustomerInput,
    ) -> AppResult<Customer> {
        let account_id = super::account_id(ctx)?;
        let id = customer_id(&input.id)?;
        let external_id = match input.external_id {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Value(v) => Some(Some(v)),
        };
        let changes = CustomerChanges {
            name: input.name,
            external_id,
        };
        Ok(Customer(
            customers::update(super::db(ctx), account_id, id, changes).await?,
        ))
    }

    /// Deletes a customer whose connections are all disconnected (`CONFLICT` otherwise);
    /// returns its id.
    async fn delete_customer(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The customer's id (`cus_…`).")] id: ID,
    ) -> AppResult<ID> {
        let account_id = super::account_id(ctx)?;
        customers::delete(super::db(ctx), account_id, customer_id(&id)?).await?;
        Ok(id)
    }

    /// Connects a customer's system: validates, probes (unless `validate: false`), consumes
    /// credits, and returns the connection token once.
    async fn connect(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The customer, the system and its credentials.")] input: ConnectInput,
    ) -> AppResult<ConnectPayload> {
        let principal = super::principal(ctx);
        let customer_id = customer_id(&input.customer_id)?;
        let account_id = match principal.portal() {
            Some(grant) => portal_may_connect(grant, customer_id, &input)?,
            None => principal.account_id()?,
        };
        let request = ConnectRequest {
            customer_id,
            max_live: principal.portal().map(|grant| grant.max_connections),
            system_key: input.system_key,
            deployment: input.deployment.map_or(Deployment::Cloud, Into::into),
            label: input.label,
            credentials: input.credentials.0,
            sync_interval_minutes: input.sync_interval_minutes,
            webhook_event_types: input.webhook_event_types.map(|t| enums::all(&t)),
            metadata: input.metadata.map(|m| m.0),
            validate: input.validate.unwrap_or(true),
        };
        let interval = super::config(ctx).health_check_interval();
        let connected = connections::connect(
            super::db(ctx),
            super::cipher(ctx),
            super::outbound(ctx),
            account_id,
            interval,
            request,
        )
        .await;
        let portal = principal.portal().is_some();
        let (model, token) = match connected {
            // The pool's size is the account's business, not its customer's.
            Err(AppError::InsufficientCredits { needed, .. }) if portal => {
                return Err(AppError::InsufficientCredits {
                    needed,
                    available: None,
                });
            }
            other => other?,
        };
        Ok(ConnectPayload {
            connection: Connection(model),
            token: (!portal).then_some(token),
        })
    }

    /// Disconnects and returns the credits; a second call refunds nothing.
    async fn disconnect(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The connection's id (`con_…`).")] id: ID,
    ) -> AppResult<Connection> {
        let (account_id, id) = own_connection(ctx, &id).await?;
        let model = connections::disconnect(super::db(ctx), account_id, id).await?;
        Ok(Connection(model))
    }

    /// Changes a connection's label, sync interval, webhook event types or metadata.
    async fn update_connection(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The connection and its changes.")] input: UpdateConnectionInput,
    ) -> AppResult<Connection> {
        let account_id = super::account_id(ctx)?;
        let changes = ConnectionChanges {
            label: change(input.label),
            sync_interval_minutes: change(input.sync_interval_minutes),
            webhook_event_types: input.webhook_event_types.map(|t| enums::all(&t)),
            metadata: change(input.metadata).map(|m| m.map(|m| m.0)),
        };
        let model = connections::update(
            super::db(ctx),
            account_id,
            connection_id(&input.id)?,
            changes,
        )
        .await?;
        Ok(Connection(model))
    }

    /// Replaces the credentials after probing the remote with them.
    async fn update_connection_credentials(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The connection's id (`con_…`).")] id: ID,
        #[graphql(desc = "The complete new credentials, as for `connect`.")] credentials: Json<
            serde_json::Value,
        >,
    ) -> AppResult<Connection> {
        let (account_id, id) = own_connection(ctx, &id).await?;
        let (db, cipher) = (super::db(ctx), super::cipher(ctx));
        let model = connections::update_credentials(
            db,
            cipher,
            super::outbound(ctx),
            account_id,
            id,
            &credentials.0,
        )
        .await?;
        Ok(Connection(model))
    }

    /// Issues a new connection token; the old one stops working at once.
    async fn rotate_connection_token(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The connection's id (`con_…`).")] id: ID,
    ) -> AppResult<RotateConnectionTokenPayload> {
        let account_id = super::account_id(ctx)?;
        let (model, token) =
            connections::rotate_token(super::db(ctx), account_id, connection_id(&id)?).await?;
        Ok(RotateConnectionTokenPayload {
            connection: Connection(model),
            token,
        })
    }

    /// Probes the remote system now and records the outcome as the status.
    async fn check_connection(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The connection's id (`con_…`).")] id: ID,
    ) -> AppResult<Connection> {
        let scope = super::principal(ctx).managed_scope()?;
        let model = connections::check(
            super::db(ctx),
            super::cipher(ctx),
            super::outbound(ctx),
            scope,
            connection_id(&id)?,
        )
        .await?;
        Ok(Connection(model))
    }

    /// Queues a sync run; returns the queued or running one if the connection has one.
    async fn trigger_sync(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The connection to sync (`con_…`).")] connection_id: ID,
        #[graphql(default_with = "SyncKind::Incremental", desc = "How much to read.")]
        kind: SyncKind,
    ) -> AppResult<SyncRun> {
        let scope = super::principal(ctx).scope()?;
        let run = sync::trigger(
            super::db(ctx),
            scope,
            self::connection_id(&connection_id)?,
            kind.into(),
        )
        .await?;
        Ok(SyncRun(run))
    }

    /// Cancels a queued run at once, a running one at its next page boundary.
    async fn cancel_sync_run(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The run's id (`run_…`).")] id: ID,
    ) -> AppResult<SyncRun> {
        let scope = super::principal(ctx).scope()?;
        let id = ids::decode(ids::Kind::SyncRun, &id)?;
        Ok(SyncRun(sync::cancel(super::db(ctx), scope, id).await?))
    }
}

fn customer_id(id: &ID) -> AppResult<Uuid> {
    ids::decode(ids::Kind::Customer, id)
}

fn connection_id(id: &ID) -> AppResult<Uuid> {
    ids::decode(ids::Kind::Connection, id)
}

/// Whether a portal session may make the connection `input` asks for: for its own customer
/// only, a system it was allowed, and nothing the vendor decides about a connection (set with
/// `updateConnection`). Its account when it may.
fn portal_may_connect(
    grant: &crate::auth::PortalGrant,
    customer_id: Uuid,
    input: &ConnectInput,
) -> AppResult<Uuid> {
    if grant.customer_id != customer_id {
        return Err(AppError::NotFound("customer"));
    }
    if !grant.allows(&input.system_key) {
        return Err(AppError::Forbidden(format!(
            "this portal session may not connect {:?}",
            input.system_key
        )));
    }
    let vendors = [
        ("metadata", input.metadata.is_some()),
        ("webhookEventTypes", input.webhook_event_types.is_some()),
        ("syncIntervalMinutes", input.sync_interval_minutes.is_some()),
        ("validate", input.validate == Some(false)),
    ];
    if let Some((field, _)) = vendors.iter().find(|(_, given)| *given) {
        return Err(AppError::Forbidden(format!(
            "a portal session may not set `{field}` (nor skip validation); the account sets it \
             with `updateConnection`"
        )));
    }
    Ok(grant.account_id)
}

/// The account and id of a connection the caller may manage; a portal session's customer's
/// only (another's is NOT_FOUND, as a foreign id always is).
async fn own_connection(ctx: &Context<'_>, id: &ID) -> AppResult<(Uuid, Uuid)> {
    let scope = super::principal(ctx).managed_scope()?;
    let id = connection_id(id)?;
    if scope.customer_id.is_some() {
        connections::find(super::db(ctx).conn(), scope, id).await?;
    }
    Ok((scope.account_id, id))
}
