//! Portal sessions as GraphQL types, and `createPortalSession`, `revokePortalSession`,
//! `portalSession` and `portalSessions`.

use async_graphql::{Context, ID, InputObject, Object, connection::Connection};
use chrono::{DateTime, Utc};

use super::{customer::Customer, pagination::relay};
use crate::{
    error::{AppError, AppResult},
    ids,
    pagination::PageRequest,
    portal::{self, NewSession},
};
use entity::portal_session;

/// A portal session, with its token when it was just created.
pub struct PortalSession {
    pub model: portal_session::Model,
    pub token: Option<String>,
}

/// A short-lived token for a browser that may see and connect one customer's systems and
/// nothing else of the account (docs/portal.md).
#[Object]
impl PortalSession {
    /// The session's id (`pts_…`).
    pub async fn id(&self) -> ID {
        ID(ids::encode(ids::Kind::PortalSession, self.model.id))
    }
    /// The token (`mwp_…`) for the browser, only in `createPortalSession`'s answer.
    async fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
    /// The first characters of the token; never the token itself.
    async fn token_prefix(&self) -> &str {
        &self.model.token_prefix
    }
    /// When the token stops working on its own.
    async fn expires_at(&self) -> DateTime<Utc> {
        self.model.expires_at
    }
    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.model.created_at
    }
    /// When `revokePortalSession` ended it; null if it was not revoked.
    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.model.revoked_at
    }
    /// The customer whose connections it may see and make.
    async fn customer(&self, ctx: &Context<'_>) -> AppResult<Customer> {
        let loaders = super::loaders(ctx)?;
        let customer = loaders.customers.load_one(self.model.customer_id).await?;
        customer.map(Customer).ok_or(AppError::NotFound("customer"))
    }
    /// The systems it may see and connect; null: every system.
    async fn allowed_systems(&self) -> Option<Vec<String>> {
        portal::allowed_systems(&self.model).map(|keys| keys.to_vec())
    }
    /// Its `connect` is refused once the customer has this many connections that are not
    /// disconnected, however they were made.
    async fn max_connections(&self) -> i32 {
        self.model.max_connections
    }
}

/// A new portal session.
#[derive(InputObject)]
pub struct CreatePortalSessionInput {
    /// The customer the browser acts for (`cus_…`).
    pub customer_id: ID,
    /// The systems it may see and connect, by key; every system when omitted.
    pub allowed_systems: Option<Vec<String>>,
    /// Seconds until the token expires, 60 to 86,400.
    #[graphql(default = 900)]
    pub ttl_seconds: i32,
    /// Its `connect` is refused once the customer has this many connections that are not
    /// disconnected (however they were made), 1 to 1,000: a browser cannot spend the
    /// account's credit pool beyond it.
    #[graphql(default = 10)]
    pub max_connections: i32,
}

#[derive(Default)]
pub struct PortalQuery;

#[Object]
impl PortalQuery {
    /// The caller's own portal session (a portal session's token); null for other callers.
    async fn portal_session(&self, ctx: &Context<'_>) -> AppResult<Option<PortalSession>> {
        let Some(grant) = super::principal(ctx).portal() else {
            return Ok(None);
        };
        let model = portal::find(super::db(ctx).conn(), grant.account_id, grant.session_id).await?;
        Ok(Some(PortalSession { model, token: None }))
    }

    /// The account's portal sessions, oldest first (expired and revoked ones too, until
    /// they are pruned).
    async fn portal_sessions(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only this customer's.")] customer_id: Option<ID>,
        #[graphql(desc = "Page size, 0 to 100; 50 when omitted.")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> AppResult<Connection<String, PortalSession>> {
        let account_id = super::account_id(ctx)?;
        let page = PageRequest::from_args(first, after.as_deref(), None, None)?;
        let customer_id = customer_id
            .map(|id| ids::decode(ids::Kind::Customer, &id))
            .transpose()?;
        let page = portal::list(super::db(ctx).conn(), account_id, customer_id, page).await?;
        Ok(relay(
            page,
            |s| s.id,
            |model| PortalSession { model, token: None },
        ))
    }
}

#[derive(Default)]
pub struct PortalMutation;

#[Object]
impl PortalMutation {
    /// Mints a portal session for one of your customers: give its token to that customer's
    /// browser (your web app, or the connect portal at `/ui/connect#token=…`). Account key
    /// only.
    async fn create_portal_session(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The customer, what it may connect and for how long.")]
        input: CreatePortalSessionInput,
    ) -> AppResult<PortalSession> {
        let account_id = super::account_id(ctx)?;
        let new = NewSession {
            customer_id: ids::decode(ids::Kind::Customer, &input.customer_id)?,
            allowed_systems: input.allowed_systems,
            ttl_seconds: input.ttl_seconds,
            max_connections: input.max_connections,
        };
        let (model, token) = portal::create(super::db(ctx), account_id, new).await?;
        Ok(PortalSession {
            model,
            token: Some(token),
        })
    }

    /// Ends a portal session at once: its token stops working and its open WebSockets
    /// close. Revoking it again changes nothing.
    async fn revoke_portal_session(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The session's id (`pts_…`).")] id: ID,
    ) -> AppResult<PortalSession> {
        let account_id = super::account_id(ctx)?;
        let id = ids::decode(ids::Kind::PortalSession, &id)?;
        let model = portal::revoke(super::db(ctx), account_id, id).await?;
        Ok(PortalSession { model, token: None })
    }
}
