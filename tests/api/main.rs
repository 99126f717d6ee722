//! Integration tests: each starts the real server on port 0 against a fresh database
//! (SQLite by default, PostgreSQL when `MILLWRIGHT_TEST_POSTGRES_URL` is set) and talks to it
//! over HTTP and WebSocket as a client would.

mod attacks;
mod auth;
mod browser_ui;
mod bulk;
mod cli;
mod connections;
mod connectors;
mod cost;
mod customers;
mod demo;
mod docs;
mod edge;
mod events;
mod flows;
mod graphiql;
mod harness;
mod hygiene;
mod keys;
mod limits;
mod maintainx_writes;
mod operability;
mod portal;
mod properties;
mod retention;
mod schema;
mod sync;
mod sync_faults;
mod ui;
mod webhooks;
mod websocket;
mod websocket_limits;
