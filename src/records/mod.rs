//! The unified record store: one row per (connection, entity, remote key) with the unified
//! fields, the remote's raw record and a content hash, so that an unchanged record is never
//! rewritten. Reads are keyset-paginated by id, which is stable while syncs write.

mod copy;
pub mod unified;

use sea_orm::ActiveEnum as _;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryTrait,
    sea_query::{Expr, ExprTrait},
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    catalog::EntityType,
    connections::{self, Scope},
    connectors::{Connector, RemoteRecord},
    db::TxnConn,
    error::{AppError, AppResult},
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

/// What a pass (or a bulk write's batch) changed, for its `records.changed` event.
#[derive(Default)]
pub struct Changed {
    pub added: ChangedKeys,
    pub updated: ChangedKeys,
    pub deleted: ChangedKeys,
}

impl Changed {
    pub fn is_empty(&self) -> bool {
        self.added.count + self.updated.count + self.deleted.count == 0
    }

    /// Adds what a page did to the store.
    pub fn add(&mut self, outcome: PageOutcome) {
        self.added.add(outcome.added);
        self.updated.add(outcome.updated);
        self.deleted.add(outcome.deleted);
    }

    /// The `records.changed` event's data.
    pub fn event_data(&self, entity: EntityType) -> Value {
        serde_json::json!({
            "entity": entity.to_value(),
            "added": self.added.first, "added_count": self.added.count,
            "updated": self.updated.first, "updated_count": self.updated.count,
            "deleted": self.deleted.first, "deleted_count": self.deleted.count,
        })
    }
}

/// The first 100 keys of one kind of change, and how many there were in all.
#[derive(Default)]
pub struct ChangedKeys {
    first: Vec<String>,
    count: usize,
}

impl ChangedKeys {
    pub fn add(&mut self, keys: Vec<String>) {
        self.count += keys.len();
        let room = 100usize.saturating_sub(self.first.len());
        self.first.extend(keys.into_iter().take(room));
    }
}

/// A record a bulk write changed at the remote: its key and the unified fields it was
/// written with (`None`: deleted).
pub struct Written {
    pub key: String,
    pub fields: Option<serde_json::Map<String, Value>>,
}

/// Makes the records a bulk write changed ready to store, so that they show before the next
/// sync: created ones with the fields written, updated ones with the written fields over
/// the stored ones, deleted ones as tombstones. Their remote record is the one stored before
/// (none for a created record), and their content hash is of the written fields, so the next
/// sync that reads them stores the remote's own version.
pub fn prepare_written(
    existing: &HashMap<String, record::Model>,
    written: Vec<Written>,
) -> PreparedPage {
    let mut prepared = PreparedPage::default();
    for Written { key, fields } in written {
        let Some(fields) = fields else {
            prepared.gone.push(key);
            continue;
        };
        let before = existing.get(&key);
        let mut data = before
            .and_then(|r| r.data.as_object().cloned())
            .unwrap_or_default();
        data.extend(fields.into_iter().filter(|(name, _)| name != "key"));
        let data = Value::Object(data).to_string();
        prepared.rows.push(PreparedRow {
            id: new_id(),
            hash: content_hash(&format!("written:{data}")),
            key,
            data,
            remote: before
                .and_then(|r| r.remote_data.as_ref())
                .map_or_else(|| "null".to_owned(), Value::to_string),
            remote_created_at: before.and_then(|r| r.remote_created_at),
            remote_updated_at: before.and_then(|r| r.remote_updated_at),
        });
    }
    prepared
}

/// The first 16 bytes of SHA-256 of the record's JSON text, in hex.
fn content_hash(remote_text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(remote_text.as_bytes());
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

/// A page of remote records made ready to store: unified, serialized and hashed, with the
/// tombstones and the malformed records set apart. Preparing needs no database, so a sync
/// prepares the next page while the previous one is being written.
#[derive(Debug, Default)]
pub struct PreparedPage {
    rows: Vec<PreparedRow>,
    gone: Vec<String>,
    skipped: Vec<(String, String)>,
    /// The live records' unified fields by key, when they were kept.
    unified: Option<HashMap<String, Value>>,
}

#[derive(Debug)]
struct PreparedRow {
    id: Uuid,
    key: String,
    /// The unified fields, as JSON text.
    data: String,
    /// The remote's record, as JSON text (what the content hash is taken of).
    remote: String,
    hash: String,
    remote_created_at: Option<DateTime<Utc>>,
    remote_updated_at: Option<DateTime<Utc>>,
}

impl PreparedPage {
    /// The unified fields of the page's live records, by key (what the flows of a page see
    /// of each record): those [`prepare_page_keeping`] kept, or read back from the text made
    /// for the store.
    pub fn take_unified(&mut self) -> HashMap<String, Value> {
        if let Some(kept) = self.unified.take() {
            return kept;
        }
        self.rows
            .iter()
            .map(|row| {
                let data = serde_json::from_str(&row.data).unwrap_or(Value::Null);
                (row.key.clone(), data)
            })
            .collect()
    }

    /// The keys of the page: its live records and its tombstones.
    pub fn keys(&self) -> Vec<String> {
        self.rows
            .iter()
            .map(|row| row.key.clone())
            .chain(self.gone.iter().cloned())
            .collect()
    }
}

/// Whether the connection has any record of `entity`, live or deleted.
pub async fn any_stored(
    db: &impl ConnectionTrait,
    connection_id: Uuid,
    entity: EntityType,
) -> AppResult<bool> {
    use sea_orm::QuerySelect;
    let found: Option<Uuid> = record::Entity::find()
        .select_only()
        .column(record::Column::Id)
        .filter(record::Column::ConnectionId.eq(connection_id))
        .filter(record::Column::Entity.eq(entity))
        .limit(1)
        .into_tuple()
        .one(db)
        .await?;
    Ok(found.is_some())
}

/// A stored record's unified fields and whether it is deleted.
pub struct Stored {
    pub data: Value,
    pub deleted: bool,
}

/// The stored records among `keys` (live or deleted), by key: what a page's flows compare
/// the new version with.
pub async fn stored(
    txn: &impl ConnectionTrait,
    connection_id: Uuid,
    entity: EntityType,
    keys: &[String],
) -> AppResult<HashMap<String, Stored>> {
    use sea_orm::QuerySelect;
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    if txn.get_database_backend() == DbBackend::Postgres {
        // A generic plan for a page-long `key IN (…)` scans the entity (see `mark_deleted`).
        txn.execute_unprepared("SET LOCAL plan_cache_mode = force_custom_plan")
            .await?;
    }
    let mut found = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let rows: Vec<(String, Value, Option<DateTime<Utc>>)> = record::Entity::find()
            .select_only()
            .column(record::Column::Key)
            .column(record::Column::Data)
            .column(record::Column::DeletedAt)
            .filter(record::Column::ConnectionId.eq(connection_id))
            .filter(record::Column::Entity.eq(entity))
            .filter(record::Column::Key.is_in(chunk.iter().cloned()))
            .into_tuple()
            .all(txn)
            .await?;
        for (key, data, deleted_at) in rows {
            let deleted = deleted_at.is_some();
            found.insert(key, Stored { data, deleted });
        }
    }
    Ok(found)
}

/// The live records of `entity` on a connection whose unified text field `field` holds one
/// of `values` (the work orders of some assets, say), at most `limit`: (key, unified fields).
/// `field` must be a unified field name.
pub async fn related(
    txn: &impl ConnectionTrait,
    connection_id: Uuid,
    entity: EntityType,
    field: &str,
    values: &[String],
    limit: u64,
) -> AppResult<Vec<(String, Value)>> {
    use sea_orm::QuerySelect;
    if !field.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(AppError::internal(anyhow::anyhow!(
            "not a unified field name: {field:?}"
        )));
    }
    let extract = match txn.get_database_backend() {
        DbBackend::Postgres => format!("(data->>'{field}')"),
        _ => format!("json_extract(data, '$.{field}')"),
    };
    let mut found = Vec::new();
    for chunk in values.chunks(ROWS_PER_STATEMENT) {
        let rows: Vec<(String, Value)> = record::Entity::find()
            .select_only()
            .column(record::Column::Key)
            .column(record::Column::Data)
            .filter(record::Column::ConnectionId.eq(connection_id))
            .filter(record::Column::Entity.eq(entity))
            .filter(record::Column::DeletedAt.is_null())
            .filter(Expr::cust(extract.clone()).is_in(chunk.iter().cloned()))
            .limit(limit.saturating_sub(found.len() as u64))
            .into_tuple()
            .all(txn)
            .await?;
        found.extend(rows);
        if found.len() as u64 >= limit {
            break;
        }
    }
    Ok(found)
}

/// Unifies, serializes and hashes one page of remote records.
pub fn prepare_page(
    connector: &dyn Connector,
    entity: EntityType,
    page: Vec<RemoteRecord>,
) -> PreparedPage {
    prepare(connector, entity, page, false)
}

/// [`prepare_page`], keeping each record's unified fields as well (for the page's flows).
pub fn prepare_page_keeping(
    connector: &dyn Connector,
    entity: EntityType,
    page: Vec<RemoteRecord>,
) -> PreparedPage {
    prepare(connector, entity, page, true)
}

fn prepare(
    connector: &dyn Connector,
    entity: EntityType,
    page: Vec<RemoteRecord>,
    keep: bool,
) -> PreparedPage {
    let mut prepared = PreparedPage::default();
    let mut kept = HashMap::new();
    for remote in last_per_key(page) {
        if is_tombstone(&remote) {
            prepared.gone.push(remote.key);
            continue;
        }
        match connector.unify(entity, &remote.data) {
            Ok(unified) => {
                let text = remote.data.to_string();
                let data = unified.to_string();
                if keep {
                    kept.insert(remote.key.clone(), unified);
                }
                prepared.rows.push(PreparedRow {
                    id: new_id(),
                    hash: content_hash(&text),
                    key: remote.key,
                    data,
                    remote: text,
                    remote_created_at: remote.created_at,
                    remote_updated_at: remote.updated_at,
                });
            }
            Err(why) => prepared.skipped.push((remote.key, why)),
        }
    }
    prepared.unified = keep.then_some(kept);
    prepared
}

/// Writes one prepared page in the write transaction `txn`. `pass` marks the records a full
/// pass has seen.
///
/// Two statements whatever the page holds: one upsert of the live records (new, changed
/// and, in a full pass, seen) and one update of the tombstones. Neither looks keys up
/// first: the unique index on (connection, entity, key) decides, on every backend and
/// whatever the planner's statistics say. On PostgreSQL the live records reach the upsert
/// by `COPY` (see `copy`); on SQLite they are bound to it, `ROWS_PER_STATEMENT` at a time.
pub async fn apply_page(
    txn: &TxnConn,
    connection_id: Uuid,
    entity: EntityType,
    page: PreparedPage,
    pass: Option<Uuid>,
) -> AppResult<PageOutcome> {
    let now = write_time();
    let mut outcome = PageOutcome {
        skipped: page.skipped,
        ..PageOutcome::default()
    };
    match txn {
        TxnConn::Postgres(pg) => {
            let shared = copy::Shared {
                connection_id,
                entity,
                pass,
                now,
            };
            copy::upsert(pg, &shared, page.rows, &mut outcome).await?;
        }
        TxnConn::SeaOrm(sqlite) => {
            let mut rows = page.rows;
            while !rows.is_empty() {
                let rest = rows.split_off(rows.len().min(ROWS_PER_STATEMENT));
                upsert(sqlite, connection_id, entity, rows, pass, now, &mut outcome).await?;
                rows = rest;
            }
        }
    }
    outcome.deleted = mark_deleted(txn, connection_id, entity, page.gone, now).await?;
    if let Some(pass) = pass {
        keep_skipped(txn, connection_id, entity, &outcome.skipped, pass).await?;
    }
    Ok(outcome)
}

/// A full pass saw the records it skipped (the remote still has them, malformed): their
/// last good copy stays, and the end of the pass does not take them for deleted.
async fn keep_skipped(
    txn: &impl ConnectionTrait,
    connection_id: Uuid,
    entity: EntityType,
    skipped: &[(String, String)],
    pass: Uuid,
) -> AppResult<()> {
    let keys: Vec<&str> = skipped
        .iter()
        .map(|(key, _)| key.as_str())
        .filter(|key| !key.is_empty())
        .collect();
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        live_records(connection_id, entity)
            .col_expr(record::Column::SeenPass, Expr::value(pass))
            .filter(record::Column::Key.is_in(chunk.iter().copied()))
            .exec(txn)
            .await?;
    }
    Ok(())
}

/// The page's write time, at the precision every backend stores (microseconds), so that
/// the upsert can compare the stored `modified_at` and `first_seen_at` with it.
fn write_time() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A remote may list a key twice in a page; the last word counts (and one statement may
/// not touch a row twice).
fn last_per_key(page: Vec<RemoteRecord>) -> Vec<RemoteRecord> {
    let mut position: HashMap<&str, usize> = HashMap::with_capacity(page.len());
    for (i, remote) in page.iter().enumerate() {
        position.insert(&remote.key, i);
    }
    if position.len() == page.len() {
        return page;
    }
    let keep: HashSet<usize> = position.into_values().collect();
    page.into_iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, remote)| remote)
        .collect()
}

/// Rows per upsert statement on SQLite: at 12 bound values a row and one more it stays
/// under SQLite's limit on bound values (32,766). Also the keys per statement of the
/// `key IN (…)` lists, on both backends (PostgreSQL's limit is 65,535).
const ROWS_PER_STATEMENT: usize = 2000;

/// SQLite: inserts new records, rewrites changed ones and marks the unchanged ones a full
/// pass saw, in one statement that returns only each touched row's key and what happened
/// to it (see `upsert_sql`), worked out by the database: no id or timestamp is decoded per
/// row.
///
/// The statement is written out here rather than built from active models: the JSON goes
/// in as the text `prepare_page` already made (no tree is cloned or serialized again). It
/// takes only anonymous `?`, 12 a row (what every row shares is repeated): SQLite looks a
/// numbered or named parameter's name up in a list, once per parameter bound, which is
/// quadratic in the parameters (it took 45 % of a sync's time at 7,000 a statement).
async fn upsert(
    txn: &impl ConnectionTrait,
    connection_id: Uuid,
    entity: EntityType,
    rows: Vec<PreparedRow>,
    pass: Option<Uuid>,
    now: DateTime<Utc>,
    outcome: &mut PageOutcome,
) -> AppResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let backend = txn.get_database_backend();
    let total = rows.len();
    let sql = upsert_sql(rows.len());
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(12 * rows.len() + 1);
    for row in rows {
        values.extend([
            // connection_id, entity, first_seen_at, modified_at, seen_pass.
            connection_id.into(),
            entity.to_value().into(),
            now.into(),
            now.into(),
            pass.into(),
            row.id.into(),
            row.key.into(),
            row.data.into(),
            row.remote.into(),
            row.hash.into(),
            row.remote_created_at.into(),
            row.remote_updated_at.into(),
        ]);
    }
    // The write time the RETURNING clause compares with.
    values.push(now.into());
    let statement = sea_orm::Statement::from_sql_and_values(backend, sql, values);
    let rows = txn.query_all_raw(statement).await?;
    count_outcomes(&rows, total, outcome)
}

/// Adds what an upsert of `total` rows returned to `outcome`: the rows it returned as added
/// or updated (see `upsert_returning`), the rest unchanged.
fn count_outcomes(
    returned: &[sea_orm::QueryResult],
    total: usize,
    outcome: &mut PageOutcome,
) -> AppResult<()> {
    // This statement's rows only: `outcome` may hold the page's earlier statements.
    let counted = outcome.added.len() + outcome.updated.len();
    for row in returned {
        match row.try_get::<i32>("", "outcome")? {
            OUTCOME_ADDED => outcome.added.push(row.try_get("", "key")?),
            OUTCOME_UPDATED => outcome.updated.push(row.try_get("", "key")?),
            _ => {}
        }
    }
    let changed = outcome.added.len() + outcome.updated.len() - counted;
    outcome.unchanged += (total - changed) as u64;
    Ok(())
}

/// What `upsert_sql`'s RETURNING clause says of a row: unchanged (only its pass mark moved).
const OUTCOME_UNCHANGED: i32 = 0;
const OUTCOME_ADDED: i32 = 1;
const OUTCOME_UPDATED: i32 = 2;

/// The columns an upsert inserts, in the order of its values.
const UPSERT_COLUMNS: &str = "connection_id, entity, first_seen_at, modified_at, seen_pass, \
     deleted_at, id, key, data, remote_data, content_hash, remote_created_at, \
     remote_updated_at";

/// SQLite's `INSERT … VALUES … ON CONFLICT … RETURNING` for `rows` rows (see
/// `upsert_returning`). It binds the write time once more for the RETURNING clause, at the
/// end.
fn upsert_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(400 + rows * 100);
    sql.push_str("INSERT INTO records (");
    sql.push_str(UPSERT_COLUMNS);
    sql.push_str(") VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push_str("(?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?)");
    }
    sql.push_str(&upsert_returning("?"));
    sql
}

/// What follows the rows of an upsert: `ON CONFLICT (connection_id, entity, key) DO UPDATE
/// … RETURNING`. On a stored key: a changed (or previously deleted) record takes the new
/// content; the pass mark moves either way; an unchanged record outside a full pass is left
/// alone.
///
/// A returned row whose `modified_at` is not the page's write time (`now`, a placeholder)
/// was left unchanged; one whose `first_seen_at` is that time too was inserted (a row stored
/// before keeps its first-seen time, and no two pages share a write time); any other was
/// rewritten.
fn upsert_returning(now: &str) -> String {
    use std::fmt::Write;
    let mut sql = String::with_capacity(1200);
    let changed =
        "(records.content_hash <> excluded.content_hash OR records.deleted_at IS NOT NULL)";
    sql.push_str(" ON CONFLICT (connection_id, entity, key) DO UPDATE SET ");
    for (n, column) in [
        "data",
        "remote_data",
        "content_hash",
        "remote_created_at",
        "remote_updated_at",
        "modified_at",
        "deleted_at",
    ]
    .iter()
    .enumerate()
    {
        if n > 0 {
            sql.push_str(", ");
        }
        let _ = write!(
            sql,
            "{column} = CASE WHEN {changed} THEN excluded.{column} ELSE records.{column} END"
        );
    }
    let _ = write!(
        sql,
        ", seen_pass = COALESCE(excluded.seen_pass, records.seen_pass) \
         WHERE {changed} OR excluded.seen_pass IS NOT NULL \
         RETURNING key, CASE WHEN modified_at <> {now} THEN {OUTCOME_UNCHANGED} \
         WHEN first_seen_at = modified_at THEN {OUTCOME_ADDED} ELSE {OUTCOME_UPDATED} END \
         AS outcome"
    );
    sql
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
    let mut deleted = Vec::new();
    // In statements of at most ROWS_PER_STATEMENT keys: a remote may send a page of any
    // length, and SQLite binds at most 32,766 values a statement.
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let live = live_records(connection_id, entity)
            .filter(record::Column::Key.is_in(chunk.iter().cloned()));
        deleted.extend(delete_returning_keys(txn, live, now).await?);
    }
    Ok(deleted)
}

/// The live records of one entity type of one connection.
fn live_records(connection_id: Uuid, entity: EntityType) -> sea_orm::UpdateMany<record::Entity> {
    record::Entity::update_many()
        .filter(record::Column::ConnectionId.eq(connection_id))
        .filter(record::Column::Entity.eq(entity))
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

/// A record by its id, if the caller may read its connection.
pub async fn find(db: &impl ConnectionTrait, scope: Scope, id: Uuid) -> AppResult<record::Model> {
    let found = record::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(AppError::NotFound("record"))?;
    connections::find(db, scope, found.connection_id).await?;
    Ok(found)
}

/// (connection, entity, remote key).
pub type RecordKey = (Uuid, EntityType, String);

/// Live records by remote key, in one query however many keys (the `asset.site`,
/// `workOrder.asset` … relations of a page). Callers pass keys of connections they may read.
pub async fn find_by_keys(
    db: &impl ConnectionTrait,
    keys: &[RecordKey],
) -> AppResult<HashMap<RecordKey, record::Model>> {
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
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| ((r.connection_id, r.entity, r.key.clone()), r))
        .collect())
}

/// What a caller asks of one connection's records: the connection may be omitted with a
/// connection token (its own), never with an account key.
pub struct RecordQuery {
    pub connection_id: Option<Uuid>,
    pub entity: EntityType,
    pub modified_after: Option<DateTime<Utc>>,
    pub include_deleted: bool,
}

/// One page of a connection's records, after checking the caller may read that connection.
pub async fn list_visible(
    db: &impl ConnectionTrait,
    scope: Scope,
    query: RecordQuery,
    page: PageRequest,
) -> AppResult<Page<record::Model>> {
    let connection_id = match (query.connection_id, scope.connection_id) {
        (Some(id), _) => id,
        (None, Some(own)) => own,
        (None, None) => {
            return Err(AppError::bad_input(
                "`connectionId` is required with an account API key",
            ));
        }
    };
    connections::find(db, scope, connection_id).await?;
    let filter = RecordFilter {
        connection_id,
        entity: query.entity,
        modified_after: query.modified_after,
        include_deleted: query.include_deleted,
    };
    list(db, &filter, page).await
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
        .filter(record::Column::Entity.eq(filter.entity));
    if let Some(after) = filter.modified_after {
        select = select.filter(record::Column::ModifiedAt.gt(after));
    }
    if !filter.include_deleted {
        select = select.filter(record::Column::DeletedAt.is_null());
    }
    Ok(fetch_page(db, select, record::Column::Id, page).await?)
}
