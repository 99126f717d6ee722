//! PostgreSQL: the account's credit pool is checked by the database (issue #20). A credit
//! movement there is the last statement of its transaction, sent with the `COMMIT` in one
//! round trip (`credits` in the server), so the account's row is held for the statement and
//! the commit only; a consumption the pool cannot pay must then fail as a statement, and
//! this constraint is what fails it: `0 <= credits_used <= credits_total <= 2^31 - 1`, which
//! every account already meets (every movement kept it). SQLite keeps its conditional
//! updates, and gets nothing here.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The constraint's name, which the server recognises in the error.
const CONSTRAINT: &str = "accounts_credit_pool";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let check = format!(
            "ALTER TABLE accounts ADD CONSTRAINT {CONSTRAINT} CHECK \
             (credits_used >= 0 AND credits_used <= credits_total \
              AND credits_total <= 2147483647)"
        );
        crate::on_postgres(manager, &check).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let drop = format!("ALTER TABLE accounts DROP CONSTRAINT IF EXISTS {CONSTRAINT}");
        crate::on_postgres(manager, &drop).await
    }
}
