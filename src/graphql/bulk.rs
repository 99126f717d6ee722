//! Bulk operations as GraphQL types, and `bulkWrite`, `cancelBulkOperation`,
//! `bulkOperation` and `bulkOperations`.

use async_graphql::{
    Context, ID, InputObject, Json, Object, SimpleObject,
    connection::{Connection, Edge},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::enums::{BulkOperationStatus, EntityType, WriteOperation};
use crate::{
    bulk::{self, ListFilter, NewBulk},
    error::{AppError, AppResult},
    ids,
    pagination::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageRequest},
};
use entity::bulk_operation;

pub struct BulkOperation(pub bulk_operation::Model);

/// Records written back to a connection's remote system in the background, batch by batch,
/// with an outcome per record.
#[Object]
impl BulkOperation {
    /// The operation's id (`blk_…`).
    pub async fn id(&self) -> ID {
        ID(ids::encode(ids::Kind::BulkOperation, self.0.id))
    }
    /// The connection written to.
    async fn connection(&self, ctx: &Context<'_>) -> AppResult<super::connection::Connection> {
        let scope = super::principal(ctx).scope()?;
        let model =
            crate::connections::find(super::db(ctx).conn(), scope, self.0.connection_id).await?;
        Ok(super::connection::Connection(model))
    }
    /// The entity type written.
    async fn entity(&self) -> EntityType {
        self.0.entity.into()
    }
    /// What is done to each record.
    async fn operation(&self) -> WriteOperation {
        self.0.operation.into()
    }
    /// Where the operation stands.
    async fn status(&self) -> BulkOperationStatus {
        self.0.status.into()
    }
    /// Records in the operation.
    async fn total(&self) -> i32 {
        self.0.total
    }
    /// Records written so far, successfully or not (always the first `processed` ones).
    async fn processed(&self) -> i32 {
        self.0.processed
    }
    /// Records the remote system took.
    async fn succeeded(&self) -> i32 {
        self.0.succeeded
    }
    /// Records the remote system refused (see `results(onlyFailed: true)`).
    async fn failed(&self) -> i32 {
        self.0.failed
    }
    /// Records per batch.
    async fn batch_size(&self) -> i32 {
        self.0.batch_size
    }
    /// The pause between batches, in milliseconds.
    async fn delay_between_batches_ms(&self) -> i32 {
        self.0.delay_between_batches_ms
    }
    /// The key the operation was queued with, if any.
    async fn idempotency_key(&self) -> Option<&str> {
        self.0.idempotency_key.as_deref()
    }
    /// Remote 429 answers waited out so far.
    async fn rate_limited(&self) -> i32 {
        self.0.rate_limited.clamp(0, i64::from(i32::MAX)) as i32
    }
    /// Why it ended `FAILED` before its end (rejected credentials, a disconnect, a remote
    /// that stayed unreachable); null otherwise.
    async fn error(&self) -> Option<&str> {
        self.0.error_message.as_deref()
    }
    /// The flow whose `BULK_WRITE` action queued it (`flw_…`); null for a `bulkWrite`
    /// request. The id stays after the flow is deleted.
    async fn flow_id(&self) -> Option<ID> {
        self.0
            .flow_id
            .map(|id| ID(ids::encode(ids::Kind::Flow, id)))
    }
    /// When it was queued.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When a worker first took it; null while queued.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }
    /// When it ended; null until then.
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
    /// The outcome of each record written so far, by index.
    async fn results(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 0 to 100; 50 when omitted.")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
        #[graphql(
            default_with = "Some(false)",
            desc = "Only the records the remote refused."
        )]
        only_failed: Option<bool>,
    ) -> AppResult<Connection<String, BulkRecordResult>> {
        let limit = first.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(0..=MAX_PAGE_SIZE).contains(&limit) {
            return Err(AppError::bad_input(format!(
                "`first` must be between 0 and {MAX_PAGE_SIZE}"
            )));
        }
        let after_index = after.as_deref().map(decode_index).transpose()?;
        let (rows, more) = bulk::results(
            super::db(ctx).conn(),
            self.0.id,
            only_failed.unwrap_or(false),
            after_index,
            limit as u64,
        )
        .await?;
        let mut page = Connection::new(after_index.is_some(), more);
        page.edges = rows
            .into_iter()
            .map(|row| {
                Edge::new(
                    encode_index(row.position),
                    BulkRecordResult {
                        index: row.position,
                        succeeded: row.succeeded.unwrap_or(false),
                        key: row.remote_key,
                        error: row.error,
                    },
                )
            })
            .collect();
        Ok(page)
    }
}

const INDEX_TAG: &str = "i1:";

fn encode_index(index: i32) -> String {
    URL_SAFE_NO_PAD.encode(format!("{INDEX_TAG}{index}"))
}

fn decode_index(cursor: &str) -> AppResult<i32> {
    let invalid = || AppError::bad_input("malformed cursor");
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor.get(..64).unwrap_or(cursor))
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.strip_prefix(INDEX_TAG)
        .and_then(|n| n.parse().ok())
        .ok_or_else(invalid)
}

/// What came of writing one record.
#[derive(SimpleObject)]
pub struct BulkRecordResult {
    /// The record's position in `bulkWrite`'s `records`, from 0.
    pub index: i32,
    /// Whether the remote system took it.
    pub succeeded: bool,
    /// The remote system's key of the record written (a created record's new key).
    pub key: Option<String>,
    /// The remote system's message for a record it refused.
    pub error: Option<String>,
}

/// What `bulkWrite` writes.
#[derive(InputObject)]
pub struct BulkWriteInput {
    /// The connection to write to (`con_…`): required with an account API key; a connection
    /// token writes to its own connection.
    pub connection_id: Option<ID>,
    /// The entity type; it must be in the system's `writableEntities`.
    pub entity: EntityType,
    /// What to do to each record.
    pub operation: WriteOperation,
    /// 1 to 10,000 records, each an object of the entity's unified fields (`key` names the
    /// record to update or delete).
    pub records: Vec<Json<Value>>,
    /// Records per batch, 1 to 100.
    #[graphql(default_with = "Some(50)")]
    pub batch_size: Option<i32>,
    /// The pause between batches, 0 to 60,000 ms.
    #[graphql(default_with = "Some(0)")]
    pub delay_between_batches_ms: Option<i32>,
    /// The same key from the same account returns the operation it first made: nothing is
    /// written twice (1 to 255 bytes).
    pub idempotency_key: Option<String>,
}

#[derive(Default)]
pub struct BulkMutation;

#[Object]
impl BulkMutation {
    /// Checks every record and queues a bulk write; problems come back all at once as
    /// `BAD_USER_INPUT` (`extensions.problems`: index, field, message) and nothing is queued.
    async fn bulk_write(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to write.")] input: BulkWriteInput,
    ) -> AppResult<BulkOperation> {
        let scope = super::principal(ctx).scope()?;
        let connection_id = input
            .connection_id
            .as_deref()
            .map(|id| ids::decode(ids::Kind::Connection, id))
            .transpose()?;
        let new = NewBulk {
            connection_id,
            entity: input.entity.into(),
            operation: input.operation.into(),
            records: input.records.into_iter().map(|r| r.0).collect(),
            batch_size: input.batch_size.unwrap_or(50),
            delay_between_batches_ms: input.delay_between_batches_ms.unwrap_or(0),
            idempotency_key: input.idempotency_key,
        };
        Ok(BulkOperation(
            bulk::create(super::db(ctx), scope, new).await?,
        ))
    }

    /// Cancels an operation: a queued one at once, a running one before its next batch.
    /// Records already written stay written and are reported.
    async fn cancel_bulk_operation(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The operation's id (`blk_…`).")] id: ID,
    ) -> AppResult<BulkOperation> {
        let scope = super::principal(ctx).scope()?;
        let id = ids::decode(ids::Kind::BulkOperation, &id)?;
        Ok(BulkOperation(
            bulk::cancel(super::db(ctx), scope, id).await?,
        ))
    }
}

#[derive(Default)]
pub struct BulkQuery;

#[Object]
impl BulkQuery {
    /// A bulk operation by id; null when it does not exist or is not yours.
    async fn bulk_operation(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The operation's id (`blk_…`).")] id: ID,
    ) -> AppResult<Option<BulkOperation>> {
        let scope = super::principal(ctx).scope()?;
        let Ok(id) = ids::decode(ids::Kind::BulkOperation, &id) else {
            return Ok(None);
        };
        match bulk::find(super::db(ctx).conn(), scope, id).await {
            Ok(op) => Ok(Some(BulkOperation(op))),
            Err(AppError::NotFound(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Bulk operations, oldest first.
    async fn bulk_operations(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only this connection's.")] connection_id: Option<ID>,
        #[graphql(desc = "Only those in this status.")] status: Option<BulkOperationStatus>,
        #[graphql(desc = "Page size, 0 to 100; 50 when omitted.")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> AppResult<Connection<String, BulkOperation>> {
        let scope = super::principal(ctx).scope()?;
        let page = PageRequest::from_args(first, after.as_deref(), None, None)?;
        let filter = ListFilter {
            connection_id: connection_id
                .as_deref()
                .map(|id| ids::decode(ids::Kind::Connection, id))
                .transpose()?,
            status: status.map(Into::into),
        };
        let page = bulk::list(super::db(ctx).conn(), scope, filter, page).await?;
        Ok(super::pagination::relay(page, |op| op.id, BulkOperation))
    }
}
