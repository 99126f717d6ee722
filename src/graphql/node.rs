//! The `Node` interface and `node(id)` lookup by typed id.

use async_graphql::{Context, ID, Interface};
use sea_orm::ConnectionTrait;
use uuid::Uuid;

use super::{
    account::{Account, ApiKey},
    bulk::BulkOperation,
    connection::{Connection, CreditLedgerEntry},
    customer::Customer,
    event::Event,
    flows::Flow,
    portal::PortalSession,
    records::{Asset, Location, Part, PurchaseOrder, Site, UnifiedRecord, User, Vendor, WorkOrder},
    sync::SyncRun,
    webhooks::{WebhookDelivery, WebhookEndpoint},
};
use crate::{
    accounts, bulk, connections, credits, customers,
    error::{AppError, AppResult},
    events, flows,
    ids::{self, Kind},
    portal, records, sync, webhooks,
};

/// An object with a global id that `node(id:)` finds again.
#[derive(Interface)]
#[graphql(field(
    name = "id",
    ty = "ID",
    desc = "The object's id: a type prefix and a UUID (`cus_0193…`)."
))]
pub enum Node {
    Account(Account),
    ApiKey(ApiKey),
    Customer(Customer),
    Connection(Connection),
    CreditLedgerEntry(CreditLedgerEntry),
    SyncRun(SyncRun),
    BulkOperation(BulkOperation),
    Event(Event),
    PortalSession(PortalSession),
    Flow(Flow),
    WebhookEndpoint(WebhookEndpoint),
    WebhookDelivery(WebhookDelivery),
    Site(Site),
    Location(Location),
    Asset(Asset),
    WorkOrder(WorkOrder),
    Part(Part),
    PurchaseOrder(PurchaseOrder),
    Vendor(Vendor),
    User(User),
}

/// Resolves any id the caller may see; everything else (unknown, foreign, malformed) is null.
pub async fn resolve(ctx: &Context<'_>, id: &str) -> AppResult<Option<Node>> {
    let Some((kind, uuid)) = ids::parse(id) else {
        return Ok(None);
    };
    let scope = super::principal(ctx).scope()?;
    let db = super::db(ctx).conn();
    let found = match kind {
        Kind::Connection => connections::find(db, scope, uuid)
            .await
            .map(|c| Some(Node::Connection(Connection(c)))),
        Kind::SyncRun => sync::find(db, scope, uuid)
            .await
            .map(|r| Some(Node::SyncRun(SyncRun(r)))),
        Kind::BulkOperation => bulk::find(db, scope, uuid)
            .await
            .map(|op| Some(Node::BulkOperation(BulkOperation(op)))),
        Kind::Event => events::find(db, scope, uuid)
            .await
            .map(|e| Some(Node::Event(Event(e)))),
        Kind::Record => records::find(db, scope, uuid)
            .await
            .map(|r| Some(record_node(r))),
        _ if scope.connection_id.is_some() => Ok(None),
        _ => account_node(db, scope.account_id, kind, uuid).await,
    };
    match found {
        Err(AppError::NotFound(_)) => Ok(None),
        other => other,
    }
}

/// Objects only an account key may see.
async fn account_node(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    kind: Kind,
    id: Uuid,
) -> AppResult<Option<Node>> {
    Ok(Some(match kind {
        Kind::Account if id == account_id => {
            Node::Account(Account(accounts::find_account(db, id).await?))
        }
        Kind::ApiKey => Node::ApiKey(ApiKey(accounts::find_api_key(db, account_id, id).await?)),
        Kind::Customer => Node::Customer(Customer(customers::find(db, account_id, id).await?)),
        Kind::WebhookEndpoint => {
            Node::WebhookEndpoint(WebhookEndpoint(webhooks::find(db, account_id, id).await?))
        }
        Kind::WebhookDelivery => Node::WebhookDelivery(WebhookDelivery(
            webhooks::find_delivery(db, account_id, id).await?,
        )),
        Kind::CreditEntry => Node::CreditLedgerEntry(CreditLedgerEntry(
            credits::find_entry(db, account_id, id).await?,
        )),
        Kind::PortalSession => Node::PortalSession(PortalSession {
            model: portal::find(db, account_id, id).await?,
            token: None,
        }),
        Kind::Flow => Node::Flow(Flow(flows::find(db, account_id, id).await?)),
        _ => return Ok(None),
    }))
}

fn record_node(record: entity::record::Model) -> Node {
    match UnifiedRecord::of(record) {
        UnifiedRecord::Site(r) => Node::Site(r),
        UnifiedRecord::Location(r) => Node::Location(r),
        UnifiedRecord::Asset(r) => Node::Asset(r),
        UnifiedRecord::WorkOrder(r) => Node::WorkOrder(r),
        UnifiedRecord::Part(r) => Node::Part(r),
        UnifiedRecord::PurchaseOrder(r) => Node::PurchaseOrder(r),
        UnifiedRecord::Vendor(r) => Node::Vendor(r),
        UnifiedRecord::User(r) => Node::User(r),
    }
}
