//! Executes one sync run: entity by entity, page by page. Each page, its records, the cursor
//! that follows it, the run's counts and its lease commit together, so a run that stops
//! anywhere (failure, cancel, crash) resumes after the last committed page.

use sea_orm::ActiveEnum as _;
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
};
use serde_json::{Value, json};
use tokio::time::Instant;
use uuid::Uuid;

use super::{
    SyncErrorCode, SyncKind, SyncStatus, disconnected, finish, record_run_event, run_summary,
};
use crate::{
    catalog::{EntityType, System},
    connections::{self, ConnectionStatus, CredentialsError, Scope},
    connectors::{self, Connector, ConnectorError, ReadRequest, RemotePage, http::Outbound},
    crypto::Cipher,
    db::Db,
    error::{AppError, AppResult},
    events::EventType,
    flows::trigger::{self, FlowSet},
    metrics::FlowMetrics,
    notify::Notice,
    records::{self, PageOutcome},
};
use entity::{connection, sync_cursor, sync_run};

/// Settings every run shares.
#[derive(Clone)]
pub struct EngineSettings {
    pub page_size: usize,
    pub requests_per_second: u32,
    pub lease: Duration,
    /// Retries of an unreachable or failing remote within a run, before the run fails.
    pub retries: u32,
    /// Attempts a run that fails unexpectedly is given before it ends `MAX_ATTEMPTS`.
    pub max_attempts: u32,
}

/// Why a run stopped early.
enum Stop {
    Cancelled,
    /// Another worker holds the run now (this one's lease expired), or it was finished
    /// elsewhere: this worker writes nothing more to it.
    LeaseLost,
    /// The remote refused a continuation token (say, an expired one): a saved one makes the
    /// pass start over; one the remote has just given fails the run (REMOTE_ERROR).
    CursorRejected(String),
    Failed {
        code: SyncErrorCode,
        message: String,
        status: Option<ConnectionStatus>,
        /// The remote's error kind, when the remote ended the run (a `system.error`).
        remote: Option<&'static str>,
    },
    Internal(AppError),
}

impl From<AppError> for Stop {
    fn from(err: AppError) -> Self {
        Stop::Internal(err)
    }
}

impl From<sea_orm::DbErr> for Stop {
    fn from(err: sea_orm::DbErr) -> Self {
        Stop::Internal(err.into())
    }
}

pub struct Engine<'a> {
    pub db: &'a Db,
    pub cipher: &'a Cipher,
    pub outbound: &'a Outbound,
    pub settings: &'a EngineSettings,
    pub worker: &'a str,
    /// Counters of the flows evaluated against the runs' changes.
    pub flow_metrics: &'a FlowMetrics,
}

/// Counts of one entity in one run (stored in `sync_runs.stats`).
#[derive(Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct EntityStats {
    pub added: i64,
    pub updated: i64,
    pub deleted: i64,
    pub unchanged: i64,
    #[serde(default)]
    pub skipped: i64,
    #[serde(default)]
    pub rate_limited: i64,
    #[serde(default)]
    pub done: bool,
    /// The first records the mapping refused, with why (at most `MAX_RECORD_ERRORS`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<RecordError>,
}

/// A remote record the run could not map (it was skipped; the run went on).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct RecordError {
    pub key: String,
    pub message: String,
}

/// Refused records kept per entity and run; the rest are only counted (`skipped`).
pub const MAX_RECORD_ERRORS: usize = 20;

/// A run's counts per entity type, in catalog order.
pub fn stats_of(run: &sync_run::Model) -> AppResult<BTreeMap<EntityType, EntityStats>> {
    serde_json::from_value(run.stats.clone()).map_err(|err| {
        AppError::internal(anyhow::anyhow!(
            "sync_runs.stats of {} cannot be read: {err}",
            run.id
        ))
    })
}

struct Progress {
    run: sync_run::Model,
    stats: BTreeMap<EntityType, EntityStats>,
    last_progress_event: Instant,
}

/// A connection status a run observed, and the (sealed) credentials it observed it with.
struct Observed {
    status: ConnectionStatus,
    reason: String,
    credentials: Option<Vec<u8>>,
}

impl Observed {
    fn new(connection: &connection::Model, status: ConnectionStatus, reason: String) -> Self {
        Observed {
            status,
            reason,
            credentials: connection.credentials.clone(),
        }
    }
}

/// What a page's flows look at: the stored versions of its records before the write, the
/// new unified fields, the flows' evaluations of them as created records, the keys the write
/// added or changed, and the keys it deleted.
struct ChangesSeen {
    before: HashMap<String, records::Stored>,
    after: HashMap<String, Value>,
    presumed: Option<trigger::Presumed>,
    written: Vec<String>,
    deleted: Vec<String>,
}

/// Paces a run's requests to the remote and counts the rate limits it met.
struct Pacer {
    /// The connection's outbound rate limit, shared with its bulk writes.
    pace: connectors::Pace,
    /// Rate limits met since the last page was handed over.
    rate_limited: i64,
}

/// The pass one entity's pages belong to.
struct PassState<'a> {
    entity: EntityType,
    kind: SyncKind,
    cursor: &'a sync_cursor::Model,
    /// The pass mark of a full read (records it sees are kept; the rest are deleted at its end).
    seen: Option<Uuid>,
    /// The flows that look at this pass's changes, if any.
    flows: Option<Arc<FlowSet>>,
    /// With flows, when the connection had no record of the entity as the pass began (its
    /// first sync): hashes of the keys the pass has written since. A page's other keys are
    /// not stored, so their stored versions are not looked up. (A bulk write's
    /// write-through racing the first sync may store one meanwhile: that record is then
    /// taken for created, which the flows did not see either.)
    written: Option<std::sync::Mutex<HashSet<u64>>>,
    /// The flows' counts not saved yet, and when they were last saved: they are saved at
    /// most once a second, and at the end of the pass.
    unsaved: std::sync::Mutex<(trigger::Stats, Instant)>,
}

impl PassState<'_> {
    /// The keys of `page` whose stored versions the flows need.
    fn may_be_stored(&self, page: &FetchedPage) -> Vec<String> {
        let keys = page.records.keys();
        let Some(written) = &self.written else {
            return keys;
        };
        let mut written = written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (seen, new): (Vec<String>, Vec<String>) = keys
            .into_iter()
            .partition(|key| written.contains(&key_hash(key)));
        written.extend(new.iter().map(|key| key_hash(key)));
        seen
    }
}

fn key_hash(key: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(key)
}

/// How often a pass saves its flows' counters (and at its end).
const FLOW_STATS_EVERY: Duration = Duration::from_secs(1);

/// Where a pass reads from, and the flows that look at what it reads.
struct Source<'a> {
    connector: &'a Arc<dyn Connector>,
    entity: EntityType,
    flows: Option<Arc<FlowSet>>,
}

/// A page read from the remote, ready to store.
struct FetchedPage {
    records: records::PreparedPage,
    /// With flows: the records' unified fields by key, and the flows evaluated on them as
    /// if each were created.
    for_flows: Option<(HashMap<String, Value>, trigger::Presumed)>,
    next_cursor: Option<String>,
    high_water_mark: Option<String>,
}

impl Engine<'_> {
    /// Runs a claimed run to its end (or to a stop that leaves it resumable).
    pub async fn execute(&self, run: sync_run::Model) -> AppResult<sync_run::Model> {
        let scope = Scope::account(run.account_id);
        let connection = connections::find(self.db.conn(), scope, run.connection_id).await?;
        if connection.status == ConnectionStatus::Disconnected {
            return self
                .close(run, SyncStatus::Cancelled, Some(disconnected()), None)
                .await;
        }
        if run.cancel_requested {
            // Asked while no worker held it (between failed attempts, or before a takeover).
            let cancelled = (SyncErrorCode::Cancelled, "cancelled".to_owned());
            return self
                .close(run, SyncStatus::Cancelled, Some(cancelled), None)
                .await;
        }
        let credentials = match connections::open_credentials(self.cipher, &connection) {
            Ok(credentials) => credentials,
            // No attempt can read them: the run ends now, and the connection asks for new ones.
            Err(CredentialsError::Unreadable(why)) => {
                tracing::warn!(sync_run.id = %run.id, reason = %why, "the run's credentials are unreadable");
                let reason = connections::UNREADABLE_CREDENTIALS_REASON.to_owned();
                let error = (SyncErrorCode::CredentialsUnreadable, reason.clone());
                return self
                    .close(
                        run,
                        SyncStatus::Failed,
                        Some(error),
                        Some(Observed::new(
                            &connection,
                            ConnectionStatus::AuthRequired,
                            reason,
                        )),
                    )
                    .await;
            }
            // Disconnected since it was read above.
            Err(CredentialsError::Disconnected) => {
                return self
                    .close(run, SyncStatus::Cancelled, Some(disconnected()), None)
                    .await;
            }
        };
        let system = connections::system(&connection)?;
        let connector: Arc<dyn Connector> =
            connectors::connect(system, connection.id, &credentials, self.outbound, self.db).into();
        let mut pacer = Pacer {
            pace: self.outbound.pace(connection.id),
            rate_limited: 0,
        };
        let mut step = if run.attempts <= 1 {
            self.begin(connector.as_ref(), &run, &mut pacer)
                .await
                .map_err(|stop| (None, stop))
        } else {
            Ok(())
        };
        let mut progress = Progress {
            stats: stats_of(&run)?,
            run,
            last_progress_event: Instant::now(),
        };
        for entity in system.entities {
            if step.is_err() {
                break;
            }
            step = self
                .sync_entity(&connection, &connector, *entity, &mut progress, &mut pacer)
                .await
                .map_err(|stop| (Some(*entity), stop));
        }
        if let Err((entity, stop)) = step {
            return self
                .stopped(&connection, system, progress.run, entity, stop)
                .await;
        }
        let online = (connection.status != ConnectionStatus::Online)
            .then(|| Observed::new(&connection, ConnectionStatus::Online, String::new()));
        self.close(progress.run, SyncStatus::Succeeded, None, online)
            .await
    }

    /// Opens the run's session with the remote and records `sync.started` (a run's first
    /// attempt only, not a resumed one).
    async fn begin(
        &self,
        connector: &dyn Connector,
        run: &sync_run::Model,
        pacer: &mut Pacer,
    ) -> Result<(), Stop> {
        let open = || connector.begin_sync();
        self.call(open, false, pacer, run.id).await?;
        let txn = self.db.begin_write().await?;
        // The connection's row before the event log (docs/architecture.md, "Locks").
        connections::lock(&*txn, run.connection_id).await?;
        record_run_event(&*txn, run, EventType::SyncStarted, run_summary(run)).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Ends a run that stopped before its last entity (at its start when `entity` is none).
    /// A run whose connection was disconnected meanwhile (its remote then refuses it, too)
    /// ends `CANCELLED` by the disconnect.
    async fn stopped(
        &self,
        connection: &connection::Model,
        system: &System,
        run: sync_run::Model,
        entity: Option<EntityType>,
        stop: Stop,
    ) -> AppResult<sync_run::Model> {
        let system_error = |kind: &str, message: &str| {
            json!({ "operation": "sync", "sync_run_id": crate::ids::encode(crate::ids::Kind::SyncRun, run.id),
                    "system": system.key, "entity": entity.map(|e| e.to_value()),
                    "error_kind": kind, "message": message })
        };
        if let Stop::Cancelled | Stop::Failed { .. } = stop {
            let scope = Scope::account(connection.account_id);
            let current = connections::find(self.db.conn(), scope, connection.id).await?;
            if current.status == ConnectionStatus::Disconnected {
                return self
                    .close(run, SyncStatus::Cancelled, Some(disconnected()), None)
                    .await;
            }
        }
        match stop {
            Stop::Cancelled => {
                let cancelled = (SyncErrorCode::Cancelled, "cancelled".into());
                self.close(run, SyncStatus::Cancelled, Some(cancelled), None)
                    .await
            }
            Stop::Failed {
                code,
                message,
                status,
                remote,
            } => {
                let reported = remote.map(|kind| system_error(kind, &message));
                let status = status.map(|s| Observed::new(connection, s, message.clone()));
                let error = Some((code, message));
                self.close_reporting(run, SyncStatus::Failed, error, status, reported)
                    .await
            }
            // A token the remote gave and refused at once: not something a retry mends.
            Stop::CursorRejected(message) => {
                let reported = Some(system_error("VALIDATION", &message));
                let error = Some((SyncErrorCode::RemoteError, message));
                self.close_reporting(run, SyncStatus::Failed, error, None, reported)
                    .await
            }
            Stop::LeaseLost => Ok(self.lease_lost(run).await),
            Stop::Internal(err) => Err(err),
        }
    }

    /// Ends the run, and sets the connection's status with it, in one transaction, provided
    /// this worker still holds the run.
    async fn close(
        &self,
        run: sync_run::Model,
        to: SyncStatus,
        error: Option<(SyncErrorCode, String)>,
        connection_status: Option<Observed>,
    ) -> AppResult<sync_run::Model> {
        self.close_reporting(run, to, error, connection_status, None)
            .await
    }

    /// `close`, storing a `system.error` event with `system_error` as its data too.
    async fn close_reporting(
        &self,
        run: sync_run::Model,
        to: SyncStatus,
        error: Option<(SyncErrorCode, String)>,
        connection_status: Option<Observed>,
        system_error: Option<Value>,
    ) -> AppResult<sync_run::Model> {
        let txn = self.db.begin_write().await?;
        let scope = Scope::account(run.account_id);
        // Locks in the order every writer takes them (docs/architecture.md, "Locks"): the
        // connection's row first, whether or not its status changes, then the run's, then
        // the event log's sequence (`finish` and `set_status` record events). Taken the
        // other way round, a check or a credentials update of the connection, which lock
        // the connection and then record an event, deadlocked with this on PostgreSQL.
        let current = connections::find_for_update(&*txn, scope, run.connection_id).await?;
        let Some(closed) = finish(&*txn, run.clone(), to, error).await? else {
            drop(txn);
            return Ok(self.lease_lost(run).await);
        };
        if let Some(data) = system_error {
            record_run_event(&*txn, &closed, EventType::SystemError, data).await?;
        }
        // What a run saw with credentials that were replaced since says nothing of the new
        // ones (`updateConnectionCredentials` probed those and set the status itself).
        if let Some(seen) = connection_status
            && current.status != ConnectionStatus::Disconnected
            && current.credentials == seen.credentials
        {
            let reason = (!seen.reason.is_empty()).then_some(seen.reason);
            connections::set_status(&*txn, current, seen.status, reason).await?;
        }
        txn.commit().await?;
        Ok(closed)
    }

    /// The run as it now stands, when this worker found it no longer holds it.
    async fn lease_lost(&self, run: sync_run::Model) -> sync_run::Model {
        tracing::info!(sync_run.id = %run.id, worker = self.worker, "the run's lease was taken over; this worker leaves it");
        sync_run::Entity::find_by_id(run.id)
            .one(self.db.conn())
            .await
            .ok()
            .flatten()
            .unwrap_or(run)
    }

    /// Syncs one entity type. The next page is read and prepared while the current one is
    /// written, so the remote, the unifying and the database work side by side; pages still
    /// commit one by one, in order, each with the cursor that follows it.
    async fn sync_entity(
        &self,
        connection: &connection::Model,
        connector: &Arc<dyn Connector>,
        entity: EntityType,
        progress: &mut Progress,
        pacer: &mut Pacer,
    ) -> Result<(), Stop> {
        if progress.stats.get(&entity).is_some_and(|s| s.done) {
            return Ok(());
        }
        let kind = progress.run.kind;
        let run_id = progress.run.id;
        let mut stats = trigger::Stats::new();
        let flows = FlowSet::load(self.db.conn(), connection, entity, &mut stats).await?;
        self.save_flow_stats(stats).await;
        let source = Source {
            connector,
            entity,
            flows: flows.clone(),
        };
        let (cursor, fetched) = self
            .open_pass(connection.id, &source, kind, pacer, run_id)
            .await?;
        let written = match &flows {
            Some(_) if !records::any_stored(self.db.conn(), connection.id, entity).await? => {
                Some(std::sync::Mutex::default())
            }
            _ => None,
        };
        let pass = PassState {
            entity,
            kind,
            cursor: &cursor,
            seen: full_read(&cursor, kind).then_some(cursor.pass_id).flatten(),
            flows,
            written,
            unsaved: std::sync::Mutex::new((trigger::Stats::new(), Instant::now())),
        };
        let result = self
            .read_pass(connection, &source, &pass, fetched, progress, pacer)
            .await;
        // What the flows counted since they were last saved.
        let unsaved = std::mem::take(
            &mut pass
                .unsaved
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0,
        );
        self.save_flow_stats(unsaved).await;
        result
    }

    /// Reads and writes a pass's pages, from its first (`fetched`) to its last.
    async fn read_pass(
        &self,
        connection: &connection::Model,
        source: &Source<'_>,
        pass: &PassState<'_>,
        mut fetched: Result<FetchedPage, Stop>,
        progress: &mut Progress,
        pacer: &mut Pacer,
    ) -> Result<(), Stop> {
        let (entity, run_id) = (pass.entity, progress.run.id);
        let mut request = self.first_request(pass.cursor, pass.kind);
        let mut changed = records::Changed::default();
        loop {
            let page = fetched?;
            let stats = progress.stats.entry(entity).or_default();
            stats.rate_limited += std::mem::take(&mut pacer.rate_limited);
            self.check_cancel(&progress.run).await?;
            let Some(next_cursor) = page.next_cursor.clone() else {
                return self
                    .write_page(connection, pass, page, progress, &mut changed)
                    .await;
            };
            if request.cursor.as_ref() == Some(&next_cursor) {
                // The page is not stored: its cursor would send every later run round the
                // same loop.
                return Err(repeated_token(entity));
            }
            request.cursor = Some(next_cursor);
            let write = self.write_page(connection, pass, page, progress, &mut changed);
            // A failed write stops at once; a failed read waits for the write before it.
            let read = async { Ok(self.fetch_page(source, &request, pacer, run_id).await) };
            let ((), next) = tokio::try_join!(write, read)?;
            fetched = next;
        }
    }

    /// Reads one page and prepares it for the store. Preparing (unify, serialize, hash) is
    /// CPU work: on a blocking thread it runs beside the write of the previous page, where
    /// on this task it would take turns with that write's own work.
    async fn fetch_page(
        &self,
        source: &Source<'_>,
        request: &ReadRequest,
        pacer: &mut Pacer,
        run_id: Uuid,
    ) -> Result<FetchedPage, Stop> {
        let (connector, entity) = (source.connector, source.entity);
        let mut page = self
            .fetch(connector.as_ref(), entity, request, pacer, run_id)
            .await?;
        // A remote whose pages are smaller than the run's page size (MaintainX and SAP serve
        // 100 records a request) is read on until the page size is reached: each committed
        // page costs a transaction, and one per 100 records would cost more than the reading.
        let mut request = request.clone();
        while page.records.len() < self.settings.page_size
            && let Some(next) = page.next_cursor.clone()
        {
            if request.cursor.as_ref() == Some(&next) {
                return Err(repeated_token(entity));
            }
            request.cursor = Some(next);
            let more = self
                .fetch(connector.as_ref(), entity, &request, pacer, run_id)
                .await?;
            page.records.extend(more.records);
            page.next_cursor = more.next_cursor;
            page.high_water_mark = more.high_water_mark;
        }
        let unifier = Arc::clone(connector);
        let flows = source.flows.clone();
        let (records, for_flows) = tokio::task::spawn_blocking(move || {
            // The flows' work that needs no database, done here beside the previous page's
            // write: the records' unified fields, and their evaluation as if each were new
            // (most records of a first sync are).
            let Some(set) = flows else {
                let records = records::prepare_page(unifier.as_ref(), entity, page.records);
                return (records, None);
            };
            let mut records = records::prepare_page_keeping(unifier.as_ref(), entity, page.records);
            let unified = records.take_unified();
            let presumed = trigger::presume_created(&set, &unified, Utc::now());
            (records, Some((unified, presumed)))
        })
        .await
        .map_err(|err| AppError::internal(anyhow::anyhow!("preparing a page: {err}")))?;
        Ok(FetchedPage {
            records,
            for_flows,
            next_cursor: page.next_cursor,
            high_water_mark: page.high_water_mark,
        })
    }

    /// Commits one page: its records, the cursor that follows it and the run's counts; after
    /// the last page of a full read, the deletion of what the pass did not see and the
    /// entity's `records.changed` event.
    async fn write_page(
        &self,
        connection: &connection::Model,
        pass: &PassState<'_>,
        mut page: FetchedPage,
        progress: &mut Progress,
        changed: &mut records::Changed,
    ) -> Result<(), Stop> {
        let done = page.next_cursor.is_none();
        let txn = self.db.begin_write().await?;
        // The connection's row first: the page's records, the run's row and the event log
        // follow (docs/architecture.md, "Locks").
        connections::lock(&*txn, connection.id).await?;
        // What the page's flows compare with: the stored versions of its records, and the
        // new ones, read before the write replaces them.
        let before = match &pass.flows {
            Some(_) => {
                let stored = records::stored(
                    &*txn,
                    connection.id,
                    pass.entity,
                    &pass.may_be_stored(&page),
                )
                .await?;
                let (unified, presumed) = match page.for_flows {
                    Some((unified, presumed)) => (unified, Some(presumed)),
                    None => (page.records.take_unified(), None),
                };
                Some((stored, unified, presumed))
            }
            None => None,
        };
        let outcome =
            records::apply_page(&txn, connection.id, pass.entity, page.records, pass.seen).await?;
        let mut deleted: Vec<String> = outcome.deleted.clone();
        let stats = progress.stats.entry(pass.entity).or_default();
        count(stats, &outcome);
        if done && let Some(seen) = pass.seen {
            let gone = records::delete_unseen(&*txn, connection.id, pass.entity, seen).await?;
            stats.deleted += gone.len() as i64;
            if pass.flows.is_some() {
                deleted.extend(gone.iter().cloned());
            }
            changed.deleted.add(gone);
        }
        let written: Vec<String> = match &pass.flows {
            Some(_) => outcome
                .added
                .iter()
                .chain(&outcome.updated)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        if done {
            stats.done = true;
        }
        changed.add(outcome);
        let cursor_row = sync_cursor::ActiveModel {
            connection_id: Set(connection.id),
            entity: Set(pass.entity),
            mark: if done {
                Set(page.high_water_mark.or(pass.cursor.mark.clone()))
            } else {
                Set(pass.cursor.mark.clone())
            },
            pass_id: Set(pass.cursor.pass_id),
            pass_kind: Set(Some(pass.kind)),
            pass_cursor: Set(page.next_cursor),
            pass_done: Set(done),
        };
        cursor_row.update(&*txn).await?;
        self.save_progress(&*txn, progress, done).await?;
        // The flows' bulk operations and events come after the records, the cursor and the
        // run (docs/architecture.md, "Locks").
        let mut flow_stats = None;
        if let (Some(flows), Some((before, after, presumed))) = (&pass.flows, before) {
            let changes = ChangesSeen {
                before,
                after,
                presumed,
                written,
                deleted,
            };
            let (counts, queued) = self.run_flows(&*txn, flows, changes).await?;
            flow_stats = Some(counts);
            if queued {
                txn.after_commit(Notice::BulkQueued);
            }
        }
        if done && !changed.is_empty() {
            record_run_event(
                &*txn,
                &progress.run,
                EventType::RecordsChanged,
                changed.event_data(pass.entity),
            )
            .await?;
        }
        txn.commit().await?;
        if let Some(counts) = flow_stats {
            let due = {
                let mut unsaved = pass
                    .unsaved
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                trigger::add_stats(&mut unsaved.0, counts);
                (unsaved.1.elapsed() >= FLOW_STATS_EVERY).then(|| {
                    unsaved.1 = Instant::now();
                    std::mem::take(&mut unsaved.0)
                })
            };
            if let Some(due) = due {
                self.save_flow_stats(due).await;
            }
        }
        Ok(())
    }

    /// Evaluates a page's flows against its changes and carries out their matches, in the
    /// page's transaction; the flows' counts, and whether a bulk write was queued.
    async fn run_flows(
        &self,
        txn: &impl ConnectionTrait,
        flows: &Arc<FlowSet>,
        seen: ChangesSeen,
    ) -> AppResult<(trigger::Stats, bool)> {
        let ChangesSeen {
            before,
            mut after,
            presumed,
            written,
            deleted,
        } = seen;
        let entity = flows.entity;
        let deleted = if deleted.is_empty() || !flows.wants(crate::flows::Change::Deleted) {
            Default::default()
        } else {
            records::stored(txn, flows.connection_id(), entity, &deleted).await?
        };
        let changes = trigger::page_changes(entity, &before, &mut after, &written, deleted);
        if changes.is_empty() {
            return Ok((trigger::Stats::new(), false));
        }
        let now = Utc::now();
        let (changes, mut evaluation) = if trigger::all_presumed(flows, &changes, presumed.as_ref())
        {
            let evaluation = trigger::evaluate(flows, &changes, now, presumed.as_ref());
            (changes, evaluation)
        } else {
            let set = Arc::clone(flows);
            tokio::task::spawn_blocking(move || {
                let evaluation = trigger::evaluate(&set, &changes, now, presumed.as_ref());
                (changes, evaluation)
            })
            .await
            .map_err(|err| AppError::internal(anyhow::anyhow!("evaluating flows: {err}")))?
        };
        let queued = trigger::act(txn, flows, &changes, &mut evaluation, now).await?;
        Ok((evaluation.stats, queued))
    }

    /// Saves flows' counts; a failure is logged, never fails the run (they are counters).
    async fn save_flow_stats(&self, stats: trigger::Stats) {
        if stats.is_empty() {
            return;
        }
        if let Err(err) = trigger::save_stats(self.db, self.flow_metrics, stats).await {
            tracing::warn!(error = %err.detail(), "saving flow counters failed");
        }
    }

    /// The entity's pass (the one a failed or interrupted run left, or a new one) and its
    /// first page. A saved continuation token the remote no longer accepts (tokens expire)
    /// does not fail every later run: the pass starts over from the beginning.
    async fn open_pass(
        &self,
        connection_id: Uuid,
        source: &Source<'_>,
        kind: SyncKind,
        pacer: &mut Pacer,
        run_id: Uuid,
    ) -> Result<(sync_cursor::Model, Result<FetchedPage, Stop>), Stop> {
        let entity = source.entity;
        let cursor = self.start_pass(connection_id, entity, kind, false).await?;
        let request = self.first_request(&cursor, kind);
        match self.fetch_page(source, &request, pacer, run_id).await {
            Err(Stop::CursorRejected(why)) if cursor.pass_cursor.is_some() => {
                tracing::warn!(entity = entity.to_value(), reason = %why, "the remote refused the saved continuation token; the pass starts over");
                let cursor = self.start_pass(connection_id, entity, kind, true).await?;
                let request = self.first_request(&cursor, kind);
                let fetched = self.fetch_page(source, &request, pacer, run_id).await;
                Ok((cursor, fetched))
            }
            fetched => Ok((cursor, fetched)),
        }
    }

    /// The request for a pass's first page (or the first after where it stopped).
    fn first_request(&self, cursor: &sync_cursor::Model, kind: SyncKind) -> ReadRequest {
        ReadRequest {
            cursor: cursor.pass_cursor.clone(),
            modified_since: if full_read(cursor, kind) {
                None
            } else {
                cursor.mark.clone()
            },
            page_size: self.settings.page_size,
        }
    }

    /// The cursor row of the entity, with a pass to continue or a new one (`fresh`: a new
    /// one in any case).
    async fn start_pass(
        &self,
        connection_id: Uuid,
        entity: EntityType,
        kind: SyncKind,
        fresh: bool,
    ) -> Result<sync_cursor::Model, Stop> {
        let txn = self.db.begin_write().await?;
        let existing = sync_cursor::Entity::find_by_id((connection_id, entity))
            .one(&*txn)
            .await?;
        let resumable = !fresh
            && existing
                .as_ref()
                .is_some_and(|c| !c.pass_done && c.pass_kind == Some(kind) && c.pass_id.is_some());
        let cursor = match existing {
            Some(cursor) if resumable => cursor,
            Some(cursor) => {
                let mut active: sync_cursor::ActiveModel = cursor.into();
                active.pass_id = Set(Some(crate::ids::new_id()));
                active.pass_kind = Set(Some(kind));
                active.pass_cursor = Set(None);
                active.pass_done = Set(false);
                active.update(&*txn).await?
            }
            None => {
                sync_cursor::ActiveModel {
                    connection_id: Set(connection_id),
                    entity: Set(entity),
                    mark: Set(None),
                    pass_id: Set(Some(crate::ids::new_id())),
                    pass_kind: Set(Some(kind)),
                    pass_cursor: Set(None),
                    pass_done: Set(false),
                }
                .insert(&*txn)
                .await?
            }
        };
        txn.commit().await?;
        Ok(cursor)
    }

    async fn check_cancel(&self, run: &sync_run::Model) -> Result<(), Stop> {
        let current = sync_run::Entity::find_by_id(run.id)
            .one(self.db.conn())
            .await?;
        match current {
            Some(current) if current.cancel_requested => Err(Stop::Cancelled),
            Some(current) if current.locked_by.as_deref() != Some(self.worker) => {
                Err(Stop::LeaseLost)
            }
            _ => Ok(()),
        }
    }

    /// Extends the run's lease by a whole lease, in `txn`, if this worker still holds it;
    /// whether the run has been asked to stop.
    async fn renew_lease(&self, txn: &impl ConnectionTrait, run_id: Uuid) -> Result<bool, Stop> {
        let until =
            Utc::now() + chrono::Duration::from_std(self.settings.lease).unwrap_or_default();
        let renewed = sync_run::Entity::update_many()
            .col_expr(sync_run::Column::LockedUntil, Some(until).into())
            .filter(sync_run::Column::Id.eq(run_id))
            .filter(sync_run::Column::LockedBy.eq(self.worker))
            .filter(sync_run::Column::Status.eq(SyncStatus::Running))
            .exec_with_returning(txn)
            .await?;
        match renewed.first() {
            Some(run) => Ok(run.cancel_requested),
            None => Err(Stop::LeaseLost),
        }
    }

    /// Keeps the run's lease while the remote is waited for (a slow read, a `Retry-After`,
    /// a backoff): renews it every third of a lease. Ends only with a reason to stop: a
    /// cancel, a lost lease or a database error.
    async fn hold_lease(&self, run_id: Uuid) -> Stop {
        loop {
            tokio::time::sleep(self.settings.lease / 3).await;
            let renewed = async {
                let txn = self.db.begin_write().await?;
                let cancel = self.renew_lease(&*txn, run_id).await?;
                txn.commit().await?;
                Ok::<_, Stop>(cancel)
            };
            match renewed.await {
                Ok(false) => {}
                Ok(true) => return Stop::Cancelled,
                Err(stop) => return stop,
            }
        }
    }

    /// Waits `duration` under `hold_lease`.
    async fn wait(&self, duration: Duration, run_id: Uuid) -> Result<(), Stop> {
        tokio::select! {
            () = tokio::time::sleep(duration) => Ok(()),
            stop = self.hold_lease(run_id) => Err(stop),
        }
    }

    /// Reads one page, pacing requests and riding out rate limits and short outages.
    async fn fetch(
        &self,
        connector: &dyn Connector,
        entity: EntityType,
        request: &ReadRequest,
        pacer: &mut Pacer,
        run_id: Uuid,
    ) -> Result<RemotePage, Stop> {
        let read = || connector.read_page(entity, request);
        self.call(read, request.cursor.is_some(), pacer, run_id)
            .await
    }

    /// Makes one request of the remote (`request`), paced, riding out rate limits and short
    /// outages, and turns what the remote answered in the end into why the run stops.
    /// `cursor_given`: the request carried a continuation token (one the remote refuses
    /// makes the pass start over).
    async fn call<T, F: Future<Output = Result<T, ConnectorError>>>(
        &self,
        request: impl Fn() -> F,
        cursor_given: bool,
        pacer: &mut Pacer,
        run_id: Uuid,
    ) -> Result<T, Stop> {
        let mut failures = 0;
        loop {
            pacer.pace.ready().await;
            let answer = tokio::select! {
                answer = request() => answer,
                stop = self.hold_lease(run_id) => return Err(stop),
            };
            match answer {
                Ok(answer) => return Ok(answer),
                Err(ConnectorError::RateLimited { retry_after }) => {
                    // However long the remote keeps saying so: counted, not a failure, and
                    // the run stays cancellable and keeps its lease meanwhile.
                    pacer.rate_limited += 1;
                    self.wait(retry_after.min(Duration::from_secs(60)), run_id)
                        .await?;
                }
                Err(ConnectorError::Validation(why)) if cursor_given => {
                    return Err(Stop::CursorRejected(why));
                }
                Err(err @ ConnectorError::AuthRejected(_)) => {
                    return Err(Stop::Failed {
                        code: SyncErrorCode::AuthRequired,
                        message: err.message(),
                        status: Some(ConnectionStatus::AuthRequired),
                        remote: Some(err.kind()),
                    });
                }
                Err(err @ (ConnectorError::Unreachable(_) | ConnectorError::RemoteFault(_)))
                    if failures < self.settings.retries =>
                {
                    failures += 1;
                    tracing::debug!(error = %err, failures, "remote failed; retrying");
                    self.wait(Duration::from_millis(250 * 2u64.pow(failures)), run_id)
                        .await?;
                }
                Err(err @ ConnectorError::Unreachable(_)) => {
                    return Err(Stop::Failed {
                        code: SyncErrorCode::Offline,
                        message: err.message(),
                        status: Some(ConnectionStatus::Offline),
                        remote: Some(err.kind()),
                    });
                }
                Err(err) => {
                    return Err(Stop::Failed {
                        code: SyncErrorCode::RemoteError,
                        message: err.to_string(),
                        status: None,
                        remote: Some(err.kind()),
                    });
                }
            }
        }
    }

    /// Stores the run's counts and renews its lease, provided this worker still holds it
    /// (else nothing of the page commits); emits `sync.progress` at most once a second.
    async fn save_progress(
        &self,
        txn: &impl ConnectionTrait,
        progress: &mut Progress,
        entity_done: bool,
    ) -> Result<(), Stop> {
        // The lease first: on PostgreSQL this locks the run's row, so no other worker can
        // claim it between this check and the commit.
        self.renew_lease(txn, progress.run.id).await?;
        let totals = progress.stats.values().fold((0, 0, 0), |t, s| {
            (t.0 + s.added, t.1 + s.updated, t.2 + s.deleted)
        });
        let mut active: sync_run::ActiveModel = progress.run.clone().into();
        active.stats = Set(serde_json::to_value(&progress.stats).unwrap_or(Value::Null));
        active.records_added = Set(totals.0);
        active.records_updated = Set(totals.1);
        active.records_deleted = Set(totals.2);
        progress.run = active.update(txn).await?;
        if !entity_done && progress.last_progress_event.elapsed() >= Duration::from_secs(1) {
            progress.last_progress_event = Instant::now();
            record_run_event(
                txn,
                &progress.run,
                EventType::SyncProgress,
                run_summary(&progress.run),
            )
            .await?;
        }
        Ok(())
    }
}

/// Whether the pass reads everything (a full run, or an entity never read before) rather
/// than what changed since the saved mark.
fn full_read(cursor: &sync_cursor::Model, kind: SyncKind) -> bool {
    kind == SyncKind::Full || cursor.mark.is_none()
}

/// A remote that answers a page with the continuation token it was asked for.
fn repeated_token(entity: EntityType) -> Stop {
    Stop::Failed {
        code: SyncErrorCode::RemoteError,
        message: format!(
            "the remote answered {} with the continuation token it was asked for; \
             it would never end",
            entity.to_value()
        ),
        status: None,
        remote: Some("REMOTE_FAULT"),
    }
}

fn count(stats: &mut EntityStats, outcome: &PageOutcome) {
    stats.added += outcome.added.len() as i64;
    stats.updated += outcome.updated.len() as i64;
    stats.deleted += outcome.deleted.len() as i64;
    stats.unchanged += outcome.unchanged as i64;
    stats.skipped += outcome.skipped.len() as i64;
    for (key, why) in &outcome.skipped {
        tracing::warn!(record.key = %key, reason = %why, "malformed remote record skipped");
        if stats.errors.len() < MAX_RECORD_ERRORS {
            stats.errors.push(RecordError {
                key: key.clone(),
                message: why.clone(),
            });
        }
    }
}
