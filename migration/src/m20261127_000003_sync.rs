//! Sync runs (durable jobs with leases), per-entity sync cursors, and the unified record store.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_table(sync_runs()).await?;
        for (name, columns) in [
            (
                "idx_sync_runs_connection",
                vec![SyncRuns::ConnectionId, SyncRuns::Id],
            ),
            (
                "idx_sync_runs_claim",
                vec![SyncRuns::Status, SyncRuns::RunAfter],
            ),
        ] {
            let mut index = Index::create().name(name).table(SyncRuns::Table).to_owned();
            for column in columns {
                index.col(column);
            }
            manager.create_index(index).await?;
        }
        // At most one queued-or-running run per connection, whatever races happen.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX uq_sync_runs_active ON sync_runs (connection_id) \
                 WHERE status IN ('QUEUED', 'RUNNING')",
            )
            .await?;
        manager.create_table(sync_cursors()).await?;
        manager.create_table(records()).await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_records_key")
                    .table(Records::Table)
                    .col(Records::ConnectionId)
                    .col(Records::Entity)
                    .col(Records::Key)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_records_page")
                    .table(Records::Table)
                    .col(Records::ConnectionId)
                    .col(Records::Entity)
                    .col(Records::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_records_modified")
                    .table(Records::Table)
                    .col(Records::ConnectionId)
                    .col(Records::Entity)
                    .col(Records::ModifiedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Records::Table.into_iden(),
            SyncCursors::Table.into_iden(),
            SyncRuns::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

fn sync_runs() -> TableCreateStatement {
    Table::create()
        .table(SyncRuns::Table)
        .col(uuid(SyncRuns::Id).primary_key())
        .col(uuid(SyncRuns::AccountId))
        .col(uuid(SyncRuns::ConnectionId))
        .col(string(SyncRuns::Kind))
        .col(string(SyncRuns::Trigger))
        .col(string(SyncRuns::Status))
        .col(timestamp_with_time_zone(SyncRuns::QueuedAt))
        .col(timestamp_with_time_zone_null(SyncRuns::StartedAt))
        .col(timestamp_with_time_zone_null(SyncRuns::FinishedAt))
        .col(timestamp_with_time_zone(SyncRuns::RunAfter))
        .col(string_null(SyncRuns::LockedBy))
        .col(timestamp_with_time_zone_null(SyncRuns::LockedUntil))
        .col(integer(SyncRuns::Attempts).default(0))
        .col(boolean(SyncRuns::CancelRequested).default(false))
        .col(big_integer(SyncRuns::RecordsAdded).default(0))
        .col(big_integer(SyncRuns::RecordsUpdated).default(0))
        .col(big_integer(SyncRuns::RecordsDeleted).default(0))
        .col(json(SyncRuns::Stats))
        .col(string_null(SyncRuns::ErrorCode))
        .col(string_null(SyncRuns::ErrorMessage))
        .foreign_key(
            ForeignKey::create()
                .from(SyncRuns::Table, SyncRuns::ConnectionId)
                .to(Connections::Table, Connections::Id)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .to_owned()
}

fn sync_cursors() -> TableCreateStatement {
    Table::create()
        .table(SyncCursors::Table)
        .col(uuid(SyncCursors::ConnectionId))
        .col(string(SyncCursors::Entity))
        .col(string_null(SyncCursors::Mark))
        .col(uuid_null(SyncCursors::PassId))
        .col(string_null(SyncCursors::PassKind))
        .col(string_null(SyncCursors::PassCursor))
        .col(boolean(SyncCursors::PassDone).default(false))
        .primary_key(
            Index::create()
                .col(SyncCursors::ConnectionId)
                .col(SyncCursors::Entity),
        )
        .foreign_key(
            ForeignKey::create()
                .from(SyncCursors::Table, SyncCursors::ConnectionId)
                .to(Connections::Table, Connections::Id)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .to_owned()
}

fn records() -> TableCreateStatement {
    Table::create()
        .table(Records::Table)
        .col(uuid(Records::Id).primary_key())
        .col(uuid(Records::ConnectionId))
        .col(string(Records::Entity))
        .col(string(Records::Key))
        .col(json(Records::Data))
        .col(json_null(Records::RemoteData))
        .col(string(Records::ContentHash))
        .col(timestamp_with_time_zone_null(Records::RemoteCreatedAt))
        .col(timestamp_with_time_zone_null(Records::RemoteUpdatedAt))
        .col(timestamp_with_time_zone(Records::FirstSeenAt))
        .col(timestamp_with_time_zone(Records::ModifiedAt))
        .col(timestamp_with_time_zone_null(Records::DeletedAt))
        .col(uuid_null(Records::SeenPass))
        .foreign_key(
            ForeignKey::create()
                .from(Records::Table, Records::ConnectionId)
                .to(Connections::Table, Connections::Id)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .to_owned()
}

#[derive(DeriveIden)]
enum Connections {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum SyncRuns {
    Table,
    Id,
    AccountId,
    ConnectionId,
    Kind,
    Trigger,
    Status,
    QueuedAt,
    StartedAt,
    FinishedAt,
    RunAfter,
    LockedBy,
    LockedUntil,
    Attempts,
    CancelRequested,
    RecordsAdded,
    RecordsUpdated,
    RecordsDeleted,
    Stats,
    ErrorCode,
    ErrorMessage,
}

#[derive(DeriveIden)]
enum SyncCursors {
    Table,
    ConnectionId,
    Entity,
    Mark,
    PassId,
    PassKind,
    PassCursor,
    PassDone,
}

#[derive(DeriveIden)]
enum Records {
    Table,
    Id,
    ConnectionId,
    Entity,
    Key,
    Data,
    RemoteData,
    ContentHash,
    RemoteCreatedAt,
    RemoteUpdatedAt,
    FirstSeenAt,
    ModifiedAt,
    DeletedAt,
    SeenPass,
}
