//! Flows: `flows`, an account's conditional automations over record changes (a trigger, a
//! CEL condition, actions, and their counters); `webhook_endpoints.flow_ids`, an endpoint's
//! optional choice of flows; `bulk_operations.flow_id`, the flow that queued an operation.
//!
//! Carried forward: a connection whose webhook event types are exactly the default of an
//! earlier release (every type it knew) also sends the types added since,
//! `bulk_operation.completed` and `flow.triggered`, as a connection made today does. A
//! connection narrowed on purpose keeps its list. Reverted: `flow.triggered` events and their
//! deliveries are deleted, no list names the type, and an endpoint that took only it is
//! disabled.

use sea_orm_migration::{
    prelude::*,
    schema::*,
    sea_orm::{ConnectionTrait, JsonValue, Statement, prelude::Uuid},
};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Every event type of the releases before bulk writes: a connection's list of exactly these
/// was the default then.
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
        // Exactly the default of the release before bulk writes, or of the release before
        // this one (which added `bulk_operation.completed`): a list narrowed on purpose is
        // neither.
        let mut earlier: Vec<String> = EARLIER_TYPES.iter().map(|t| (*t).to_owned()).collect();
        earlier.sort_unstable();
        let mut previous = earlier.clone();
        previous.push(ADDED_TYPES[0].to_owned());
        previous.sort_unstable();
        let mut now = previous.clone();
        now.push(ADDED_TYPES[1].to_owned());
        now.sort_unstable();
        let db = manager.get_connection();
        for (id, mut names) in type_lists(manager, "connections", "webhook_event_types").await? {
            names.sort_unstable();
            names.dedup();
            if names != earlier && names != previous {
                continue;
            }
            let update = Query::update()
                .table(Connections::Table)
                .value(Connections::WebhookEventTypes, JsonValue::from(now.clone()))
                .and_where(Expr::col(Connections::Id).eq(id))
                .to_owned();
            db.execute(&update).await?;
        }
        Ok(())
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
        // The previous release does not know `flow.triggered`: its events and their
        // deliveries go, connections stop naming it, and an endpoint that took only it is
        // disabled (an empty list would mean every type).
        let db = manager.get_connection();
        for sql in [
            "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT d.id FROM \
             webhook_deliveries d JOIN events e ON e.position = d.event_position \
             WHERE e.event_type = 'flow.triggered')",
            "DELETE FROM webhook_deliveries WHERE event_position IN \
             (SELECT position FROM events WHERE event_type = 'flow.triggered')",
            "DELETE FROM events WHERE event_type = 'flow.triggered'",
        ] {
            db.execute_unprepared(sql).await?;
        }
        let dropped = |names: &mut Vec<String>| {
            let before = names.len();
            names.retain(|n| n != "flow.triggered");
            names.len() != before
        };
        for (id, mut names) in type_lists(manager, "connections", "webhook_event_types").await? {
            if dropped(&mut names) {
                let update = Query::update()
                    .table(Connections::Table)
                    .value(Connections::WebhookEventTypes, JsonValue::from(names))
                    .and_where(Expr::col(Connections::Id).eq(id))
                    .to_owned();
                db.execute(&update).await?;
            }
        }
        for (id, mut names) in type_lists(manager, "webhook_endpoints", "event_types").await? {
            if !dropped(&mut names) {
                continue;
            }
            let mut update = Query::update();
            update
                .table(WebhookEndpoints::Table)
                .value(WebhookEndpoints::EventTypes, JsonValue::from(names.clone()))
                .and_where(Expr::col(WebhookEndpoints::Id).eq(id));
            if names.is_empty() {
                update.value(WebhookEndpoints::Enabled, false).value(
                    WebhookEndpoints::DisabledReason,
                    "it received only flow.triggered events, which this release does not have",
                );
            }
            db.execute(&update).await?;
        }
        Ok(())
    }
}

/// Every row's list of event types in `table.column` (a JSON array of names): (id, names).
async fn type_lists(
    manager: &SchemaManager<'_>,
    table: &str,
    column: &str,
) -> Result<Vec<(Uuid, Vec<String>)>, DbErr> {
    let rows = manager
        .get_connection()
        .query_all_raw(Statement::from_string(
            manager.get_database_backend(),
            format!("SELECT id, {column} FROM {table}"),
        ))
        .await?;
    let mut lists = Vec::with_capacity(rows.len());
    for row in rows {
        let id: Uuid = row.try_get("", "id")?;
        let types: JsonValue = row.try_get("", column)?;
        if let Some(names) = types.as_array() {
            let names = names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect();
            lists.push((id, names));
        }
    }
    Ok(lists)
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
    Id,
    EventTypes,
    Enabled,
    DisabledReason,
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
