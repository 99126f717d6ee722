//! Work orders get unified states and priorities: `status` becomes one of `OPEN`,
//! `IN_PROGRESS`, `ON_HOLD`, `COMPLETED`, `CANCELLED` (or null) with the remote's word in
//! `remoteStatus`, and `priority` (`NONE` … `URGENT`, with `remotePriority`) replaces the
//! free-text `severity`. Work orders stored before came from the demo system, whose words
//! are lower case; their unified fields are rewritten in place (their content hash, taken
//! of the remote's record, does not change, so a later sync would not rewrite them).

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const STATUS: &str = "CASE {} WHEN 'open' THEN 'OPEN' WHEN 'in_progress' THEN 'IN_PROGRESS' \
     WHEN 'on_hold' THEN 'ON_HOLD' WHEN 'done' THEN 'COMPLETED' WHEN 'cancelled' THEN 'CANCELLED' END";
const PRIORITY: &str = "CASE {} WHEN 'none' THEN 'NONE' WHEN 'low' THEN 'LOW' \
     WHEN 'medium' THEN 'MEDIUM' WHEN 'high' THEN 'HIGH' WHEN 'urgent' THEN 'URGENT' END";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let sql = match manager.get_database_backend() {
            DbBackend::Sqlite => {
                let status = STATUS.replace("{}", "json_extract(data, '$.status')");
                let priority = PRIORITY.replace("{}", "json_extract(data, '$.severity')");
                format!(
                    "UPDATE records SET data = json_set(json_remove(data, '$.severity'), \
                     '$.remoteStatus', json_extract(data, '$.status'), '$.status', {status}, \
                     '$.remotePriority', json_extract(data, '$.severity'), '$.priority', {priority}) \
                     WHERE entity = 'WORK_ORDER' AND json_type(data, '$.remoteStatus') IS NULL"
                )
            }
            _ => {
                let status = STATUS.replace("{}", "(data->>'status')");
                let priority = PRIORITY.replace("{}", "(data->>'severity')");
                format!(
                    "UPDATE records SET data = ((data::jsonb - 'severity') || jsonb_build_object(\
                     'remoteStatus', data->'status', 'status', {status}, \
                     'remotePriority', data->'severity', 'priority', {priority}))::json \
                     WHERE entity = 'WORK_ORDER' AND (data->'remoteStatus') IS NULL"
                )
            }
        };
        db.execute_unprepared(&sql).await?;
        Ok(())
    }
}
