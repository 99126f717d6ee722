//! The claim of a sync run or a bulk operation walks a partial index of the jobs that can
//! be claimed (queued or running), in `run_after` order (issue #20).
//!
//! It used the index on (`status`, `run_after`) before: on PostgreSQL through a bitmap scan
//! of its two conditions, which visits the table row of every index entry it finds, and
//! every update of a job's status leaves an entry behind until the table is vacuumed, so a
//! claim cost a little more with each job the database had run since (10 ms a claim after
//! 25,000 connections were made and dropped, when the sync workers' claims took more of the
//! server than everything else). Through this index, a plain index scan marks the entries
//! of dead rows it meets as such, and later claims skip them without visiting the table.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// (index, table): each table's claimable jobs in `run_after` order.
const INDEXES: [(&str, &str); 2] = [
    ("idx_sync_runs_due", "sync_runs"),
    ("idx_bulk_operations_due", "bulk_operations"),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for (index, table) in INDEXES {
            // The statuses as stored, written as in the claim's statement (a partial index
            // serves a literal match only).
            db.execute_unprepared(&format!(
                "CREATE INDEX IF NOT EXISTS {index} ON {table} (run_after) \
                 WHERE status IN ('QUEUED', 'RUNNING')"
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for (index, _) in INDEXES {
            db.execute_unprepared(&format!("DROP INDEX IF EXISTS {index}"))
                .await?;
        }
        Ok(())
    }
}
