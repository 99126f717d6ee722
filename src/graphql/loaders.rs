//! Per-request DataLoaders, scoped to the caller's account so that a batch can only ever
//! return the caller's own rows.

use std::collections::HashMap;

use async_graphql::dataloader::{DataLoader, Loader};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::{db::Db, error::AppError, records::loader::RecordLoader};
use entity::customer;

pub struct CustomerLoader {
    db: Db,
    account_id: Uuid,
}

impl Loader<Uuid> for CustomerLoader {
    type Value = customer::Model;
    type Error = AppError;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, customer::Model>, AppError> {
        let rows = customer::Entity::find()
            .filter(customer::Column::AccountId.eq(self.account_id))
            .filter(customer::Column::Id.is_in(keys.iter().copied()))
            .all(self.db.conn())
            .await?;
        Ok(rows.into_iter().map(|c| (c.id, c)).collect())
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
