//! The unified record store: one row per (connection, entity, remote key) with the unified
//! fields, the remote's raw record and a content hash, so that an unchanged record is never
//! rewritten. Reads are keyset-paginated by id, which is stable while syncs write.

pub mod loader;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryTrait,
    sea_query::{Alias, Expr, ExprTrait, Func, OnConflict, Query},
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

/// The first 16 bytes of SHA-256 of the record's JSON text, in hex.
fn content_hash(remote: &Value) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(remote.to_string().as_bytes());
    let mut hex = String::with_capacity(32);
    for byte in &digest[..16] {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    hex
}

fn is_tombstone(remote: &RemoteRecord) -> bool {
    remote.data.get("deleted").and_then(Value::as_bool) == Some(true)
}

/// Applies one page of remote records. `pass` marks the records a full pass has seen.
///
/// Two statements whatever the page holds: one upsert of the live records (new, changed
/// and, in a full pass, seen) and one update of the tombstones. Neither looks keys up
/// first: the unique index on (connection, entity, key) decides, on every backend and
/// whatever the planner's statistics say.
pub async fn apply_page(
    txn: &impl ConnectionTrait,
    connector: &dyn Connector,
    connection_id: Uuid,
    entity: EntityType,
    page: Vec<RemoteRecord>,
    pass: Option<Uuid>,
) -> AppResult<PageOutcome> {
    let now = write_time();
    let mut outcome = PageOutcome::default();
    let (mut rows, mut gone) = (Vec::new(), Vec::new());
    for remote in last_per_key(page) {
        if is_tombstone(&remote) {
            gone.push(remote.key);
            continue;
        }
        match connector.unify(entity, &remote.data) {
            Ok(unified) => rows.push(new_row(connection_id, entity, remote, unified, now, pass)),
            Err(why) => outcome.skipped.push((remote.key, why)),
        }
    }
    upsert(txn, rows, now, &mut outcome).await?;
    outcome.deleted = mark_deleted(txn, connection_id, entity, gone, now).await?;
    Ok(outcome)
}

/// The page's write time, at the precision every backend stores (microseconds), so that
/// the `modified_at` an upsert returns can be compared with it.
fn write_time() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A remote may list a key twice in a page; the last word counts (and one statement may
/// not touch a row twice).
fn last_per_key(page: Vec<RemoteRecord>) -> Vec<RemoteRecord> {
    let mut position: HashMap<String, usize> = HashMap::with_capacity(page.len());
    for (i, remote) in page.iter().enumerate() {
        position.insert(remote.key.clone(), i);
    }
    if position.len() == page.len() {
        return page;
    }
    page.into_iter()
        .enumerate()
        .filter(|(i, remote)| position.get(&remote.key) == Some(i))
        .map(|(_, remote)| remote)
        .collect()
}

fn new_row(
    connection_id: Uuid,
    entity: EntityType,
    remote: RemoteRecord,
    unified: Value,
    now: DateTime<Utc>,
    pass: Option<Uuid>,
) -> record::ActiveModel {
    record::ActiveModel {
        id: Set(new_id()),
        connection_id: Set(connection_id),
        entity: Set(entity.as_str().to_owned()),
        content_hash: Set(content_hash(&remote.data)),
        key: Set(remote.key),
        data: Set(unified),
        remote_data: Set(Some(remote.data)),
        remote_created_at: Set(remote.created_at),
        remote_updated_at: Set(remote.updated_at),
        first_seen_at: Set(now),
        modified_at: Set(now),
        deleted_at: Set(None),
        seen_pass: Set(pass),
    }
}

/// Inserts new records, rewrites changed ones and marks the unchanged ones a full pass
/// saw, in one statement that returns only (id, key, modified_at): a returned id that is
/// the row's new id was inserted, a returned `modified_at` equal to the page's write time
/// was rewritten, anything else is unchanged.
async fn upsert(
    txn: &impl ConnectionTrait,
    rows: Vec<record::ActiveModel>,
    now: DateTime<Utc>,
    outcome: &mut PageOutcome,
) -> AppResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let total = rows.len() as u64;
    let new_ids: HashSet<Uuid> = rows
        .iter()
        .filter_map(|row| row.id.try_as_ref().copied())
        .collect();
    let mut insert = record::Entity::insert_many(rows).into_query();
    insert
        .on_conflict(on_conflict())
        .returning(Query::returning().columns([
            record::Column::Id,
            record::Column::Key,
            record::Column::ModifiedAt,
        ]));
    for row in txn.query_all(&insert).await? {
        let id: Uuid = row.try_get("", "id")?;
        let key: String = row.try_get("", "key")?;
        if new_ids.contains(&id) {
            outcome.added.push(key);
        } else if row.try_get::<DateTime<Utc>>("", "modified_at")? == now {
            outcome.updated.push(key);
        }
    }
    outcome.unchanged = total - (outcome.added.len() + outcome.updated.len()) as u64;
    Ok(())
}

/// On a stored key: a changed (or previously deleted) record takes the new content; the
/// pass mark moves either way; an unchanged record outside a full pass is left alone.
fn on_conflict() -> OnConflict {
    use record::Column as C;
    let stored = |column: C| Expr::col((record::Entity, column));
    let incoming = |column: C| Expr::col((Alias::new("excluded"), column));
    let changed = || {
        stored(C::ContentHash)
            .ne(incoming(C::ContentHash))
            .or(stored(C::DeletedAt).is_not_null())
    };
    let content = [
        C::Data,
        C::RemoteData,
        C::ContentHash,
        C::RemoteCreatedAt,
        C::RemoteUpdatedAt,
        C::ModifiedAt,
        C::DeletedAt,
    ];
    let mut values: Vec<(C, Expr)> = content
        .into_iter()
        .map(|column| {
            let value = Expr::case(changed(), incoming(column)).finally(stored(column));
            (column, value.into())
        })
        .collect();
    values.push((
        C::SeenPass,
        Expr::expr(Func::coalesce([incoming(C::SeenPass), stored(C::SeenPass)])),
    ));
    OnConflict::columns([C::ConnectionId, C::Entity, C::Key])
        .values(values)
        .action_and_where(changed().or(incoming(C::SeenPass).is_not_null()))
        .to_owned()
}

/// Marks the live records among `keys` deleted, in one statement; the keys it marked.
async fn mark_deleted(
    txn: &impl ConnectionTrait,
    connection_id: Uuid,
    entity: EntityType,
    keys: Vec<String>,
    now: DateTime<Utc>,
) -> AppResult<Vec<String>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    if txn.get_database_backend() == DbBackend::Postgres {
        // A generic plan for a long `key IN (…)` list estimates that it filters nothing and
        // scans every row of the entity (see BENCHMARKS.md, sync_ingest); planned with the
        // actual keys it probes the unique index.
        txn.execute_unprepared("SET LOCAL plan_cache_mode = force_custom_plan")
            .await?;
    }
    let live = live_records(connection_id, entity).filter(record::Column::Key.is_in(keys));
    delete_returning_keys(txn, live, now).await
}

/// The live records of one entity type of one connection.
fn live_records(connection_id: Uuid, entity: EntityType) -> sea_orm::UpdateMany<record::Entity> {
    record::Entity::update_many()
        .filter(record::Column::ConnectionId.eq(connection_id))
        .filter(record::Column::Entity.eq(entity.as_str()))
        .filter(record::Column::DeletedAt.is_null())
}

/// Marks the selected records deleted at `now`; the keys it marked.
async fn delete_returning_keys(
    txn: &impl ConnectionTrait,
    selected: sea_orm::UpdateMany<record::Entity>,
    now: DateTime<Utc>,
) -> AppResult<Vec<String>> {
    let mut update = selected
        .col_expr(record::Column::DeletedAt, Expr::value(now))
        .col_expr(record::Column::ModifiedAt, Expr::value(now))
        .into_query();
    update.returning_col(record::Column::Key);
    let rows = txn.query_all(&update).await?;
    Ok(rows
        .iter()
        .map(|row| row.try_get("", "key"))
        .collect::<Result<_, _>>()?)
}

/// After a full pass: every live record the pass did not see is gone from the remote.
pub async fn delete_unseen(
    txn: &impl ConnectionTrait,
    connection_id: Uuid,
    entity: EntityType,
    pass: Uuid,
) -> AppResult<Vec<String>> {
    let unseen = live_records(connection_id, entity).filter(
        record::Column::SeenPass
            .ne(pass)
            .or(record::Column::SeenPass.is_null()),
    );
    delete_returning_keys(txn, unseen, Utc::now()).await
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
