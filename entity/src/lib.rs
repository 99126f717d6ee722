//! sea-orm entities: one module per table, plain data, no GraphQL and no logic.

pub mod account;
pub mod api_key;
pub mod bulk_operation;
pub mod bulk_record;
pub mod connection;
pub mod credit_ledger;
pub mod customer;
pub mod demo_remote;
pub mod demo_remote_record;
pub mod demo_remote_write;
pub mod enums;
pub mod event;
pub mod event_sequence;
pub mod flow;
pub mod portal_session;
pub mod record;
pub mod sync_cursor;
pub mod sync_run;
pub mod webhook_attempt;
pub mod webhook_delivery;
pub mod webhook_dispatch;
pub mod webhook_endpoint;
pub mod webhook_worker;

#[cfg(test)]
mod tests {
    use sea_orm::{DbBackend, EntityTrait, QueryTrait};

    #[test]
    fn relations_join_on_their_keys() {
        let sql = super::customer::Entity::find()
            .find_with_related(super::connection::Entity)
            .build(DbBackend::Postgres)
            .to_string();
        assert!(
            sql.contains(
                r#"LEFT JOIN "connections" ON "customers"."id" = "connections"."customer_id""#
            ),
            "{sql}"
        );
        let sql = super::webhook_delivery::Entity::find()
            .find_also_related(super::event::Entity)
            .build(DbBackend::Postgres)
            .to_string();
        assert!(
            sql.contains(r#""webhook_deliveries"."event_position" = "events"."position""#),
            "{sql}"
        );
    }
}
