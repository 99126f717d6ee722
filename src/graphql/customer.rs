//! Customers as GraphQL types.

use async_graphql::{Context, ID, InputObject, MaybeUndefined, Object, connection::Connection};
use chrono::{DateTime, Utc};

use super::{enums::ConnectionStatus, pagination::relay};
use crate::{
    connections::{self, ListFilter},
    credits,
    error::AppResult,
    ids,
    pagination::PageRequest,
};
use entity::customer;

pub struct Customer(pub customer::Model);

/// One of your customers: the company whose systems are connected.
#[Object]
impl Customer {
    /// The customer's id (`cus_…`).
    pub async fn id(&self) -> ID {
        ID(ids::encode(ids::Kind::Customer, self.0.id))
    }
    /// Your own identifier for this customer, unique within the account (not for a portal
    /// session).
    async fn external_id(&self, ctx: &Context<'_>) -> AppResult<Option<&str>> {
        super::principal(ctx).deny_portal()?;
        Ok(self.0.external_id.as_deref())
    }
    /// The customer's name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// When the customer was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When the customer was last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// Credits held by this customer's connections that are not disconnected (not for a
    /// connection token).
    async fn credits_in_use(&self, ctx: &Context<'_>) -> AppResult<i32> {
        super::account_id(ctx)?;
        let used = credits::in_use_by_customer(super::db(ctx).conn(), self.0.account_id, self.0.id)
            .await?;
        Ok(used.clamp(0, i64::from(i32::MAX)) as i32)
    }
    /// The customer's connections, oldest first; a connection token sees only its own.
    async fn connections(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 0 to 100; 50 when omitted.")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
        #[graphql(desc = "Only connections with this status.")] status: Option<ConnectionStatus>,
    ) -> AppResult<Connection<String, super::connection::Connection>> {
        let scope = super::principal(ctx).connections_scope()?;
        let page = PageRequest::from_args(first, after.as_deref(), None, None)?;
        let filter = ListFilter {
            customer_id: Some(self.0.id),
            status: status.map(Into::into),
            system_key: None,
        };
        let page = connections::list(super::db(ctx).conn(), scope, filter, page).await?;
        Ok(relay(page, |c| c.id, super::connection::Connection))
    }
}

/// A new customer.
#[derive(InputObject)]
pub struct CreateCustomerInput {
    /// The customer's name (1 to 200 characters).
    pub name: String,
    /// Your own identifier for the customer (at most 200 characters), unique within the
    /// account.
    pub external_id: Option<String>,
}

/// Changes to a customer; a field left out keeps its value.
#[derive(InputObject)]
pub struct UpdateCustomerInput {
    /// The customer to change.
    pub id: ID,
    /// A new name.
    pub name: Option<String>,
    /// `null` clears it; leaving it out keeps it.
    pub external_id: MaybeUndefined<String>,
}
