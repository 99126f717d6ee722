//! `webhook_endpoints.served_by` and `served_until`: which process serves an endpoint's
//! deliveries, and until when it may keep it without claiming (issue #20).
//!
//! Across processes an endpoint is served by one process at a time (its in-flight limit
//! holds across processes). That used to rest on the leases alone: a process served an
//! endpoint while it held a live lease on one of its pending deliveries. In a backlog drain
//! a process's leases of an endpoint run out between two of its claims now and then, and
//! another process's claimer or dispatcher then took the endpoint over, only for it to change
//! hands again a moment later; the two processes together drained slower than one. The
//! process that claims (or leases straight from its dispatcher) an endpoint's deliveries now
//! also writes its name and a short hold into the endpoint's row, renewed as it goes on; no
//! other process takes the endpoint before that hold runs out. Existing rows start with
//! neither (no process holds them).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column a statement: SQLite alters one column at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(WebhookEndpoints::Table)
                    .add_column(string_null(WebhookEndpoints::ServedBy))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(WebhookEndpoints::Table)
                    .add_column(timestamp_with_time_zone_null(WebhookEndpoints::ServedUntil))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [WebhookEndpoints::ServedUntil, WebhookEndpoints::ServedBy] {
            manager
                .alter_table(
                    Table::alter()
                        .table(WebhookEndpoints::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum WebhookEndpoints {
    Table,
    ServedBy,
    ServedUntil,
}
