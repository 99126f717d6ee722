//! Per-request DataLoaders, scoped to the caller's account so that a batch can only ever
//! return the caller's own rows. The loading itself is the domain's (`customers::find_many`,
//! `records::find_by_keys`); the loaders only batch a request's lookups into one each.

use std::collections::HashMap;

use async_graphql::dataloader::{DataLoader, Loader};
use uuid::Uuid;

use crate::{
    customers,
    db::Db,
    error::AppError,
    records::{self, RecordKey},
};
use entity::{customer, record};

pub struct CustomerLoader {
    db: Db,
    account_id: Uuid,
}

impl Loader<Uuid> for CustomerLoader {
    type Value = customer::Model;
    type Error = AppError;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, customer::Model>, AppError> {
        customers::find_many(self.db.conn(), self.account_id, keys).await
    }
}

/// Related records by remote key (`asset.site`, `workOrder.asset`, …): one query per
/// request, however many rows ask. Keys come from records the caller could already read.
pub struct RecordLoader {
    db: Db,
}

impl Loader<RecordKey> for RecordLoader {
    type Value = record::Model;
    type Error = AppError;

    async fn load(
        &self,
        keys: &[RecordKey],
    ) -> Result<HashMap<RecordKey, record::Model>, AppError> {
        records::find_by_keys(self.db.conn(), keys).await
    }
}

pub struct Loaders {
    pub customers: DataLoader<CustomerLoader>,
    pub records: DataLoader<RecordLoader>,
}

impl Loaders {
    /// `window`: how long a loader collects keys before it queries (`graphql_batch_window_ms`):
    /// long enough that every row of a page registers its key first, so a page's relations
    /// cost one query, not one per scheduling hiccup.
    pub fn new(db: &Db, account_id: Uuid, window: std::time::Duration) -> Self {
        let customers = CustomerLoader {
            db: db.clone(),
            account_id,
        };
        Self {
            customers: DataLoader::new(customers, tokio::spawn).delay(window),
            records: DataLoader::new(RecordLoader { db: db.clone() }, tokio::spawn).delay(window),
        }
    }
}
