//! The unified record store: one row per (connection, entity, remote key) with the unified
//! fields, the remote's raw record and a content hash, so that an unchanged record is never
//! rewritten. Reads are keyset-paginated by id, which is stable while syncs write.

pub mod loader;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    sea_query::{Expr, ExprTrait},
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    catalog::EntityType,
    connectors::{Connector, RemoteRecord},
    error::AppResult,
    ids::new_id,
    pagination::{Page, PageRequest, fetch_page},
};
use entity::record;

/// What one page did to the store.
#[derive(Debug, Default)]
pub struct PageOutcome {
    pub added: Vec<String>,
    pub updated: Vec<String>,
    pub deleted: Vec<String>,
    pub unchanged: u64,
    /// Malformed remote records: (key, why).
    pub skipped: Vec<(String, String)>,
}

fn content_hash(remote: &Value) -> String {
    let digest = Sha256::digest(remote.to_string().as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn is_tombstone(remote: &RemoteRecord) -> bool {
    remote.data.get("deleted").and_then(Value::as_bool) == Some(true)
}

/// Applies one page of remote records. `pass` marks the records a full pass has seen.
pub async fn apply_page(
    txn: &impl ConnectionTrait,
    connector: &dyn Connector,
    connection_id: Uuid,
    entity: EntityType,
    page: Vec<RemoteRecord>,
    pass: Option<Uuid>,
) -> AppResult<PageOutcome> {
    let keys: Vec<&str> = page.iter().map(|r| r.key.as_str()).collect();
    let existing: HashMap<String, record::Model> = record::Entity::find()
        .filter(record::Column::ConnectionId.eq(connection_id))
        .filter(record::Column::Entity.eq(entity.as_str()))
        .filter(record::Column::Key.is_in(keys))
        .all(txn)
        .await?
        .into_iter()
        .map(|r| (r.key.clone(), r))
        .collect();
    let now = Utc::now();
    let mut outcome = PageOutcome::default();
    let (mut inserts, mut touched) = (Vec::new(), Vec::new());
    for remote in page {
        let current = existing.get(&remote.key);
        if is_tombstone(&remote) {
            if let Some(row) = current.filter(|r| r.deleted_at.is_none()) {
                mark_deleted(txn, row.id, now).await?;
                outcome.deleted.push(remote.key);
            }
            continue;
        }
        let hash = content_hash(&remote.data);
        if let Some(row) = current.filter(|r| r.deleted_at.is_none() && r.content_hash == hash) {
            touched.push(row.id);
            outcome.unchanged += 1;
            continue;
        }
        let unified = match connector.unify(entity, &remote.data) {
            Ok(unified) => unified,
            Err(why) => {
                outcome.skipped.push((remote.key, why));
                continue;
            }
        };
        let fields = Fields {
            unified,
            hash,
            created: remote.created_at,
            updated: remote.updated_at,
            now,
            pass,
        };
        match current {
            Some(row) => {
                rewrite(txn, row.id, fields, remote.data).await?;
                outcome.updated.push(remote.key);
            }
            None => {
                outcome.added.push(remote.key.clone());
                inserts.push(new_row(
                    connection_id,
                    entity,
                    remote.key,
                    remote.data,
                    fields,
                ));
            }
        }
    }
    if !inserts.is_empty() {
        record::Entity::insert_many(inserts).exec(txn).await?;
    }
    if let (Some(pass), false) = (pass, touched.is_empty()) {
        // Seen by this pass, content untouched: the mark that deletion detection reads.
        record::Entity::update_many()
            .col_expr(record::Column::SeenPass, Expr::value(pass))
            .filter(record::Column::Id.is_in(touched))
            .exec(txn)
            .await?;
    }
    Ok(outcome)
}

struct Fields {
    unified: Value,
    hash: String,
    created: Option<DateTime<Utc>>,
    updated: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    pass: Option<Uuid>,
}

fn new_row(
    connection_id: Uuid,
    entity: EntityType,
    key: String,
    remote: Value,
    f: Fields,
) -> record::ActiveModel {
    record::ActiveModel {
        id: Set(new_id()),
        connection_id: Set(connection_id),
        entity: Set(entity.as_str().to_owned()),
        key: Set(key),
        data: Set(f.unified),
        remote_data: Set(Some(remote)),
        content_hash: Set(f.hash),
        remote_created_at: Set(f.created),
        remote_updated_at: Set(f.updated),
        first_seen_at: Set(f.now),
        modified_at: Set(f.now),
        deleted_at: Set(None),
        seen_pass: Set(f.pass),
    }
}

async fn rewrite(txn: &impl ConnectionTrait, id: Uuid, f: Fields, remote: Value) -> AppResult<()> {
    let row = record::ActiveModel {
        id: Set(id),
        data: Set(f.unified),
        remote_data: Set(Some(remote)),
        content_hash: Set(f.hash),
        remote_created_at: Set(f.created),
        remote_updated_at: Set(f.updated),
        modified_at: Set(f.now),
        deleted_at: Set(None),
        seen_pass: Set(f.pass),
        ..Default::default()
    };
    record::Entity::update(row).exec(txn).await?;
    Ok(())
}

async fn mark_deleted(txn: &impl ConnectionTrait, id: Uuid, now: DateTime<Utc>) -> AppResult<()> {
    record::Entity::update_many()
        .col_expr(record::Column::DeletedAt, Expr::value(now))
        .col_expr(record::Column::ModifiedAt, Expr::value(now))
        .filter(record::Column::Id.eq(id))
        .exec(txn)
        .await?;
    Ok(())
}

/// After a full pass: every live record the pass did not see is gone from the remote.
pub async fn delete_unseen(
    txn: &impl ConnectionTrait,
    connection_id: Uuid,
    entity: EntityType,
    pass: Uuid,
) -> AppResult<Vec<String>> {
    let now = Utc::now();
    let gone = record::Entity::update_many()
        .col_expr(record::Column::DeletedAt, Expr::value(now))
        .col_expr(record::Column::ModifiedAt, Expr::value(now))
        .filter(record::Column::ConnectionId.eq(connection_id))
        .filter(record::Column::Entity.eq(entity.as_str()))
        .filter(record::Column::DeletedAt.is_null())
        .filter(
            record::Column::SeenPass
                .ne(pass)
                .or(record::Column::SeenPass.is_null()),
        )
        .exec_with_returning(txn)
        .await?;
    Ok(gone.into_iter().map(|r| r.key).collect())
}

#[derive(Clone, Debug)]
pub struct RecordFilter {
    pub connection_id: Uuid,
    pub entity: EntityType,
    pub modified_after: Option<DateTime<Utc>>,
    pub include_deleted: bool,
}

pub async fn list(
    db: &impl ConnectionTrait,
    filter: &RecordFilter,
    page: PageRequest,
) -> AppResult<Page<record::Model>> {
    let mut select = record::Entity::find()
        .filter(record::Column::ConnectionId.eq(filter.connection_id))
        .filter(record::Column::Entity.eq(filter.entity.as_str()));
    if let Some(after) = filter.modified_after {
        select = select.filter(record::Column::ModifiedAt.gt(after));
    }
    if !filter.include_deleted {
        select = select.filter(record::Column::DeletedAt.is_null());
    }
    Ok(fetch_page(db, select, record::Column::Id, page).await?)
}
