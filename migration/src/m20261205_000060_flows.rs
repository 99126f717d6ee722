//! Flows: `flows`, an account's conditional automations over record changes (a trigger, a
//! CEL condition, actions, and their counters); `webhook_endpoints.flow_ids`, an endpoint's
//! optional choice of flows; `bulk_operations.flow_id`, the flow that queued an operation.
//!
//! Carried forward: a connection whose webhook event types are every type an earlier release
//! knew (the default) also sends the types added since, `bulk_operation.completed` and
//! `flow.triggered`, as a connection made today does. A connection narrowed on purpose keeps
//! its list.

use sea_orm_migration::{
    prelude::*,
    schema::*,
    sea_orm::{ConnectionTrait, JsonValue, Statement, prelude::Uuid},
};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Every event type of the releases before bulk writes: a connection's list holding all of
/// them was the default.
const EARLIER_TYPES: [&str; 13] = [
    "connection.auth_required",
    "connection.created",
    "connection.disconnected",
    "connection.status_changed",
    "credits.changed",
    "records.changed",
    "sync.completed",
    "sync.failed",
    "sync.progress",
    "sync.started",
    "system.error",
    "webhook.test",
    "webhook_endpoint.disabled",
];
const ADDED_TYPES: [&str; 2] = ["bulk_operation.completed", "flow.triggered"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Flows::Table)
                    .col(uuid(Flows::Id).primary_key())
                    .col(uuid(Flows::AccountId))
                    .col(string(Flows::Name))
                    .col(boolean(Flows::Enabled))
                    .col(string(Flows::Entity))
                    .col(json(Flows::Changes))
                    .col(json_null(Flows::SystemKeys))
                    .col(json_null(Flows::ConnectionIds))
                    .col(text(Flows::Condition))
                    .col(json(Flows::Actions))
                    .col(big_integer(Flows::Evaluations).default(0))
                    .col(big_integer(Flows::Matches).default(0))
                    .col(big_integer(Flows::Errors).default(0))
                    .col(text_null(Flows::LastError))
                    .col(timestamp_with_time_zone_null(Flows::LastErrorAt))
                    .col(timestamp_with_time_zone(Flows::CreatedAt))
                    .col(timestamp_with_time_zone(Flows::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Flows::Table, Flows::AccountId)
                            .to(Accounts::Table, Accounts::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // A name is unique per account; the sync engine reads an account's flows by it too.
        manager
            .create_index(
                Index::create()
                    .name("idx_flows_account_name")
                    .table(Flows::Table)
                    .col(Flows::AccountId)
                    .col(Flows::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(WebhookEndpoints::Table)
                    .add_column(json_null(WebhookEndpoints::FlowIds))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(BulkOperations::Table)
                    .add_column(uuid_null(BulkOperations::FlowId))
                    .to_owned(),
            )
            .await?;
        rewrite_types(manager, |names| {
            if !EARLIER_TYPES.iter().all(|t| names.iter().any(|n| n == t))
                || ADDED_TYPES.iter().all(|t| names.iter().any(|n| n == t))
            {
                return false;
            }
            names.extend(ADDED_TYPES.iter().map(|t| (*t).to_owned()));
            names.sort_unstable();
            names.dedup();
            true
        })
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(BulkOperations::Table)
                    .drop_column(BulkOperations::FlowId)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(WebhookEndpoints::Table)
                    .drop_column(WebhookEndpoints::FlowIds)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(Flows::Table).to_owned())
            .await?;
        // The previous release does not know `flow.triggered`.
        rewrite_types(manager, |names| {
            let before = names.len();
            names.retain(|n| n != "flow.triggered");
            names.len() != before
        })
        .await
    }
}

/// Rewrites every connection's webhook event types with `change`, which says whether it
/// changed them (up: adds [`ADDED_TYPES`] to lists holding all of [`EARLIER_TYPES`]).
async fn rewrite_types(
    manager: &SchemaManager<'_>,
    change: impl Fn(&mut Vec<String>) -> bool,
) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let backend = manager.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT id, webhook_event_types FROM connections",
        ))
        .await?;
    for row in rows {
        let id: Uuid = row.try_get("", "id")?;
        let types: JsonValue = row.try_get("", "webhook_event_types")?;
        let Some(mut names) = types.as_array().map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        }) else {
            continue;
        };
        if !change(&mut names) {
            continue;
        }
        let update = Query::update()
            .table(Connections::Table)
            .value(Connections::WebhookEventTypes, JsonValue::from(names))
            .and_where(Expr::col(Connections::Id).eq(id))
            .to_owned();
        db.execute(&update).await?;
    }
    Ok(())
}

#[derive(DeriveIden)]
enum Accounts {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Connections {
    Table,
    Id,
    WebhookEventTypes,
}

#[derive(DeriveIden)]
enum WebhookEndpoints {
    Table,
    FlowIds,
}

#[derive(DeriveIden)]
enum BulkOperations {
    Table,
    FlowId,
}

#[derive(DeriveIden)]
enum Flows {
    Table,
    Id,
    AccountId,
    Name,
    Enabled,
    Entity,
    Changes,
    SystemKeys,
    ConnectionIds,
    Condition,
    Actions,
    Evaluations,
    Matches,
    Errors,
    LastError,
    LastErrorAt,
    CreatedAt,
    UpdatedAt,
}
