//! Bulk writes: `bulk_operations` (a durable job per operation, claimed with a lease like a
//! sync run), `bulk_records` (each record of an operation with its outcome) and
//! `demo_remote_writes` (the idempotency keys the demo system's remote has seen, so that a
//! batch sent again after a crash writes nothing twice). New tables only: nothing to carry
//! forward.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_table(bulk_operations()).await?;
        manager.create_table(bulk_records()).await?;
        manager.create_table(demo_remote_writes()).await?;
        let indexes = [
            // Workers claim queued and expired operations in `run_after` order.
            index(
                "idx_bulk_operations_claim",
                &[Col::Status, Col::RunAfter],
                false,
            ),
            // `bulkOperations` pages an account's operations by id.
            index(
                "idx_bulk_operations_account",
                &[Col::AccountId, Col::Id],
                false,
            ),
            index(
                "idx_bulk_operations_connection",
                &[Col::ConnectionId, Col::Id],
                false,
            ),
            // Same key + same account = the same operation (NULL keys are all distinct).
            index(
                "idx_bulk_operations_idempotency",
                &[Col::AccountId, Col::IdempotencyKey],
                true,
            ),
        ];
        for index in indexes {
            manager.create_index(index).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            DemoRemoteWrites::Table.into_iden(),
            BulkRecords::Table.into_iden(),
            Col::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

fn index(name: &str, columns: &[Col], unique: bool) -> IndexCreateStatement {
    let mut index = Index::create();
    index.name(name).table(Col::Table);
    for column in columns {
        index.col(column.clone());
    }
    if unique {
        index.unique();
    }
    index.to_owned()
}

fn bulk_operations() -> TableCreateStatement {
    Table::create()
        .table(Col::Table)
        .col(uuid(Col::Id).primary_key())
        .col(uuid(Col::AccountId))
        .col(uuid(Col::ConnectionId))
        .col(string(Col::Entity))
        .col(string(Col::Operation))
        .col(string(Col::Status))
        .col(integer(Col::Total))
        .col(integer(Col::Processed).default(0))
        .col(integer(Col::Succeeded).default(0))
        .col(integer(Col::Failed).default(0))
        .col(integer(Col::BatchSize))
        .col(integer(Col::DelayBetweenBatchesMs))
        .col(string_null(Col::IdempotencyKey))
        .col(string(Col::RequestHash))
        .col(timestamp_with_time_zone(Col::CreatedAt))
        .col(timestamp_with_time_zone_null(Col::StartedAt))
        .col(timestamp_with_time_zone_null(Col::FinishedAt))
        .col(timestamp_with_time_zone(Col::RunAfter))
        .col(string_null(Col::LockedBy))
        .col(timestamp_with_time_zone_null(Col::LockedUntil))
        .col(integer(Col::Attempts).default(0))
        .col(boolean(Col::CancelRequested).default(false))
        .col(timestamp_with_time_zone_null(Col::SendingSince))
        .col(big_integer(Col::RateLimited).default(0))
        .col(string_null(Col::ErrorMessage))
        .foreign_key(
            ForeignKey::create()
                .from(Col::Table, Col::AccountId)
                .to(Accounts::Table, Accounts::Id)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .foreign_key(
            ForeignKey::create()
                .from(Col::Table, Col::ConnectionId)
                .to(Connections::Table, Connections::Id)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .to_owned()
}

fn bulk_records() -> TableCreateStatement {
    Table::create()
        .table(BulkRecords::Table)
        .col(uuid(BulkRecords::OperationId))
        .col(integer(BulkRecords::Position))
        .col(json(BulkRecords::Data))
        .col(boolean_null(BulkRecords::Succeeded))
        .col(string_null(BulkRecords::RemoteKey))
        .col(text_null(BulkRecords::Error))
        .primary_key(
            Index::create()
                .col(BulkRecords::OperationId)
                .col(BulkRecords::Position),
        )
        .foreign_key(
            ForeignKey::create()
                .from(BulkRecords::Table, BulkRecords::OperationId)
                .to(Col::Table, Col::Id)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .to_owned()
}

fn demo_remote_writes() -> TableCreateStatement {
    Table::create()
        .table(DemoRemoteWrites::Table)
        .col(uuid(DemoRemoteWrites::ConnectionId))
        .col(string(DemoRemoteWrites::IdempotencyKey))
        .col(string(DemoRemoteWrites::Key))
        .primary_key(
            Index::create()
                .col(DemoRemoteWrites::ConnectionId)
                .col(DemoRemoteWrites::IdempotencyKey),
        )
        .foreign_key(
            ForeignKey::create()
                .from(DemoRemoteWrites::Table, DemoRemoteWrites::ConnectionId)
                .to(Connections::Table, Connections::Id)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .to_owned()
}

#[derive(DeriveIden)]
enum Accounts {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Connections {
    Table,
    Id,
}

/// `bulk_operations`.
#[derive(DeriveIden, Clone)]
enum Col {
    #[sea_orm(iden = "bulk_operations")]
    Table,
    Id,
    AccountId,
    ConnectionId,
    Entity,
    Operation,
    Status,
    Total,
    Processed,
    Succeeded,
    Failed,
    BatchSize,
    DelayBetweenBatchesMs,
    IdempotencyKey,
    RequestHash,
    CreatedAt,
    StartedAt,
    FinishedAt,
    RunAfter,
    LockedBy,
    LockedUntil,
    Attempts,
    CancelRequested,
    SendingSince,
    RateLimited,
    ErrorMessage,
}

#[derive(DeriveIden)]
enum BulkRecords {
    Table,
    OperationId,
    Position,
    Data,
    Succeeded,
    RemoteKey,
    Error,
}

#[derive(DeriveIden)]
enum DemoRemoteWrites {
    Table,
    ConnectionId,
    IdempotencyKey,
    Key,
}
