//! Query root.

use async_graphql::{Context, ID, Object, connection::Connection};

use super::{
    account::Viewer,
    customer::{Customer, relay},
    node::{self, Node},
};
use crate::{accounts, customers, error::AppResult, ids, pagination::PageRequest};

pub struct Query;

#[Object]
impl Query {
    /// Any object you may see, by id; null when it does not exist or is not yours.
    async fn node(&self, ctx: &Context<'_>, id: ID) -> AppResult<Option<Node>> {
        node::resolve(ctx, &id).await
    }

    /// The caller: the account of the API key.
    async fn viewer(&self, ctx: &Context<'_>) -> AppResult<Viewer> {
        let account_id = super::account_id(ctx)?;
        let account = accounts::find_account(super::db(ctx).conn(), account_id).await?;
        Ok(Viewer { account })
    }

    /// The account's customers, oldest first; `search` matches name or external id.
    async fn customers(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
        search: Option<String>,
    ) -> AppResult<Connection<String, Customer>> {
        let account_id = super::account_id(ctx)?;
        let page = PageRequest::from_args(first, after.as_deref(), last, before.as_deref())?;
        let page =
            customers::list(super::db(ctx).conn(), account_id, search.as_deref(), page).await?;
        Ok(relay(page, |c| c.id, Customer))
    }

    async fn customer(&self, ctx: &Context<'_>, id: ID) -> AppResult<Option<Customer>> {
        let account_id = super::account_id(ctx)?;
        let Ok(id) = ids::decode(ids::Kind::Customer, &id) else {
            return Ok(None);
        };
        match customers::find(super::db(ctx).conn(), account_id, id).await {
            Ok(model) => Ok(Some(Customer(model))),
            Err(crate::error::AppError::NotFound(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }
}
