//! sea-orm entities: one module per table, plain data, no GraphQL and no logic.

pub mod account;
pub mod api_key;
pub mod connection;
pub mod credit_ledger;
pub mod customer;
pub mod event;
pub mod event_sequence;
pub mod record;
pub mod sync_cursor;
pub mod sync_run;
pub mod webhook_attempt;
pub mod webhook_delivery;
pub mod webhook_dispatch;
pub mod webhook_endpoint;
