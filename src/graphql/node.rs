//! The `Node` interface and `node(id)` lookup by typed id.

use async_graphql::{Context, ID, Interface};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::{
    account::{Account, ApiKey},
    connection::{Connection, CreditLedgerEntry},
    customer::Customer,
};
use crate::{
    accounts, connections, customers,
    error::{AppError, AppResult},
    ids::{self, Kind},
};
use entity::credit_ledger;

#[expect(
    clippy::large_enum_variant,
    reason = "a Node lives for one field resolution"
)]
#[derive(Interface)]
#[graphql(field(name = "id", ty = "ID"))]
pub enum Node {
    Account(Account),
    ApiKey(ApiKey),
    Customer(Customer),
    Connection(Connection),
    CreditLedgerEntry(CreditLedgerEntry),
}

/// Resolves any id the caller may see; everything else (unknown, foreign, malformed) is null.
pub async fn resolve(ctx: &Context<'_>, id: &str) -> AppResult<Option<Node>> {
    let Some((kind, uuid)) = ids::parse(id) else {
        return Ok(None);
    };
    let scope = super::principal(ctx).scope()?;
    let db = super::db(ctx).conn();
    if let Kind::Connection = kind {
        return found(
            connections::find(db, scope, uuid)
                .await
                .map(|c| Node::Connection(Connection(c))),
        );
    }
    if scope.connection_id.is_some() {
        return Ok(None);
    }
    let account_id = scope.account_id;
    let node = match kind {
        Kind::Account if uuid == account_id => {
            Node::Account(Account(accounts::find_account(db, uuid).await?))
        }
        Kind::ApiKey => match accounts::find_api_key(db, account_id, uuid).await {
            Ok(key) => Node::ApiKey(ApiKey(key)),
            other => return found(other.map(|k| Node::ApiKey(ApiKey(k)))),
        },
        Kind::Customer => {
            return found(
                customers::find(db, account_id, uuid)
                    .await
                    .map(|c| Node::Customer(Customer(c))),
            );
        }
        Kind::CreditEntry => {
            let entry = credit_ledger::Entity::find_by_id(uuid)
                .filter(credit_ledger::Column::AccountId.eq(account_id))
                .one(db)
                .await?;
            return Ok(entry.map(|e| Node::CreditLedgerEntry(CreditLedgerEntry(e))));
        }
        Kind::Account
        | Kind::Connection
        | Kind::Event
        | Kind::SyncRun
        | Kind::Record
        | Kind::WebhookEndpoint
        | Kind::WebhookDelivery => {
            return Ok(None);
        }
    };
    Ok(Some(node))
}

fn found(result: AppResult<Node>) -> AppResult<Option<Node>> {
    match result {
        Ok(node) => Ok(Some(node)),
        Err(AppError::NotFound(_)) => Ok(None),
        Err(err) => Err(err),
    }
}
