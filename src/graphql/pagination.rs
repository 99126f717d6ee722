//! Lists as Relay connections: a keyset page of the domain (`crate::pagination`) becomes a
//! `…Connection` with one edge per row, each row's id its opaque cursor.

use async_graphql::{
    OutputType,
    connection::{Connection, Edge},
};
use uuid::Uuid;

use crate::pagination::{Page, encode_cursor};

/// Wraps a keyset page as a Relay connection, with each row's id as its cursor.
pub fn relay<M, N: OutputType>(
    page: Page<M>,
    id_of: impl Fn(&M) -> Uuid,
    wrap: impl Fn(M) -> N,
) -> Connection<String, N> {
    let mut connection = Connection::new(page.has_previous, page.has_next);
    connection.edges = page
        .items
        .into_iter()
        .map(|item| Edge::new(encode_cursor(id_of(&item)), wrap(item)))
        .collect();
    connection
}
