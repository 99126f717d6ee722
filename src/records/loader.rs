//! Batch loading of related records by remote key (`asset.site`, `workOrder.asset`, …):
//! one query per entity type and request, however many rows ask.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::{catalog::EntityType, db::Db, error::AppError};
use entity::record;

/// (connection, entity, remote key).
pub type RecordKey = (Uuid, EntityType, String);

pub struct RecordLoader {
    pub db: Db,
}

impl Loader<RecordKey> for RecordLoader {
    type Value = record::Model;
    type Error = AppError;

    async fn load(
        &self,
        keys: &[RecordKey],
    ) -> Result<HashMap<RecordKey, record::Model>, AppError> {
        let mut groups: HashMap<(Uuid, EntityType), Vec<String>> = HashMap::new();
        for (connection, entity, key) in keys {
            groups
                .entry((*connection, *entity))
                .or_default()
                .push(key.clone());
        }
        let mut condition = Condition::any();
        for ((connection, entity), keys) in groups {
            condition = condition.add(
                Condition::all()
                    .add(record::Column::ConnectionId.eq(connection))
                    .add(record::Column::Entity.eq(entity))
                    .add(record::Column::Key.is_in(keys)),
            );
        }
        let rows = record::Entity::find()
            .filter(condition)
            .filter(record::Column::DeletedAt.is_null())
            .all(self.db.conn())
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| ((r.connection_id, r.entity, r.key.clone()), r))
            .collect())
    }
}
