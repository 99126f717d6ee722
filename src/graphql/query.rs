//! Query root.

use async_graphql::{Context, ID, MergedObject, Object, connection::Connection};
use chrono::{DateTime, Utc};

use super::{
    account::Viewer,
    catalog::System,
    connection::{Connection as ConnectionObject, CreditLedgerEntry},
    customer::Customer,
    enums::{ConnectionStatus, EntityType, SystemCategory},
    event::{Event, EventFilter, filter_for},
    node::{self, Node},
    pagination::relay,
    records::{self, UnifiedRecord},
    sync::SyncRun,
};
use crate::{
    accounts, catalog,
    connections::{self, ListFilter},
    credits, customers,
    error::{AppError, AppResult},
    events, ids,
    pagination::PageRequest,
    records::RecordQuery as RecordRequest,
    sync,
};

/// What can be read: with an API key the whole account, with a connection token that one
/// connection.
#[derive(MergedObject, Default)]
pub struct Query(
    BaseQuery,
    RecordQuery,
    super::webhooks::WebhookQuery,
    super::bulk::BulkQuery,
    super::portal::PortalQuery,
    super::flows::FlowQuery,
);

#[derive(Default)]
pub struct BaseQuery;

#[Object]
impl BaseQuery {
    /// Any object you may see, by id; null when it does not exist or is not yours.
    async fn node(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Any object's id (`con_…`, `run_…`, `rec_…`, …).")] id: ID,
    ) -> AppResult<Option<Node>> {
        node::resolve(ctx, &id).await
    }

    /// The caller: its account, and with a connection token its connection.
    async fn viewer(&self, ctx: &Context<'_>) -> AppResult<Viewer> {
        let scope = super::principal(ctx).scope()?;
        let db = super::db(ctx).conn();
        let account = accounts::find_account(db, scope.account_id).await?;
        let connection = match scope.connection_id {
            Some(id) => Some(connections::find(db, scope, id).await?),
            None => None,
        };
        Ok(Viewer {
            account,
            connection,
        })
    }

    /// Every system that can be connected, optionally of one category (for a portal
    /// session, those it allows).
    async fn systems(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only systems of this category.")] category: Option<SystemCategory>,
    ) -> Vec<System> {
        let portal = super::principal(ctx).portal();
        catalog::SYSTEMS
            .iter()
            .filter(|s| category.is_none_or(|c| s.category == c.into()))
            .filter(|s| portal.is_none_or(|grant| grant.allows(s.key)))
            .map(|s| System(s))
            .collect()
    }

    /// One system by its key; null for an unknown key (or one a portal session does not
    /// allow).
    async fn system(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The system's key, such as `maintainx`.")] key: String,
    ) -> Option<System> {
        let portal = super::principal(ctx).portal();
        catalog::find(&key)
            .filter(|s| portal.is_none_or(|grant| grant.allows(s.key)))
            .map(System)
    }

    /// Connections, oldest first; a connection token sees only its own.
    #[allow(clippy::too_many_arguments)]
    async fn connections(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 0 to 100; 50 when omitted.")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
        #[graphql(desc = "Page size counted back from `before`, 0 to 100; 50 when omitted.")] last: Option<i32>,
        #[graphql(desc = "Pages backwards from this cursor (a `startCursor`).")] before: Option<
            String,
        >,
        #[graphql(desc = "Only this customer's connections.")] customer_id: Option<ID>,
        #[graphql(desc = "Only connections with this status.")] status: Option<ConnectionStatus>,
        #[graphql(desc = "Only connections of this system.")] system_key: Option<String>,
    ) -> AppResult<Connection<String, ConnectionObject>> {
        let scope = super::principal(ctx).connections_scope()?;
        let page = PageRequest::from_args(first, after.as_deref(), last, before.as_deref())?;
        let customer_id = customer_id
            .map(|id| ids::decode(ids::Kind::Customer, &id))
            .transpose()?;
        let filter = ListFilter {
            customer_id,
            status: status.map(Into::into),
            system_key,
        };
        let page = connections::list(super::db(ctx).conn(), scope, filter, page).await?;
        Ok(relay(page, |c| c.id, ConnectionObject))
    }

    /// One connection by id; null when it does not exist or is not the caller's.
    async fn connection(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The connection's id (`con_…`).")] id: ID,
    ) -> AppResult<Option<ConnectionObject>> {
        let scope = super::principal(ctx).connections_scope()?;
        let Ok(id) = ids::decode(ids::Kind::Connection, &id) else {
            return Ok(None);
        };
        not_found_as_none(
            connections::find(super::db(ctx).conn(), scope, id)
                .await
                .map(ConnectionObject),
        )
    }

    /// Every movement of the account's credit pool, oldest first.
    async fn credit_ledger(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 0 to 100; 50 when omitted.")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> AppResult<Connection<String, CreditLedgerEntry>> {
        let account_id = super::account_id(ctx)?;
        let page = PageRequest::from_args(first, after.as_deref(), None, None)?;
        let page = credits::ledger(super::db(ctx).conn(), account_id, page).await?;
        Ok(relay(page, |e| e.id, CreditLedgerEntry))
    }

    /// Stored events, oldest first; `Event.cursor` values are the continuation tokens.
    async fn events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 0 to 100; 50 when omitted.")] first: Option<i32>,
        #[graphql(desc = "An `Event.cursor`: the page starts after that event.")] after: Option<
            String,
        >,
        #[graphql(desc = "Which events; all the caller may see when omitted.")] filter: Option<
            EventFilter,
        >,
    ) -> AppResult<Connection<String, Event>> {
        let scope = super::principal(ctx).scope()?;
        let limit = PageRequest::from_args(first, None, None, None)?.limit;
        let after = after.as_deref().map(events::decode_cursor).transpose()?;
        let filter = filter_for(scope, filter)?;
        let (rows, more) = events::list(super::db(ctx).conn(), &filter, after, limit).await?;
        let mut connection = Connection::new(after.is_some(), more);
        connection.edges = rows
            .into_iter()
            .map(|e| {
                async_graphql::connection::Edge::new(
                    events::encode_cursor(events::LogPosition::of(&e)),
                    Event(e),
                )
            })
            .collect();
        Ok(connection)
    }

    /// One sync run by id; null when it does not exist or is not the caller's.
    async fn sync_run(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The run's id (`run_…`).")] id: ID,
    ) -> AppResult<Option<SyncRun>> {
        let scope = super::principal(ctx).scope()?;
        let Ok(id) = ids::decode(ids::Kind::SyncRun, &id) else {
            return Ok(None);
        };
        not_found_as_none(
            sync::find(super::db(ctx).conn(), scope, id)
                .await
                .map(SyncRun),
        )
    }

    /// Unified records of one connection, by entity type, oldest first. With a connection
    /// token `connectionId` may be omitted.
    #[allow(clippy::too_many_arguments)]
    async fn records(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The connection to read; may be omitted with a connection token.")]
        connection_id: Option<ID>,
        #[graphql(desc = "The entity type to read.")] entity: EntityType,
        #[graphql(desc = "Page size, 0 to 100; 50 when omitted.")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
        #[graphql(desc = "Only records changed after this instant (their `modifiedAt`).")]
        modified_after: Option<DateTime<Utc>>,
        #[graphql(
            default = false,
            desc = "Also records the remote deleted (their `deletedAt` is set)."
        )]
        include_deleted: bool,
    ) -> AppResult<Connection<String, UnifiedRecord>> {
        let args = RecordArgs {
            connection_id,
            first,
            after,
            modified_after,
            include_deleted,
        };
        record_page(ctx, entity.into(), args, UnifiedRecord::of).await
    }

    /// The account's customers, oldest first; `search` matches name or external id.
    async fn customers(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 0 to 100; 50 when omitted.")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
        #[graphql(desc = "Page size counted back from `before`, 0 to 100; 50 when omitted.")] last: Option<i32>,
        #[graphql(desc = "Pages backwards from this cursor (a `startCursor`).")] before: Option<
            String,
        >,
        #[graphql(desc = "Text to find in the name or external id, ignoring case.")] search: Option<
            String,
        >,
    ) -> AppResult<Connection<String, Customer>> {
        let account_id = super::account_id(ctx)?;
        let page = PageRequest::from_args(first, after.as_deref(), last, before.as_deref())?;
        let page =
            customers::list(super::db(ctx).conn(), account_id, search.as_deref(), page).await?;
        Ok(relay(page, |c| c.id, Customer))
    }

    /// One customer by id; null when it does not exist or is not the caller's (a portal
    /// session sees its own customer only).
    async fn customer(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The customer's id (`cus_…`).")] id: ID,
    ) -> AppResult<Option<Customer>> {
        let principal = super::principal(ctx);
        let account_id = match principal.portal() {
            Some(grant) => grant.account_id,
            None => principal.account_id()?,
        };
        let Ok(id) = ids::decode(ids::Kind::Customer, &id) else {
            return Ok(None);
        };
        if principal
            .portal()
            .is_some_and(|grant| grant.customer_id != id)
        {
            return Ok(None);
        }
        not_found_as_none(
            customers::find(super::db(ctx).conn(), account_id, id)
                .await
                .map(Customer),
        )
    }
}

/// A single-object lookup answers null for what does not exist or is not the caller's.
fn not_found_as_none<T>(found: AppResult<T>) -> AppResult<Option<T>> {
    match found {
        Ok(value) => Ok(Some(value)),
        Err(AppError::NotFound(_)) => Ok(None),
        Err(err) => Err(err),
    }
}

struct RecordArgs {
    connection_id: Option<ID>,
    first: Option<i32>,
    after: Option<String>,
    modified_after: Option<DateTime<Utc>>,
    include_deleted: bool,
}

/// One page of a connection's records, after checking the caller may read that connection.
async fn record_page<T: async_graphql::OutputType>(
    ctx: &Context<'_>,
    entity: catalog::EntityType,
    args: RecordArgs,
    wrap: impl Fn(entity::record::Model) -> T,
) -> AppResult<Connection<String, T>> {
    let scope = super::principal(ctx).scope()?;
    let query = RecordRequest {
        connection_id: args
            .connection_id
            .map(|id| ids::decode(ids::Kind::Connection, &id))
            .transpose()?,
        entity,
        modified_after: args.modified_after,
        include_deleted: args.include_deleted,
    };
    let page = PageRequest::from_args(args.first, args.after.as_deref(), None, None)?;
    let page = crate::records::list_visible(super::db(ctx).conn(), scope, query, page).await?;
    Ok(relay(page, |r| r.id, wrap))
}

/// Typed record queries, one per entity type, all alike.
macro_rules! record_queries {
    ($($query:ident => $entity:ident: $doc:literal),+ $(,)?) => {
        #[derive(Default)]
        pub struct RecordQuery;

        #[Object]
        impl RecordQuery {
            $(
                #[doc = $doc]
                #[allow(clippy::too_many_arguments)]
                async fn $query(
                    &self,
                    ctx: &Context<'_>,
                    #[graphql(desc = "The connection to read; may be omitted with a connection token.")]
                    connection_id: Option<ID>,
                    #[graphql(desc = "Page size, 0 to 100; 50 when omitted.")] first: Option<i32>,
                    #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
                    #[graphql(desc = "Only records changed after this instant (their `modifiedAt`).")]
                    modified_after: Option<DateTime<Utc>>,
                    #[graphql(default = false, desc = "Also records the remote deleted (their `deletedAt` is set).")]
                    include_deleted: bool,
                ) -> AppResult<Connection<String, records::$entity>> {
                    let args = RecordArgs { connection_id, first, after, modified_after, include_deleted };
                    record_page(ctx, catalog::EntityType::$entity, args, records::$entity).await
                }
            )+
        }
    };
}

record_queries!(
    assets => Asset: "A connection's assets, oldest first.",
    work_orders => WorkOrder: "A connection's work orders, oldest first.",
    sites => Site: "A connection's sites, oldest first.",
    locations => Location: "A connection's locations, oldest first.",
    parts => Part: "A connection's parts, oldest first.",
    purchase_orders => PurchaseOrder: "A connection's purchase orders, oldest first.",
    vendors => Vendor: "A connection's vendors, oldest first.",
    users => User: "A connection's users, oldest first.",
);
