//! Customers as GraphQL types, and the Relay connection wrapper shared by lists.

use async_graphql::{
    ID, InputObject, MaybeUndefined, Object, OutputType,
    connection::{Connection, Edge},
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    ids,
    pagination::{Page, encode_cursor},
};
use entity::customer;

pub struct Customer(pub customer::Model);

#[Object]
impl Customer {
    pub async fn id(&self) -> ID {
        ID(ids::encode(ids::Kind::Customer, self.0.id))
    }
    /// Your own identifier for this customer, unique within the account.
    async fn external_id(&self) -> Option<&str> {
        self.0.external_id.as_deref()
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

#[derive(InputObject)]
pub struct CreateCustomerInput {
    pub name: String,
    pub external_id: Option<String>,
}

#[derive(InputObject)]
pub struct UpdateCustomerInput {
    pub id: ID,
    pub name: Option<String>,
    /// `null` clears it; leaving it out keeps it.
    pub external_id: MaybeUndefined<String>,
}

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
