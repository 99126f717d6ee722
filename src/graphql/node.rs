//! The `Node` interface and `node(id)` lookup by typed id.

use async_graphql::{Context, ID, Interface};

use super::{account::Account, account::ApiKey, customer::Customer};
use crate::{accounts, customers, error::AppResult, ids};

#[derive(Interface)]
#[graphql(field(name = "id", ty = "ID"))]
pub enum Node {
    Account(Account),
    ApiKey(ApiKey),
    Customer(Customer),
}

/// Resolves any id the caller may see; everything else (unknown, foreign, malformed) is null.
pub async fn resolve(ctx: &Context<'_>, id: &str) -> AppResult<Option<Node>> {
    let Some((kind, uuid)) = ids::parse(id) else {
        return Ok(None);
    };
    let account_id = super::account_id(ctx)?;
    let db = super::db(ctx).conn();
    let found = match kind {
        ids::Kind::Account if uuid == account_id => Some(Node::Account(Account(
            accounts::find_account(db, uuid).await?,
        ))),
        ids::Kind::Account => None,
        ids::Kind::ApiKey => accounts::find_api_key(db, account_id, uuid)
            .await
            .ok()
            .map(|k| Node::ApiKey(ApiKey(k))),
        ids::Kind::Customer => customers::find(db, account_id, uuid)
            .await
            .ok()
            .map(|c| Node::Customer(Customer(c))),
    };
    Ok(found)
}
