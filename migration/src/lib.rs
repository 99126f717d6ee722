//! Database migrations, one file per change, applied in name order.
#![expect(
    elided_lifetimes_in_paths,
    reason = "MigrationTrait elides the SchemaManager lifetime; naming it breaks the impl"
)]

pub use sea_orm_migration::prelude::*;

/// Runs `sql` on PostgreSQL only: the migrations that call it change what SQLite does not
/// have (row locks, checks the server relies on, functions).
async fn on_postgres(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    if manager.get_database_backend() != sea_orm::DbBackend::Postgres {
        return Ok(());
    }
    manager.get_connection().execute_unprepared(sql).await?;
    Ok(())
}

mod m20261127_000001_foundation;
mod m20261127_000002_connections;
mod m20261127_000003_sync;
mod m20261127_000004_webhooks;
mod m20261128_000010_webhook_claims;
mod m20261128_000020_webhook_pending_indexes;
mod m20261205_000001_work_order_enums;
mod m20261205_000010_account_rate_limits;
mod m20261205_000020_retention;
mod m20261205_000030_demo_remote;
mod m20261205_000040_bulk_writes;
mod m20261205_000050_portal_sessions;
mod m20261205_000060_flows;
mod m20261206_000010_event_log_order;
mod m20261206_000020_credit_pool_check;
mod m20261206_000030_deferred_connection_account_fk;
mod m20261206_000040_credit_movement_function;
mod m20261206_000050_webhook_workers;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261127_000001_foundation::Migration),
            Box::new(m20261127_000002_connections::Migration),
            Box::new(m20261127_000003_sync::Migration),
            Box::new(m20261127_000004_webhooks::Migration),
            Box::new(m20261128_000010_webhook_claims::Migration),
            Box::new(m20261128_000020_webhook_pending_indexes::Migration),
            Box::new(m20261205_000001_work_order_enums::Migration),
            Box::new(m20261205_000010_account_rate_limits::Migration),
            Box::new(m20261205_000020_retention::Migration),
            Box::new(m20261205_000030_demo_remote::Migration),
            Box::new(m20261205_000040_bulk_writes::Migration),
            Box::new(m20261205_000050_portal_sessions::Migration),
            Box::new(m20261205_000060_flows::Migration),
            Box::new(m20261206_000010_event_log_order::Migration),
            Box::new(m20261206_000020_credit_pool_check::Migration),
            Box::new(m20261206_000030_deferred_connection_account_fk::Migration),
            Box::new(m20261206_000040_credit_movement_function::Migration),
            Box::new(m20261206_000050_webhook_workers::Migration),
        ]
    }
}
