//! Bulk writes: records written back to a connection's remote system in batches, in the
//! background, with an outcome per record. An operation is checked in full before anything
//! is queued ([`fields`]), stored with its records in one transaction, and then worked
//! through by the `bulk-writes` workers ([`run`]) under a lease, like a sync run
//! ([`jobs`]). docs/bulk-writes.md is the user's guide.

pub mod fields;
pub mod jobs;
pub mod run;

use chrono::Utc;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    catalog::{EntityType, WriteOperation},
    connections::{self, Scope},
    db::Db,
    error::{AppError, AppResult},
    ids::new_id,
    notify::Notice,
    pagination::{Page, PageRequest, fetch_page},
};
use entity::{
    bulk_operation::{self, BulkStatus},
    bulk_record,
    enums::ConnectionStatus,
};

/// Records one operation takes at most.
pub const MAX_RECORDS: usize = 10_000;
/// Records per batch at most.
pub const MAX_BATCH_SIZE: i32 = 100;
/// The longest pause between batches, in milliseconds.
pub const MAX_DELAY_MS: i32 = 60_000;
/// The longest idempotency key.
const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Records stored per statement (4 values each).
const INSERT_CHUNK: usize = 500;

/// What `bulkWrite` asks for.
pub struct NewBulk {
    /// Required with an account key; a connection token's own connection when omitted.
    pub connection_id: Option<Uuid>,
    pub entity: EntityType,
    pub operation: WriteOperation,
    pub records: Vec<Value>,
    pub batch_size: i32,
    pub delay_between_batches_ms: i32,
    pub idempotency_key: Option<String>,
}

/// Checks and queues a bulk operation; with an idempotency key the account has used
/// before for the same request, the operation that request made (nothing is queued twice).
#[tracing::instrument(skip_all, fields(account.id = %scope.account_id), err(level = "debug"))]
pub async fn create(db: &Db, scope: Scope, input: NewBulk) -> AppResult<bulk_operation::Model> {
    check_limits(&input)?;
    let connection_id = match (input.connection_id, scope.connection_id) {
        (Some(id), _) => id,
        (None, Some(own)) => own,
        (None, None) => {
            return Err(AppError::bad_input(
                "`connectionId` is required with an account API key",
            ));
        }
    };
    let connection = connections::find(db.conn(), scope, connection_id).await?;
    check_records(&connection, &input)?;
    let hash = request_hash(connection_id, &input);
    let key = input.idempotency_key.clone();
    if let Some(existing) = same_request(db.conn(), scope.account_id, key.as_deref(), &hash).await?
    {
        return Ok(existing);
    }
    match insert(db, &connection, input, hash.clone()).await {
        Err(AppError::Internal(err))
            if err
                .downcast_ref::<sea_orm::DbErr>()
                .is_some_and(AppError::is_unique_violation) =>
        {
            // The same key, queued by a concurrent request a moment ago.
            same_request(db.conn(), scope.account_id, key.as_deref(), &hash)
                .await?
                .ok_or_else(|| {
                    AppError::internal(anyhow::anyhow!(
                        "a bulk operation's key is taken, by no operation"
                    ))
                })
        }
        other => other,
    }
}

/// The connection's system must take this write, and every record must be writable.
fn check_records(connection: &entity::connection::Model, input: &NewBulk) -> AppResult<()> {
    let system = connections::system(connection)?;
    if !system
        .write_operations(input.entity)
        .contains(&input.operation)
    {
        return Err(AppError::bad_input(format!(
            "{} does not take {} writes of {} (see the system's `writableEntities`)",
            system.name, input.operation, input.entity
        )));
    }
    let (problems, count) = fields::check(input.entity, input.operation, &input.records);
    if count > 0 {
        return Err(AppError::InvalidRecords { problems, count });
    }
    Ok(())
}

fn check_limits(input: &NewBulk) -> AppResult<()> {
    if input.records.is_empty() || input.records.len() > MAX_RECORDS {
        return Err(AppError::bad_input(format!(
            "`records` takes 1 to {MAX_RECORDS} records, not {}",
            input.records.len()
        )));
    }
    if !(1..=MAX_BATCH_SIZE).contains(&input.batch_size) {
        return Err(AppError::bad_input(format!(
            "`batchSize` must be between 1 and {MAX_BATCH_SIZE}"
        )));
    }
    if !(0..=MAX_DELAY_MS).contains(&input.delay_between_batches_ms) {
        return Err(AppError::bad_input(format!(
            "`delayBetweenBatchesMs` must be between 0 and {MAX_DELAY_MS}"
        )));
    }
    if let Some(key) = &input.idempotency_key
        && (key.trim().is_empty() || key.len() > MAX_IDEMPOTENCY_KEY)
    {
        return Err(AppError::bad_input(format!(
            "`idempotencyKey` must be 1 to {MAX_IDEMPOTENCY_KEY} bytes"
        )));
    }
    Ok(())
}

/// SHA-256 of everything the request asks for: a retry has the same, another request under
/// the same key does not.
fn request_hash(connection_id: Uuid, input: &NewBulk) -> String {
    let canonical = json!({
        "connection": connection_id, "entity": input.entity.to_string(),
        "operation": input.operation.to_string(), "records": input.records,
        "batchSize": input.batch_size, "delay": input.delay_between_batches_ms,
    });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The operation an earlier request with the same idempotency key made: the same request
/// gets it back; another request under that key is a `CONFLICT`.
async fn same_request(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    key: Option<&str>,
    hash: &str,
) -> AppResult<Option<bulk_operation::Model>> {
    let Some(key) = key else {
        return Ok(None);
    };
    let found = bulk_operation::Entity::find()
        .filter(bulk_operation::Column::AccountId.eq(account_id))
        .filter(bulk_operation::Column::IdempotencyKey.eq(key))
        .one(db)
        .await?;
    match found {
        Some(op) if op.request_hash == hash => Ok(Some(op)),
        Some(_) => Err(AppError::Conflict(format!(
            "idempotencyKey `{key}` was used for a different bulk write; use a new key"
        ))),
        None => Ok(None),
    }
}

/// Stores the operation and its records in one transaction, the connection's row locked
/// first (a disconnect waits, or goes first and is seen).
async fn insert(
    db: &Db,
    connection: &entity::connection::Model,
    input: NewBulk,
    request_hash: String,
) -> AppResult<bulk_operation::Model> {
    let txn = db.begin_write().await?;
    let scope = Scope::account(connection.account_id);
    let connection = connections::find_for_update(&*txn, scope, connection.id).await?;
    refuse_unwritable(&connection)?;
    let op = store(&*txn, &connection, input, request_hash, None).await?;
    txn.after_commit(Notice::BulkQueued);
    txn.commit().await?;
    Ok(op)
}

/// Queues the bulk write a flow's action asks for, inside the caller's transaction (the sync
/// page whose change triggered it), on a connection whose row the caller has locked. The
/// records are checked as `bulkWrite` checks them; the caller wakes the workers after commit
/// ([`Notice::BulkQueued`]).
pub async fn queue_for_flow(
    txn: &impl ConnectionTrait,
    connection: &entity::connection::Model,
    input: NewBulk,
    flow_id: Uuid,
) -> AppResult<bulk_operation::Model> {
    check_limits(&input)?;
    check_records(connection, &input)?;
    refuse_unwritable(connection)?;
    let hash = request_hash(connection.id, &input);
    store(txn, connection, input, hash, Some(flow_id)).await
}

/// Inserts an operation and its records.
async fn store(
    txn: &impl ConnectionTrait,
    connection: &entity::connection::Model,
    input: NewBulk,
    request_hash: String,
    flow_id: Option<Uuid>,
) -> AppResult<bulk_operation::Model> {
    let now = Utc::now();
    let id = new_id();
    let op = bulk_operation::ActiveModel {
        id: Set(id),
        account_id: Set(connection.account_id),
        connection_id: Set(connection.id),
        entity: Set(input.entity),
        operation: Set(input.operation),
        status: Set(BulkStatus::Queued),
        total: Set(input.records.len() as i32),
        processed: Set(0),
        succeeded: Set(0),
        failed: Set(0),
        batch_size: Set(input.batch_size),
        delay_between_batches_ms: Set(input.delay_between_batches_ms),
        idempotency_key: Set(input.idempotency_key),
        request_hash: Set(request_hash),
        created_at: Set(now),
        started_at: Set(None),
        finished_at: Set(None),
        run_after: Set(now),
        locked_by: Set(None),
        locked_until: Set(None),
        attempts: Set(0),
        cancel_requested: Set(false),
        sending_since: Set(None),
        rate_limited: Set(0),
        error_message: Set(None),
        flow_id: Set(flow_id),
    };
    let op = bulk_operation::Entity::insert(op)
        .exec_with_returning(txn)
        .await?;
    let rows = input
        .records
        .into_iter()
        .enumerate()
        .map(|(index, data)| bulk_record::ActiveModel {
            operation_id: Set(id),
            position: Set(index as i32),
            data: Set(data),
            succeeded: Set(None),
            remote_key: Set(None),
            error: Set(None),
        })
        .collect::<Vec<_>>();
    for chunk in rows.chunks(INSERT_CHUNK) {
        bulk_record::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(txn)
            .await?;
    }
    Ok(op)
}

/// A connection that cannot be written to now is refused, before anything is queued.
fn refuse_unwritable(connection: &entity::connection::Model) -> AppResult<()> {
    match connection.status {
        ConnectionStatus::Disconnected => Err(AppError::Conflict(
            "the connection is disconnected; nothing can be written to it".into(),
        )),
        ConnectionStatus::AuthRequired => Err(AppError::Conflict(
            "the connection needs new credentials (AUTH_REQUIRED); update them with \
             `updateConnectionCredentials`, then write again"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// An operation the caller may see.
pub async fn find(
    db: &impl ConnectionTrait,
    scope: Scope,
    id: Uuid,
) -> AppResult<bulk_operation::Model> {
    let mut select = bulk_operation::Entity::find_by_id(id)
        .filter(bulk_operation::Column::AccountId.eq(scope.account_id));
    if let Some(own) = scope.connection_id {
        select = select.filter(bulk_operation::Column::ConnectionId.eq(own));
    }
    select
        .one(db)
        .await?
        .ok_or(AppError::NotFound("bulk operation"))
}

/// Which operations `bulkOperations` lists.
#[derive(Default)]
pub struct ListFilter {
    pub connection_id: Option<Uuid>,
    pub status: Option<BulkStatus>,
}

/// The caller's operations, oldest first.
pub async fn list(
    db: &impl ConnectionTrait,
    scope: Scope,
    filter: ListFilter,
    page: PageRequest,
) -> AppResult<Page<bulk_operation::Model>> {
    let mut select = bulk_operation::Entity::find()
        .filter(bulk_operation::Column::AccountId.eq(scope.account_id));
    if let Some(own) = scope.connection_id {
        select = select.filter(bulk_operation::Column::ConnectionId.eq(own));
    }
    if let Some(connection_id) = filter.connection_id {
        connections::find(db, scope, connection_id).await?;
        select = select.filter(bulk_operation::Column::ConnectionId.eq(connection_id));
    }
    if let Some(status) = filter.status {
        select = select.filter(bulk_operation::Column::Status.eq(status));
    }
    Ok(fetch_page(db, select, bulk_operation::Column::Id, page).await?)
}

/// A page of an operation's outcomes, by record index: those written so far, or only the
/// failed ones. `after` is the index the previous page ended at.
pub async fn results(
    db: &impl ConnectionTrait,
    operation_id: Uuid,
    only_failed: bool,
    after: Option<i32>,
    limit: u64,
) -> AppResult<(Vec<bulk_record::Model>, bool)> {
    let mut select = bulk_record::Entity::find()
        .filter(bulk_record::Column::OperationId.eq(operation_id))
        .filter(bulk_record::Column::Succeeded.is_not_null());
    if only_failed {
        select = select.filter(bulk_record::Column::Succeeded.eq(false));
    }
    if let Some(after) = after {
        select = select.filter(bulk_record::Column::Position.gt(after));
    }
    let mut rows = select
        .order_by_asc(bulk_record::Column::Position)
        .limit(limit + 1)
        .all(db)
        .await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    Ok((rows, more))
}

/// Deletes the operations that ended more than `retention` ago, with their records and
/// outcomes: one operation (up to 10,000 records) per transaction, oldest first. How many.
pub async fn prune(db: &Db, retention: std::time::Duration) -> AppResult<u64> {
    let horizon = crate::db::horizon(retention);
    let mut deleted = 0;
    loop {
        let expired: Option<Uuid> = bulk_operation::Entity::find()
            .select_only()
            .column(bulk_operation::Column::Id)
            .filter(bulk_operation::Column::FinishedAt.lt(horizon))
            .order_by_asc(bulk_operation::Column::FinishedAt)
            .into_tuple()
            .one(db.conn())
            .await?;
        let Some(id) = expired else {
            return Ok(deleted);
        };
        let txn = db.begin_write().await?;
        bulk_record::Entity::delete_many()
            .filter(bulk_record::Column::OperationId.eq(id))
            .exec(&*txn)
            .await?;
        deleted += bulk_operation::Entity::delete_by_id(id)
            .exec(&*txn)
            .await?
            .rows_affected;
        txn.commit().await?;
    }
}

/// Cancels an operation: one no worker holds (queued, or waiting to be retried) ends at once;
/// a running one stops before its next batch. What was written stays written and is
/// reported. An operation that has ended is returned as it is.
pub async fn cancel(db: &Db, scope: Scope, id: Uuid) -> AppResult<bulk_operation::Model> {
    let txn = db.begin_write().await?;
    let op = find(&*txn, scope, id).await?;
    connections::lock(&*txn, op.connection_id).await?;
    let op = jobs::locked(&*txn, op.id).await?;
    let op = if op.status.is_finished() {
        op
    } else if op.locked_by.is_none() {
        jobs::finish(&*txn, op, BulkStatus::Cancelled, None)
            .await?
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("a cancelled operation vanished")))?
    } else {
        jobs::request_cancel(&*txn, op.id).await?
    };
    txn.commit().await?;
    Ok(op)
}
