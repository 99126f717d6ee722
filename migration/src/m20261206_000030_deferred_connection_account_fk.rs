//! PostgreSQL: the foreign key from `connections.account_id` to `accounts` is checked at
//! commit (`DEFERRABLE INITIALLY DEFERRED`) instead of at the insert (issue #20).
//!
//! Checked at the insert, it takes a `FOR KEY SHARE` lock on the account's row that lasts
//! until the commit: every connect of an account in flight held one at once, so the row's
//! lockers became a multixact, which every later lock, update and visibility check of that
//! row had to read and copy member by member (about 8 % of the CPU of a busy connect load
//! went to `GetMultiXactIdMembers`). Checked at commit, the check comes after the credit
//! movement, which has already locked the row for update in the same transaction: the check
//! takes no lock of its own and makes no multixact. What it guarantees is unchanged (the
//! account exists when the connection is committed; `ON DELETE CASCADE` still acts at once).
//! SQLite gets nothing here (it has one writer and no row locks).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Sets the deferral of the foreign key from `connections` to `accounts`, whatever its name.
fn alter(deferral: &str) -> String {
    format!(
        "DO $$ DECLARE fk text; BEGIN \
           SELECT conname INTO fk FROM pg_constraint \
            WHERE conrelid = 'connections'::regclass AND contype = 'f' \
              AND confrelid = 'accounts'::regclass; \
           IF fk IS NOT NULL THEN \
             EXECUTE format('ALTER TABLE connections ALTER CONSTRAINT %I {deferral}', fk); \
           END IF; \
         END $$"
    )
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::on_postgres(manager, &alter("DEFERRABLE INITIALLY DEFERRED")).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::on_postgres(manager, &alter("NOT DEFERRABLE")).await
    }
}
