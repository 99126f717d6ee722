//! The delivery pipeline looks only at `PENDING` deliveries: their due times per endpoint
//! (claims) and their leases per endpoint (one process per endpoint). Partial indexes over
//! the pending rows replace three indexes over every row, so a delivery that ends leaves
//! them instead of moving inside three of them, and a lease taken when the delivery is
//! created costs no index change later.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const DROPPED: [&str; 3] = [
    "idx_webhook_deliveries_due",
    "idx_webhook_deliveries_in_flight",
    "idx_webhook_deliveries_endpoint_due",
];

const CREATED: [(&str, &str); 2] = [
    (
        "idx_webhook_deliveries_pending_due",
        "endpoint_id, next_attempt_at",
    ),
    (
        "idx_webhook_deliveries_pending_leases",
        "endpoint_id, locked_until",
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for name in DROPPED {
            db.execute_unprepared(&format!("DROP INDEX IF EXISTS {name}"))
                .await?;
        }
        // Written by hand: the same partial-index syntax on SQLite and PostgreSQL. The
        // queries that use them repeat `status = 'PENDING'` literally.
        for (name, columns) in CREATED {
            db.execute_unprepared(&format!(
                "CREATE INDEX {name} ON webhook_deliveries ({columns}) \
                 WHERE status = 'PENDING'"
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for (name, _) in CREATED {
            db.execute_unprepared(&format!("DROP INDEX IF EXISTS {name}"))
                .await?;
        }
        for (name, columns) in [
            ("idx_webhook_deliveries_due", "status, next_attempt_at"),
            (
                "idx_webhook_deliveries_in_flight",
                "endpoint_id, status, locked_until",
            ),
            (
                "idx_webhook_deliveries_endpoint_due",
                "endpoint_id, status, next_attempt_at",
            ),
        ] {
            db.execute_unprepared(&format!(
                "CREATE INDEX {name} ON webhook_deliveries ({columns})"
            ))
            .await?;
        }
        Ok(())
    }
}
