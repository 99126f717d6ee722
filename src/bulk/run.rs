//! Works a claimed bulk operation through to its end, batch by batch: each batch marked as
//! being sent, written through the connector under the connection's outbound rate limit,
//! its outcomes and the records it changed stored in one transaction, then the pause
//! between batches. A remote 429 is waited out; rejected credentials end the operation and
//! ask the connection for new ones; an unreachable or failing remote is retried, and then
//! the attempt fails and the operation is retried later (`jobs::attempt_failed`).

use std::{collections::HashMap, time::Duration};

use sea_orm::EntityTrait;
use serde_json::Value;
use uuid::Uuid;

use super::jobs::{self, Renewal};
use crate::{
    catalog::WriteOperation,
    connections::{self, CredentialsError, Scope},
    connectors::{
        self, Connector, ConnectorError, WriteOutcome, WriteRecord, WriteRequest, http::Outbound,
    },
    crypto::Cipher,
    db::Db,
    error::{AppError, AppResult},
    events::{self, EventType},
    records,
};
use entity::{
    bulk_operation::{self, BulkStatus},
    bulk_record,
    enums::ConnectionStatus,
};

/// Tries of an unreachable or failing remote within one attempt, with backoff.
const RETRIES: u32 = 4;
/// How often a pause looks for a cancel.
const CANCEL_POLL: Duration = Duration::from_millis(250);
/// The longest wait a remote's 429 gets in one go (then the batch is tried again).
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// How bulk operations are worked.
#[derive(Clone, Debug)]
pub struct BulkSettings {
    pub lease: Duration,
    pub max_attempts: u32,
}

/// Why an attempt stopped without ending the operation: it is retried after a backoff.
#[derive(Debug)]
pub enum AttemptFailed {
    /// The remote stayed unreachable or kept failing.
    Remote(String),
    Internal(AppError),
}

impl From<AppError> for AttemptFailed {
    fn from(err: AppError) -> Self {
        AttemptFailed::Internal(err)
    }
}

impl From<sea_orm::DbErr> for AttemptFailed {
    fn from(err: sea_orm::DbErr) -> Self {
        AttemptFailed::Internal(err.into())
    }
}

impl std::fmt::Display for AttemptFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptFailed::Remote(why) => write!(f, "the remote system failed: {why}"),
            AttemptFailed::Internal(err) => write!(f, "{err}"),
        }
    }
}

pub struct Runner<'a> {
    pub db: &'a Db,
    pub cipher: &'a Cipher,
    pub outbound: &'a Outbound,
    pub settings: &'a BulkSettings,
    /// Fired at shutdown: the job stops at its next batch boundary (the batch being sent is
    /// finished and stored, so that its records do not become uncertain).
    pub stop: &'a tokio_util::sync::CancellationToken,
}

/// The idempotency key of one record of one operation: the same on every attempt.
pub fn idempotency_key(operation_id: Uuid, index: i32) -> String {
    format!("mw-{}-{index}", operation_id.simple())
}

/// One claimed operation being worked.
struct Job<'a> {
    runner: &'a Runner<'a>,
    connector: Box<dyn Connector>,
    pace: connectors::Pace,
    op: bulk_operation::Model,
    /// The write-through of the previous batch, which runs while the next one is sent.
    through: Option<tokio::task::JoinHandle<()>>,
    /// The sealed credentials the connector was made with: a rejection of them says nothing
    /// of credentials that replaced them meanwhile.
    credentials: Option<Vec<u8>>,
    /// Set when this attempt's last send stopped (unreachable, a fault) at its first record
    /// without an outcome: only that record may have reached the remote, so it is sent alone
    /// (as possibly sent) before the rest goes as usual.
    one_uncertain: bool,
}

impl Runner<'_> {
    /// Works `op` (claimed by this worker) until it ends, the worker loses it, or the attempt
    /// fails.
    pub async fn execute(&self, op: bulk_operation::Model) -> Result<(), AttemptFailed> {
        let scope = Scope::account(op.account_id);
        let connection = connections::find(self.db.conn(), scope, op.connection_id).await?;
        if connection.status == ConnectionStatus::Disconnected {
            return Ok(self
                .end(op, BulkStatus::Failed, Some(disconnected()))
                .await?);
        }
        if op.cancel_requested {
            return Ok(self.end(op, BulkStatus::Cancelled, None).await?);
        }
        let credentials = match connections::open_credentials(self.cipher, &connection) {
            Ok(credentials) => credentials,
            Err(CredentialsError::Unreadable(why)) => {
                tracing::warn!(bulk_operation.id = %op.id, reason = %why, "the operation's credentials are unreadable");
                let reason = connections::UNREADABLE_CREDENTIALS_REASON.to_owned();
                self.fail_auth(op, reason, connection.credentials.as_deref())
                    .await?;
                return Ok(());
            }
            Err(CredentialsError::Disconnected) => {
                return Ok(self
                    .end(op, BulkStatus::Failed, Some(disconnected()))
                    .await?);
            }
        };
        let system = connections::system(&connection)?;
        let connector =
            connectors::connect(system, connection.id, &credentials, self.outbound, self.db);
        let job = Job {
            runner: self,
            connector,
            pace: self.outbound.pace(connection.id),
            op,
            through: None,
            credentials: connection.credentials.clone(),
            one_uncertain: false,
        };
        job.run().await
    }

    /// Ends `op` as `status`, provided this worker still holds it.
    async fn end(
        &self,
        op: bulk_operation::Model,
        status: BulkStatus,
        error: Option<String>,
    ) -> AppResult<()> {
        let txn = self.db.begin_write().await?;
        connections::lock(&*txn, op.connection_id).await?;
        jobs::finish(&*txn, op, status, error).await?;
        txn.commit().await?;
        Ok(())
    }

    /// The remote rejected the credentials `used`: the operation fails and the connection
    /// asks for new ones, in one transaction. False, and nothing written, when the connection's
    /// credentials were replaced since (the batch is to be written again with the new ones).
    async fn fail_auth(
        &self,
        op: bulk_operation::Model,
        reason: String,
        used: Option<&[u8]>,
    ) -> AppResult<bool> {
        let txn = self.db.begin_write().await?;
        let scope = Scope::account(op.account_id);
        let connection = connections::find_for_update(&*txn, scope, op.connection_id).await?;
        if connection.credentials.as_deref() != used {
            return Ok(false);
        }
        let message = format!("the remote system rejected the credentials: {reason}");
        if jobs::finish(&*txn, op, BulkStatus::Failed, Some(message))
            .await?
            .is_some()
        {
            let status = ConnectionStatus::AuthRequired;
            connections::set_status(&*txn, connection, status, Some(reason)).await?;
        }
        txn.commit().await?;
        Ok(true)
    }
}

fn disconnected() -> String {
    "the connection was disconnected before the operation ended".into()
}

impl Job<'_> {
    async fn run(mut self) -> Result<(), AttemptFailed> {
        let outcome = self.batches().await;
        // Whatever ended the attempt, the last batch's records reach the store.
        self.settle().await;
        match outcome? {
            Some((status, error)) => Ok(self.runner.end(self.op, status, error).await?),
            None => Ok(()),
        }
    }

    /// Sends batch after batch until the operation should end (how, and why if it failed),
    /// the worker lost it (`None`), or the attempt failed.
    async fn batches(&mut self) -> Result<Option<(BulkStatus, Option<String>)>, AttemptFailed> {
        let mut failures = 0;
        loop {
            if self.runner.stop.is_cancelled() {
                return Ok(None);
            }
            // Set when an earlier send stopped while sending the next records.
            let sent_since = self.op.sending_since;
            if !self.renew(Renewal::MarkSending).await? {
                return Ok(None);
            }
            // Ending here, nothing more was sent: the mark stands as it stood.
            self.op.sending_since = sent_since;
            if self.op.cancel_requested || self.op.processed >= self.op.total {
                return Ok(Some((jobs::final_status(&self.op), None)));
            }
            if self.disconnected().await? {
                return Ok(Some((BulkStatus::Failed, Some(disconnected()))));
            }
            let Some(stopped) = self.send_batch(sent_since).await? else {
                return Ok(None);
            };
            match stopped {
                None => {
                    failures = 0;
                    let delay = Duration::from_millis(self.op.delay_between_batches_ms as u64);
                    let at_boundary = self.op.processed % self.op.batch_size.max(1) == 0;
                    if !delay.is_zero() && at_boundary && self.op.processed < self.op.total {
                        self.pause(delay).await?;
                    }
                }
                Some(ConnectorError::RateLimited { retry_after }) => {
                    jobs::count_rate_limit(self.runner.db, self.op.id).await?;
                    self.pause(retry_after.min(MAX_RATE_LIMIT_WAIT)).await?;
                }
                Some(ConnectorError::AuthRejected(reason)) => {
                    self.settle().await;
                    let used = self.credentials.as_deref();
                    if self.runner.fail_auth(self.op.clone(), reason, used).await? {
                        return Ok(None);
                    }
                    return Err(AttemptFailed::Remote(
                        "the credentials were replaced while a batch was written; it is \
                         written again with the new ones"
                            .into(),
                    ));
                }
                Some(err) => {
                    failures += 1;
                    if failures > RETRIES {
                        return Err(AttemptFailed::Remote(err.message()));
                    }
                    tracing::debug!(bulk_operation.id = %self.op.id, error = %err, failures, "remote failed; retrying");
                    self.pause(Duration::from_millis(250 * 2u64.pow(failures)))
                        .await?;
                }
            }
        }
    }

    /// Whether the connection was disconnected while the operation ran: its credentials are
    /// gone, and nothing more may be written in its name.
    async fn disconnected(&self) -> AppResult<bool> {
        let connection = entity::connection::Entity::find_by_id(self.op.connection_id)
            .one(self.runner.db.conn())
            .await?;
        Ok(connection.is_none_or(|c| c.status == ConnectionStatus::Disconnected))
    }

    /// Waits for the write-through of the last batch.
    async fn settle(&mut self) {
        if let Some(through) = self.through.take()
            && let Err(err) = through.await
        {
            tracing::error!(bulk_operation.id = %self.op.id, error = %err, "a write-through task failed");
        }
    }

    /// Renews the lease (see [`Renewal`]) and rereads the operation; false when this worker
    /// lost it.
    async fn renew(&mut self, renewal: Renewal) -> AppResult<bool> {
        let worker = self.op.locked_by.clone().unwrap_or_default();
        let lease = self.runner.settings.lease;
        match jobs::renew(self.runner.db, self.op.id, &worker, lease, renewal).await? {
            Some(op) => {
                self.op = op;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Sends the next batch and stores what came of it. `None` when the worker lost the
    /// operation; otherwise why the connector stopped before the batch's end, if it did.
    async fn send_batch(
        &mut self,
        sent_since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Option<Option<ConnectorError>>, AttemptFailed> {
        let mut batch = jobs::next_batch(self.runner.db.conn(), &self.op).await?;
        let alone = self.one_uncertain && sent_since.is_some();
        if alone {
            batch.truncate(1);
        }
        let records: Vec<WriteRecord> = batch
            .iter()
            .map(|r| WriteRecord {
                idempotency_key: idempotency_key(self.op.id, r.position),
                fields: r.data.clone(),
            })
            .collect();
        let request = WriteRequest {
            entity: self.op.entity,
            operation: self.op.operation,
            records: &records,
            sent_since,
            pace: &self.pace,
        };
        let reply = tokio::select! {
            reply = self.connector.write(&request) => reply,
            () = self.hold_lease() => return Ok(None),
        };
        let mut outcomes = reply.outcomes;
        outcomes.truncate(records.len());
        let mut stopped = reply.stopped.filter(|_| outcomes.len() < records.len());
        // The remote refused the batch as a whole: each of its records failed so.
        if let Some(ConnectorError::Validation(why)) = &stopped {
            outcomes.resize(records.len(), Err(why.clone()));
            stopped = None;
        }
        let unknown_stop = matches!(
            stopped,
            Some(ConnectorError::Unreachable(_) | ConnectorError::RemoteFault(_))
        );
        let still_sending =
            outcomes.len() < records.len() && (sent_since.is_some() || unknown_stop);
        // After a stop of this attempt's own sending, only the record it stopped at is in
        // doubt; after a crash, the whole batch the dead attempt was sending is.
        self.one_uncertain = unknown_stop && (sent_since.is_none() || alone);
        if !self.store(&batch, &outcomes, still_sending).await? {
            return Ok(None);
        }
        Ok(Some(stopped))
    }

    /// Stores a batch's outcomes (one short transaction on the operation's rows), then
    /// writes the records it changed through to the record store in the background, while
    /// the next batch is sent; false when the worker lost the operation.
    async fn store(
        &mut self,
        batch: &[bulk_record::Model],
        outcomes: &[WriteOutcome],
        still_sending: bool,
    ) -> AppResult<bool> {
        let txn = self.runner.db.begin_write().await?;
        let from = self.op.processed;
        let Some(op) =
            jobs::record_outcomes(&*txn, &self.op, from, outcomes, still_sending).await?
        else {
            return Ok(false);
        };
        txn.commit().await?;
        self.op = op;
        let written: Vec<records::Written> = batch
            .iter()
            .zip(outcomes)
            .filter_map(|(record, outcome)| {
                written(self.op.operation, record, outcome.as_ref().ok()?)
            })
            .collect();
        self.settle().await;
        if !written.is_empty() {
            let (db, op) = (self.runner.db.clone(), self.op.clone());
            self.through = Some(tokio::spawn(async move {
                if let Err(err) = write_through(&db, &op, written).await {
                    // The next sync stores these records from the remote.
                    tracing::error!(bulk_operation.id = %op.id, error = %err.detail(), "writing a batch through to the record store failed");
                }
            }));
        }
        Ok(true)
    }

    /// Waits `duration`, keeping the lease; ends early when a cancel is asked or the
    /// worker lost the operation (the run's next step sees which).
    async fn pause(&mut self, duration: Duration) -> AppResult<()> {
        let until = tokio::time::Instant::now() + duration;
        let mut renewed = tokio::time::Instant::now();
        while tokio::time::Instant::now() < until {
            tokio::time::sleep_until(until.min(tokio::time::Instant::now() + CANCEL_POLL)).await;
            let stop = bulk_operation::Entity::find_by_id(self.op.id)
                .one(self.runner.db.conn())
                .await?
                .is_none_or(|op| op.cancel_requested || op.locked_by != self.op.locked_by);
            if stop || self.runner.stop.is_cancelled() {
                return Ok(());
            }
            if renewed.elapsed() >= self.runner.settings.lease / 3 {
                if !self.renew(Renewal::Lease).await? {
                    return Ok(());
                }
                renewed = tokio::time::Instant::now();
            }
        }
        Ok(())
    }

    /// Renews the lease every third of it; returns when the worker has lost the operation.
    async fn hold_lease(&self) {
        let lease = self.runner.settings.lease;
        let worker = self.op.locked_by.clone().unwrap_or_default();
        let mut renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(lease / 3).await;
            match jobs::renew(self.runner.db, self.op.id, &worker, lease, Renewal::Lease).await {
                Ok(Some(_)) => renewed = tokio::time::Instant::now(),
                Ok(None) => return,
                // Another worker may take the operation over once the lease runs out: stop
                // writing well before, rather than write beside it.
                Err(err) if renewed.elapsed() >= lease * 2 / 3 => {
                    tracing::warn!(bulk_operation.id = %self.op.id, error = %err.detail(), "the lease could not be renewed; the write is given up");
                    return;
                }
                Err(err) => {
                    tracing::warn!(bulk_operation.id = %self.op.id, error = %err.detail(), "renewing a bulk operation's lease failed");
                }
            }
        }
    }
}

/// Stores the records a batch wrote in the record store, with their `records.changed`
/// event, in one transaction that takes the connection's row first (docs/architecture.md,
/// "Locks"), as a sync page does.
async fn write_through(
    db: &Db,
    op: &bulk_operation::Model,
    written: Vec<records::Written>,
) -> AppResult<()> {
    let (connection_id, entity) = (op.connection_id, op.entity);
    let txn = db.begin_write().await?;
    connections::lock(&*txn, connection_id).await?;
    // Created records are new; updated ones keep the fields the write did not set.
    let existing: HashMap<String, entity::record::Model> = if op.operation == WriteOperation::Update
    {
        let keys: Vec<records::RecordKey> = written
            .iter()
            .map(|w| (connection_id, entity, w.key.clone()))
            .collect();
        records::find_by_keys(&*txn, &keys)
            .await?
            .into_iter()
            .map(|((_, _, key), model)| (key, model))
            .collect()
    } else {
        HashMap::new()
    };
    let page = records::prepare_written(&existing, written);
    let outcome = records::apply_page(&txn, connection_id, entity, page, None).await?;
    let mut changed = records::Changed::default();
    changed.add(outcome);
    if !changed.is_empty() {
        let mut data = changed.event_data(entity);
        data["bulk_operation_id"] =
            Value::from(crate::ids::encode(crate::ids::Kind::BulkOperation, op.id));
        let event_type = EventType::RecordsChanged;
        events::record_for_connection(&*txn, op.account_id, connection_id, event_type, data)
            .await?;
    }
    txn.commit().await?;
    Ok(())
}

/// What a written record does to the record store: created and updated records carry the
/// fields written, a deleted one none.
fn written(
    operation: WriteOperation,
    record: &bulk_record::Model,
    key: &str,
) -> Option<records::Written> {
    let fields = match operation {
        WriteOperation::Delete => None,
        _ => Some(record.data.as_object()?.clone()),
    };
    let key = match (operation, record.data.get("key").and_then(Value::as_str)) {
        (WriteOperation::Create, _) | (_, None) => key.to_owned(),
        (_, Some(given)) => given.to_owned(),
    };
    Some(records::Written { key, fields })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_stable_per_record() {
        let id = Uuid::nil();
        assert_eq!(idempotency_key(id, 7), idempotency_key(id, 7));
        assert_ne!(idempotency_key(id, 7), idempotency_key(id, 8));
        assert!(idempotency_key(id, 7).len() < 64);
    }
}
