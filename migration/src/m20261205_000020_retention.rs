//! Retention: what the pruning and cleanup workers find their work by.
//!
//! - `webhook_deliveries.created_at` indexed: finished deliveries are pruned oldest first.
//!   The index grows at the end as deliveries are created and never moves afterwards.
//! - `connections.purged_at`: when the records of a disconnected connection were deleted
//!   (null: not yet, or never disconnected). Disconnected connections not purged yet are
//!   indexed by when they were disconnected; every existing row starts unpurged, so an
//!   upgraded installation cleans up connections disconnected before the upgrade too.
//! - `customers.deleted_at`: a customer being deleted (`deleteCustomer` marks it, then its
//!   rows are deleted in batches); null for every existing customer.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Connections {
    Table,
    PurgedAt,
}

#[derive(DeriveIden)]
enum Customers {
    Table,
    DeletedAt,
}

/// Written by hand: the same partial-index syntax on SQLite and PostgreSQL.
const INDEXES: [(&str, &str); 3] = [
    (
        "idx_webhook_deliveries_created",
        "webhook_deliveries (created_at)",
    ),
    (
        "idx_connections_unpurged",
        "connections (disconnected_at) WHERE purged_at IS NULL AND disconnected_at IS NOT NULL",
    ),
    (
        "idx_customers_deleting",
        "customers (deleted_at) WHERE deleted_at IS NOT NULL",
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Connections::Table)
                    .add_column(
                        ColumnDef::new(Connections::PurgedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Customers::Table)
                    .add_column(
                        ColumnDef::new(Customers::DeletedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        for (name, on) in INDEXES {
            db.execute_unprepared(&format!("CREATE INDEX {name} ON {on}"))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for (name, _) in INDEXES {
            db.execute_unprepared(&format!("DROP INDEX IF EXISTS {name}"))
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Customers::Table)
                    .drop_column(Customers::DeletedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Connections::Table)
                    .drop_column(Connections::PurgedAt)
                    .to_owned(),
            )
            .await
    }
}
