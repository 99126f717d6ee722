//! The demo system's simulated remote, per connection, in the database rather than in one
//! process's memory: its counters (sync sessions begun, requests answered, writes taken) and
//! the records written to it. Earlier releases kept this in memory only, so there is nothing
//! to carry forward: every existing connection starts with no row and reads as it did after
//! a restart.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_table(demo_remotes()).await?;
        manager.create_table(demo_remote_records()).await?;
        // A page of generated records looks up the written ones among its positions; a
        // read of created records walks them in position order.
        manager
            .create_index(
                Index::create()
                    .name("idx_demo_remote_records_position")
                    .table(DemoRemoteRecords::Table)
                    .col(DemoRemoteRecords::ConnectionId)
                    .col(DemoRemoteRecords::Entity)
                    .col(DemoRemoteRecords::Created)
                    .col(DemoRemoteRecords::Position)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            DemoRemoteRecords::Table.into_iden(),
            DemoRemotes::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

fn demo_remotes() -> TableCreateStatement {
    Table::create()
        .table(DemoRemotes::Table)
        .col(uuid(DemoRemotes::ConnectionId).primary_key())
        .col(big_integer(DemoRemotes::Sessions).default(0))
        .col(big_integer(DemoRemotes::Requests).default(0))
        .col(big_integer(DemoRemotes::Writes).default(0))
        .foreign_key(
            ForeignKey::create()
                .from(DemoRemotes::Table, DemoRemotes::ConnectionId)
                .to(Connections::Table, Connections::Id)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .to_owned()
}

fn demo_remote_records() -> TableCreateStatement {
    Table::create()
        .table(DemoRemoteRecords::Table)
        .col(uuid(DemoRemoteRecords::ConnectionId))
        .col(string(DemoRemoteRecords::Entity))
        .col(string(DemoRemoteRecords::Key))
        .col(boolean(DemoRemoteRecords::Created))
        .col(big_integer_null(DemoRemoteRecords::Position))
        .col(json_null(DemoRemoteRecords::Data))
        .col(big_integer(DemoRemoteRecords::WriteSequence))
        .primary_key(
            Index::create()
                .col(DemoRemoteRecords::ConnectionId)
                .col(DemoRemoteRecords::Entity)
                .col(DemoRemoteRecords::Key),
        )
        .foreign_key(
            ForeignKey::create()
                .from(DemoRemoteRecords::Table, DemoRemoteRecords::ConnectionId)
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
enum DemoRemotes {
    Table,
    ConnectionId,
    Sessions,
    Requests,
    Writes,
}

#[derive(DeriveIden)]
enum DemoRemoteRecords {
    Table,
    ConnectionId,
    Entity,
    Key,
    Created,
    Position,
    Data,
    WriteSequence,
}
