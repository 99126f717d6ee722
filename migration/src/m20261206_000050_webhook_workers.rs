//! `webhook_workers`: the processes whose delivery workers run, each with the time until
//! which it counts as alive (issue #20). A new table only: nothing to carry forward.
//!
//! Across processes an endpoint is served by one process at a time, which rested on the
//! leases alone: in a backlog drain an endpoint's leases of one process ran out for a moment
//! between two of its claims, the other process took the endpoint, and it changed hands
//! about once a second. Each process now writes its
//! row here about once a second; knowing the others, each one serves its own share of the
//! endpoints (see the delivery module), and an endpoint changes hands only when a process
//! starts or stops.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookWorkers::Table)
                    .col(string(WebhookWorkers::Name).primary_key())
                    .col(timestamp_with_time_zone(WebhookWorkers::StartedAt))
                    .col(timestamp_with_time_zone(WebhookWorkers::AliveUntil))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WebhookWorkers::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum WebhookWorkers {
    Table,
    Name,
    StartedAt,
    AliveUntil,
}
