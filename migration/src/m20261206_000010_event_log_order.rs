//! The event log without one global lock (issue #20). On PostgreSQL an event's position comes
//! from the sequence `event_positions` (no row every writer locks), and each event carries
//! `txid`, the id of the transaction that wrote it; readers go in (`txid`, `position`) order
//! and stop at the oldest transaction still in flight (docs/events.md, "Ordering"). On
//! SQLite, whose single writer already orders commits, positions still come from
//! `event_sequence` and `txid` stays 0.
//!
//! Carried forward: every stored event gets `txid` 0, so it comes before every event written
//! after the upgrade, in its old order; the sequence starts after the last position given;
//! the dispatcher's mark gets `last_txid` 0; `event_sequence` gets the pruning mark
//! (`pruned_txid`, `pruned_position`: the last event retention deleted), set so that a
//! cursor the previous release accepted is still accepted and one it refused still refused.

use sea_orm::DbBackend;
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        manager
            .alter_table(
                Table::alter()
                    .table(Events::Table)
                    .add_column(big_integer(Events::Txid).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(WebhookDispatch::Table)
                    .add_column(big_integer(WebhookDispatch::LastTxid).default(0))
                    .to_owned(),
            )
            .await?;
        for column in [EventSequence::PrunedTxid, EventSequence::PrunedPosition] {
            manager
                .alter_table(
                    Table::alter()
                        .table(EventSequence::Table)
                        .add_column(big_integer(column).default(0))
                        .to_owned(),
                )
                .await?;
        }
        // The previous release took a cursor for pruned when the oldest stored event was
        // more than one past it (or, with no event stored, when it was behind the last
        // position): the same cursors are behind this mark.
        db.execute_unprepared(
            "UPDATE event_sequence SET pruned_position = \
             COALESCE((SELECT MIN(position) - 1 FROM events), last_position) WHERE id = 1",
        )
        .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            // Readers of the whole log and of one account's events, in reading order.
            manager
                .create_index(
                    Index::create()
                        .name("idx_events_txid_position")
                        .table(Events::Table)
                        .col(Events::Txid)
                        .col(Events::Position)
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(
                    Index::create()
                        .name("idx_events_account_txid_position")
                        .table(Events::Table)
                        .col(Events::AccountId)
                        .col(Events::Txid)
                        .col(Events::Position)
                        .to_owned(),
                )
                .await?;
            db.execute_unprepared("CREATE SEQUENCE event_positions AS bigint MINVALUE 1")
                .await?;
            db.execute_unprepared(
                "SELECT setval('event_positions', GREATEST(1, \
                 (SELECT last_position FROM event_sequence WHERE id = 1), \
                 (SELECT COALESCE(MAX(position), 0) FROM events)), \
                 (SELECT last_position FROM event_sequence WHERE id = 1) > 0 \
                 OR EXISTS (SELECT 1 FROM events))",
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if manager.get_database_backend() == DbBackend::Postgres {
            // The previous release takes positions from the counter row again: after the
            // last one given.
            db.execute_unprepared(
                "UPDATE event_sequence SET last_position = GREATEST(last_position, \
                 (SELECT COALESCE(MAX(position), 0) FROM events), \
                 (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM event_positions)) \
                 WHERE id = 1",
            )
            .await?;
            db.execute_unprepared("DROP SEQUENCE event_positions")
                .await?;
            for index in [
                "idx_events_txid_position",
                "idx_events_account_txid_position",
            ] {
                manager
                    .drop_index(Index::drop().name(index).table(Events::Table).to_owned())
                    .await?;
            }
        }
        for column in [EventSequence::PrunedTxid, EventSequence::PrunedPosition] {
            manager
                .alter_table(
                    Table::alter()
                        .table(EventSequence::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(WebhookDispatch::Table)
                    .drop_column(WebhookDispatch::LastTxid)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Events::Table)
                    .drop_column(Events::Txid)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Txid,
    Position,
    AccountId,
}

#[derive(DeriveIden)]
enum WebhookDispatch {
    Table,
    LastTxid,
}

#[derive(DeriveIden)]
enum EventSequence {
    Table,
    PrunedTxid,
    PrunedPosition,
}
