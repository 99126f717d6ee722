//! Connections, the credit ledger, and the event log with its position counter.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_table(connections()).await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_connections_account")
                    .table(Connections::Table)
                    .col(Connections::AccountId)
                    .col(Connections::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_connections_customer")
                    .table(Connections::Table)
                    .col(Connections::CustomerId)
                    .col(Connections::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_connections_next_check")
                    .table(Connections::Table)
                    .col(Connections::NextCheckAt)
                    .to_owned(),
            )
            .await?;
        manager.create_table(credit_ledger()).await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_credit_ledger_account")
                    .table(CreditLedger::Table)
                    .col(CreditLedger::AccountId)
                    .col(CreditLedger::Id)
                    .to_owned(),
            )
            .await?;
        manager.create_table(events()).await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_events_account_position")
                    .table(Events::Table)
                    .col(Events::AccountId)
                    .col(Events::Position)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(EventSequence::Table)
                    .col(integer(EventSequence::Id).primary_key())
                    .col(big_integer(EventSequence::LastPosition))
                    .to_owned(),
            )
            .await?;
        let seed = Query::insert()
            .into_table(EventSequence::Table)
            .columns([EventSequence::Id, EventSequence::LastPosition])
            .values_panic([1.into(), 0.into()])
            .to_owned();
        manager.exec_stmt(seed).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            EventSequence::Table.into_iden(),
            Events::Table.into_iden(),
            CreditLedger::Table.into_iden(),
            Connections::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

fn connections() -> TableCreateStatement {
    Table::create()
        .table(Connections::Table)
        .col(uuid(Connections::Id).primary_key())
        .col(uuid(Connections::AccountId))
        .col(uuid(Connections::CustomerId))
        .col(string(Connections::SystemKey))
        .col(string(Connections::Deployment))
        .col(string_null(Connections::Label))
        .col(string(Connections::Status))
        .col(string_null(Connections::StatusReason))
        .col(integer(Connections::CreditCost))
        .col(timestamp_with_time_zone(Connections::CreatedAt))
        .col(timestamp_with_time_zone(Connections::UpdatedAt))
        .col(timestamp_with_time_zone_null(Connections::DisconnectedAt))
        .col(timestamp_with_time_zone_null(Connections::LastCheckedAt))
        .col(timestamp_with_time_zone_null(Connections::NextCheckAt))
        .col(string_null(Connections::TokenHash).unique_key())
        .col(string(Connections::TokenPrefix))
        .col(integer_null(Connections::SyncIntervalMinutes))
        .col(json(Connections::WebhookEventTypes))
        .col(json_null(Connections::Metadata))
        .col(blob_null(Connections::Credentials))
        .foreign_key(
            ForeignKey::create()
                .from(Connections::Table, Connections::AccountId)
                .to(Accounts::Table, Accounts::Id)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .foreign_key(
            ForeignKey::create()
                .from(Connections::Table, Connections::CustomerId)
                .to(Customers::Table, Customers::Id)
                .on_delete(ForeignKeyAction::Restrict),
        )
        .to_owned()
}

fn credit_ledger() -> TableCreateStatement {
    Table::create()
        .table(CreditLedger::Table)
        .col(uuid(CreditLedger::Id).primary_key())
        .col(uuid(CreditLedger::AccountId))
        .col(string(CreditLedger::Kind))
        .col(big_integer(CreditLedger::Amount))
        .col(big_integer(CreditLedger::BalanceAfter))
        .col(uuid_null(CreditLedger::ConnectionId))
        .col(string_null(CreditLedger::Note))
        .col(timestamp_with_time_zone(CreditLedger::CreatedAt))
        .foreign_key(
            ForeignKey::create()
                .from(CreditLedger::Table, CreditLedger::AccountId)
                .to(Accounts::Table, Accounts::Id)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .to_owned()
}

fn events() -> TableCreateStatement {
    Table::create()
        .table(Events::Table)
        .col(big_integer(Events::Position).primary_key())
        .col(uuid_uniq(Events::Id))
        .col(uuid(Events::AccountId))
        .col(uuid_null(Events::CustomerId))
        .col(uuid_null(Events::ConnectionId))
        .col(string(Events::EventType))
        .col(json(Events::Data))
        .col(timestamp_with_time_zone(Events::OccurredAt))
        .to_owned()
}

#[derive(DeriveIden)]
enum Accounts {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Customers {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Connections {
    Table,
    Id,
    AccountId,
    CustomerId,
    SystemKey,
    Deployment,
    Label,
    Status,
    StatusReason,
    CreditCost,
    CreatedAt,
    UpdatedAt,
    DisconnectedAt,
    LastCheckedAt,
    NextCheckAt,
    TokenHash,
    TokenPrefix,
    SyncIntervalMinutes,
    WebhookEventTypes,
    Metadata,
    Credentials,
}

#[derive(DeriveIden)]
enum CreditLedger {
    Table,
    Id,
    AccountId,
    Kind,
    Amount,
    BalanceAfter,
    ConnectionId,
    Note,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Position,
    Id,
    AccountId,
    CustomerId,
    ConnectionId,
    EventType,
    Data,
    OccurredAt,
}

#[derive(DeriveIden)]
enum EventSequence {
    Table,
    Id,
    LastPosition,
}
