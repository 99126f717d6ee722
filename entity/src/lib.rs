//! sea-orm entities: one module per table, plain data, no GraphQL and no logic.

pub mod account;
pub mod api_key;
pub mod customer;
