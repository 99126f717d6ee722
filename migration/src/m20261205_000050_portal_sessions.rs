//! Portal sessions: `portal_sessions`, the short-lived, customer-scoped tokens (`mwp_…`) a
//! vendor's backend mints for a browser. Stored as a SHA-256 hash like every other token.
//! A new table only: nothing to carry forward.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Col::Table)
                    .col(uuid(Col::Id).primary_key())
                    .col(uuid(Col::AccountId))
                    .col(uuid(Col::CustomerId))
                    .col(string(Col::TokenHash).unique_key())
                    .col(string(Col::TokenPrefix))
                    .col(json_null(Col::AllowedSystems))
                    .col(integer(Col::MaxConnections))
                    .col(timestamp_with_time_zone(Col::CreatedAt))
                    .col(timestamp_with_time_zone(Col::ExpiresAt))
                    .col(timestamp_with_time_zone_null(Col::RevokedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Col::Table, Col::AccountId)
                            .to(Accounts::Table, Accounts::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Col::Table, Col::CustomerId)
                            .to(Customers::Table, Customers::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // `portalSessions` pages an account's sessions by id, optionally of one customer.
        manager
            .create_index(
                Index::create()
                    .name("idx_portal_sessions_account_customer")
                    .table(Col::Table)
                    .col(Col::AccountId)
                    .col(Col::CustomerId)
                    .col(Col::Id)
                    .to_owned(),
            )
            .await?;
        // Pruning finds long-expired sessions.
        manager
            .create_index(
                Index::create()
                    .name("idx_portal_sessions_expires")
                    .table(Col::Table)
                    .col(Col::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Col::Table).to_owned())
            .await
    }
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

/// `portal_sessions`.
#[derive(DeriveIden)]
enum Col {
    #[sea_orm(iden = "portal_sessions")]
    Table,
    Id,
    AccountId,
    CustomerId,
    TokenHash,
    TokenPrefix,
    AllowedSystems,
    MaxConnections,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
}
