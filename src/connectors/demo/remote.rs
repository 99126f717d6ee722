//! The demo's simulated remote of one connection, kept in the database (`demo_remotes`,
//! `demo_remote_records`) so that it survives restarts and every process on the database sees
//! the same one.
//!
//! Only a connection that exists and is not disconnected gets state: every write is a
//! conditional upsert on its `connections` row (locked `FOR SHARE` on PostgreSQL, so a
//! concurrent disconnect, which deletes the state, goes first or after, never between), so a
//! failed connect, whose probe runs before its row exists, leaves nothing behind. The rows
//! go with the connection's row (`ON DELETE CASCADE`) and with its disconnect ([`forget`]).

use std::collections::HashMap;

use sea_orm::{
    ActiveEnum as _, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait as _, sea_query::OnConflict,
};
use serde_json::Value;
use uuid::Uuid;

use super::writes::Change;
use crate::{
    catalog::EntityType,
    db::{self, Db},
};
use entity::{demo_remote, demo_remote_record, demo_remote_write, enums::ConnectionStatus};

/// Rows per statement when storing a written batch (7 values a row: far below PostgreSQL's
/// 65,535 parameters).
const WRITE_CHUNK: usize = 1000;

/// One connection's simulated remote.
pub(super) struct Remote {
    db: Db,
    connection_id: Uuid,
}

/// What a read starts from: the generation and the last write number, as of now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Snapshot {
    pub generation: u64,
    pub writes: u64,
}

/// A record as the remote's writes left it: `data` is `None` once deleted.
#[derive(Clone, Debug)]
pub(super) struct Written {
    pub key: String,
    pub position: u64,
    pub data: Option<Value>,
    pub sequence: u64,
}

impl From<demo_remote_record::Model> for Written {
    fn from(row: demo_remote_record::Model) -> Self {
        Self {
            key: row.key,
            position: row.position.unwrap_or_default().max(0) as u64,
            data: row.data,
            sequence: row.write_sequence.max(0) as u64,
        }
    }
}

/// A record to store: its key, whether it was created through a write, and its number.
pub(super) struct NewWrite {
    pub key: String,
    pub created: bool,
    pub position: Option<u64>,
    pub data: Option<Value>,
}

/// A counter of `demo_remotes`.
#[derive(Clone, Copy)]
enum Counter {
    Sessions,
    Requests,
    Writes,
}

impl Counter {
    fn column(self) -> &'static str {
        match self {
            Counter::Sessions => "sessions",
            Counter::Requests => "requests",
            Counter::Writes => "writes",
        }
    }
}

impl Remote {
    pub fn new(db: &Db, connection_id: Uuid) -> Self {
        Self {
            db: db.clone(),
            connection_id,
        }
    }

    /// The generation and the last write number; a connection without state is at the start.
    pub async fn snapshot(&self) -> Result<Snapshot, DbErr> {
        let row = demo_remote::Entity::find_by_id(self.connection_id)
            .one(self.db.conn())
            .await?;
        Ok(row.map_or_else(Snapshot::default, |row| Snapshot {
            generation: (row.sessions.max(1) - 1) as u64,
            writes: row.writes.max(0) as u64,
        }))
    }

    /// Counts a sync session (the second and later ones move the remote a generation on);
    /// `None` when the connection is gone.
    pub async fn begin_session(&self) -> Result<Option<u64>, DbErr> {
        let txn = self.db.begin_write().await?;
        let sessions = add(&*txn, self.connection_id, Counter::Sessions, 1).await?;
        txn.commit().await?;
        Ok(sessions)
    }

    /// Counts a request and returns how many came before it; `None` when the connection has
    /// no row (the probe of a connect runs before its row exists).
    pub async fn count_request(&self) -> Result<Option<u64>, DbErr> {
        let txn = self.db.begin_write().await?;
        let requests = add(&*txn, self.connection_id, Counter::Requests, 1).await?;
        txn.commit().await?;
        Ok(requests.map(|n| n - 1))
    }

    /// Stores a batch of writes, each under its idempotency key, numbered in one atomic step
    /// (two processes never hand out the same number): a write whose key the remote has
    /// kept already is not made again and answers with the record key it had. The record
    /// key of each write, in order; `None`, and nothing stored, when the connection is gone.
    pub async fn write(
        &self,
        entity: EntityType,
        batch: &[(&str, &Change)],
    ) -> Result<Option<Vec<String>>, DbErr> {
        let txn = self.db.begin_write().await?;
        let known = self.written_before(&*txn, batch).await?;
        let fresh: Vec<&(&str, &Change)> = batch
            .iter()
            .filter(|(idempotency_key, _)| !known.contains_key(*idempotency_key))
            .collect();
        let count = fresh.len() as u64;
        let Some(last) = add(&*txn, self.connection_id, Counter::Writes, count).await? else {
            return Ok(None);
        };
        let first = last + 1 - count;
        let writes: Vec<NewWrite> = fresh
            .iter()
            .zip(first..)
            .map(|((_, change), number)| change.stored(entity, number))
            .collect();
        self.store(&*txn, entity, &writes, first).await?;
        let kept: Vec<demo_remote_write::ActiveModel> = fresh
            .iter()
            .zip(&writes)
            .map(
                |((idempotency_key, _), write)| demo_remote_write::ActiveModel {
                    connection_id: Set(self.connection_id),
                    idempotency_key: Set((*idempotency_key).to_owned()),
                    key: Set(write.key.clone()),
                },
            )
            .collect();
        for chunk in kept.chunks(WRITE_CHUNK) {
            demo_remote_write::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(&*txn)
                .await?;
        }
        txn.commit().await?;
        let mut made = fresh
            .iter()
            .zip(writes)
            .map(|((idempotency_key, _), write)| (*idempotency_key, write.key))
            .collect::<HashMap<_, _>>();
        Ok(Some(
            batch
                .iter()
                .map(|(idempotency_key, _)| {
                    made.remove(idempotency_key)
                        .or_else(|| known.get(*idempotency_key).cloned())
                        .unwrap_or_default()
                })
                .collect(),
        ))
    }

    /// The record keys of the writes of `batch` the remote has kept already.
    async fn written_before(
        &self,
        txn: &impl ConnectionTrait,
        batch: &[(&str, &Change)],
    ) -> Result<HashMap<String, String>, DbErr> {
        let mut known = HashMap::new();
        for chunk in batch.chunks(WRITE_CHUNK) {
            let rows = demo_remote_write::Entity::find()
                .filter(demo_remote_write::Column::ConnectionId.eq(self.connection_id))
                .filter(
                    demo_remote_write::Column::IdempotencyKey
                        .is_in(chunk.iter().map(|(key, _)| (*key).to_owned())),
                )
                .all(txn)
                .await?;
            known.extend(rows.into_iter().map(|row| (row.idempotency_key, row.key)));
        }
        Ok(known)
    }

    /// Stores the records of writes numbered from `first`.
    async fn store(
        &self,
        txn: &impl ConnectionTrait,
        entity: EntityType,
        writes: &[NewWrite],
        first: u64,
    ) -> Result<(), DbErr> {
        // One row per key: a batch that writes a key twice keeps its last write.
        let mut rows: Vec<demo_remote_record::ActiveModel> = Vec::with_capacity(writes.len());
        let mut seen = HashMap::new();
        for (n, write) in writes.iter().enumerate() {
            let row = demo_remote_record::ActiveModel {
                connection_id: Set(self.connection_id),
                entity: Set(entity),
                key: Set(write.key.clone()),
                created: Set(write.created),
                position: Set(write.position.map(|p| p as i64)),
                data: Set(write.data.clone()),
                write_sequence: Set((first + n as u64) as i64),
            };
            match seen.insert(write.key.as_str(), rows.len()) {
                Some(at) => rows[at] = row,
                None => rows.push(row),
            }
        }
        for chunk in rows.chunks(WRITE_CHUNK) {
            demo_remote_record::Entity::insert_many(chunk.to_vec())
                .on_conflict(
                    OnConflict::columns([
                        demo_remote_record::Column::ConnectionId,
                        demo_remote_record::Column::Entity,
                        demo_remote_record::Column::Key,
                    ])
                    .update_columns([
                        demo_remote_record::Column::Created,
                        demo_remote_record::Column::Position,
                        demo_remote_record::Column::Data,
                        demo_remote_record::Column::WriteSequence,
                    ])
                    .to_owned(),
                )
                .exec_without_returning(txn)
                .await?;
        }
        Ok(())
    }

    /// Written generated records at positions `from..=to`, in order, at most `limit` of them.
    pub async fn overlays(
        &self,
        entity: EntityType,
        from: u64,
        to: u64,
        limit: u64,
    ) -> Result<Vec<Written>, DbErr> {
        let rows = self
            .records(entity, false)
            .filter(demo_remote_record::Column::Position.between(from as i64, to as i64))
            .order_by_asc(demo_remote_record::Column::Position)
            .limit(limit)
            .all(self.db.conn())
            .await?;
        Ok(rows.into_iter().map(Written::from).collect())
    }

    /// The written records of `entity` among `keys`, by key (deleted ones too).
    pub async fn written(
        &self,
        entity: EntityType,
        keys: Vec<String>,
    ) -> Result<HashMap<String, Written>, DbErr> {
        let rows = demo_remote_record::Entity::find()
            .filter(demo_remote_record::Column::ConnectionId.eq(self.connection_id))
            .filter(demo_remote_record::Column::Entity.eq(entity))
            .filter(demo_remote_record::Column::Key.is_in(keys))
            .all(self.db.conn())
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.key.clone(), Written::from(row)))
            .collect())
    }

    /// Records created through writes from position `from` on, in order, at most `limit`:
    /// those written after write number `since` (deleted ones too), or without it the ones
    /// that exist.
    pub async fn created(
        &self,
        entity: EntityType,
        from: u64,
        since: Option<u64>,
        limit: u64,
    ) -> Result<Vec<Written>, DbErr> {
        let select = self
            .records(entity, true)
            .filter(demo_remote_record::Column::Position.gte(from as i64));
        let select = match since {
            Some(write) => {
                select.filter(demo_remote_record::Column::WriteSequence.gt(write as i64))
            }
            None => select.filter(demo_remote_record::Column::Data.is_not_null()),
        };
        let rows = select
            .order_by_asc(demo_remote_record::Column::Position)
            .limit(limit)
            .all(self.db.conn())
            .await?;
        Ok(rows.into_iter().map(Written::from).collect())
    }

    fn records(
        &self,
        entity: EntityType,
        created: bool,
    ) -> sea_orm::Select<demo_remote_record::Entity> {
        demo_remote_record::Entity::find()
            .filter(demo_remote_record::Column::ConnectionId.eq(self.connection_id))
            .filter(demo_remote_record::Column::Entity.eq(entity))
            .filter(demo_remote_record::Column::Created.eq(created))
    }
}

/// Adds `by` to one counter of a live connection's remote (creating its row at `by`) and
/// returns the new value; `None`, and nothing written, when the connection does not exist or
/// is disconnected.
async fn add(
    txn: &impl ConnectionTrait,
    connection_id: Uuid,
    counter: Counter,
    by: u64,
) -> Result<Option<u64>, DbErr> {
    let backend = txn.get_database_backend();
    // Locking the connection's row first keeps the order every writer takes (the
    // connection, then what hangs off it) and makes a concurrent disconnect wait or win.
    let lock = match backend {
        DbBackend::Postgres => " FOR SHARE",
        _ => "",
    };
    let column = counter.column();
    let initial = |c: Counter| if c.column() == column { by as i64 } else { 0 };
    let sql = format!(
        "INSERT INTO demo_remotes (connection_id, sessions, requests, writes) \
         SELECT id, ?, ?, ? FROM connections WHERE id = ? AND status <> ?{lock} \
         ON CONFLICT (connection_id) DO UPDATE SET {column} = demo_remotes.{column} + ? \
         RETURNING {column}"
    );
    let values: [sea_orm::Value; 6] = [
        initial(Counter::Sessions).into(),
        initial(Counter::Requests).into(),
        initial(Counter::Writes).into(),
        connection_id.into(),
        ConnectionStatus::Disconnected.to_value().into(),
        (by as i64).into(),
    ];
    let row = txn
        .query_one_raw(db::statement(backend, &sql, values))
        .await?;
    row.map(|row| row.try_get::<i64>("", column).map(|n| n.max(0) as u64))
        .transpose()
}

/// Deletes a connection's simulated remote, inside the caller's transaction.
pub async fn forget(txn: &impl ConnectionTrait, connection_id: Uuid) -> Result<(), DbErr> {
    for statement in forget_statements(txn.get_database_backend(), connection_id) {
        txn.execute_raw(statement).await?;
    }
    Ok(())
}

/// The statements that delete a connection's simulated remote (the disconnect sends them
/// with its events; deleting the connection's row does the same through the foreign keys).
/// The three tables refer to the connection each, not to each other.
pub fn forget_statements(backend: DbBackend, connection_id: Uuid) -> Vec<sea_orm::Statement> {
    vec![
        demo_remote_write::Entity::delete_many()
            .filter(demo_remote_write::Column::ConnectionId.eq(connection_id))
            .build(backend),
        demo_remote_record::Entity::delete_many()
            .filter(demo_remote_record::Column::ConnectionId.eq(connection_id))
            .build(backend),
        demo_remote::Entity::delete_many()
            .filter(demo_remote::Column::ConnectionId.eq(connection_id))
            .build(backend),
    ]
}
