//! The database handle: SQLite (embedded default) or PostgreSQL, and write transactions.
//!
//! SQLite allows one writer at a time and fails a deferred transaction that tries to upgrade
//! to a write while another writer holds the lock ("database is locked"). Writes therefore
//! take an in-process lock before `BEGIN`, so they queue instead of failing; reads run in
//! parallel under WAL. On PostgreSQL the lock is absent and row locks do the work.
//!
//! Committed SQLite pages sit in the write-ahead log until a checkpoint copies them into the
//! database file and fsyncs it. Left to SQLite, the connection that commits does that every
//! 1,000 pages, while it holds the write lock; here [`Db::checkpoint_periodically`] does it
//! on another connection (another thread) shortly after writes, and a writer checkpoints
//! itself only if the log reaches [`WAL_AUTOCHECKPOINT_PAGES`].
//!
//! Migrations ([`Db::migrate`]) run under the SQLite write lock, and on PostgreSQL under an
//! advisory lock, so that processes starting at once on one database migrate in turn.
//!
//! On PostgreSQL a write transaction is not sea-orm's but [`postgres::PgTxn`], which runs
//! sea-orm's statements the same way and `COPY` as well (see that module for why).

mod hot_rows;
pub mod postgres;

use std::{
    ops::Deref,
    sync::{Arc, Weak},
    time::Duration,
};

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, SqliteTransactionMode, TransactionOptions, TransactionTrait,
    sqlx::{
        self, ConnectOptions as _, Connection as _,
        sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
    },
};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    config::Config,
    notify::{Notice, Notifier},
};

/// SQLite: a connection that commits checkpoints the write-ahead log itself once the log
/// holds this many pages (64 MiB at 8 KiB pages; SQLite's default is 1,000). With the
/// background checkpointer on, this is only a bound on the log's size: the log restarts from
/// its beginning only after a checkpoint has copied all of it while no one writes, which the
/// background checkpointer rarely sees during a long run of writes.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 8192;

/// SQLite: a log longer than this is cut back to it when it restarts (bytes), so that one
/// huge transaction does not leave a huge file behind.
const WAL_SIZE_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// The server's settings for every SQLite connection, with a page cache of `cache_mib` MiB
/// (public so that a benchmark's plain pool can use the same).
pub fn sqlite_settings(opts: SqliteConnectOptions, cache_mib: u64) -> SqliteConnectOptions {
    // 8 KiB pages for a new file (an existing one keeps its own): a stored record is
    // ~0.5–1 KiB of JSON text, and a batched insert of such rows ran 10–18 % faster than
    // with 4 KiB pages (BENCHMARKS.md, sync_ingest).
    opts.page_size(8192)
        // Negative: a size in KiB rather than in pages.
        .pragma("cache_size", format!("-{}", cache_mib.saturating_mul(1024)))
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
        .pragma("journal_size_limit", WAL_SIZE_LIMIT_BYTES.to_string())
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        .create_if_missing(true)
}

/// PostgreSQL: the advisory lock migrations run under (an arbitrary constant, `mwmigr`).
const MIGRATION_LOCK: i64 = 0x6d77_6d69_6772;

/// Takes the migration lock on `session`, waiting for the process that holds it.
async fn lock_migrations(session: &mut sqlx::PgConnection) -> Result<(), DbErr> {
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .fetch_one(&mut *session)
        .await
        .map_err(sql_err)?;
    if !locked {
        tracing::info!("another process is migrating the database; waiting for it");
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *session)
            .await
            .map_err(sql_err)?;
    }
    Ok(())
}

fn sql_err(err: sqlx::Error) -> DbErr {
    DbErr::Custom(format!("migration lock: {err}"))
}

#[derive(Clone)]
pub struct Db {
    conn: DatabaseConnection,
    write_lock: Option<Arc<Mutex<()>>>,
    /// Signalled after every committed write transaction (the event feed listens).
    commits: Arc<CommitSignal>,
    /// Signalled after every committed write transaction of this process only (not by
    /// [`Db::wake_readers`]): what other processes are told of.
    local_commits: Arc<Notify>,
    /// PostgreSQL: what committed transactions of this process tell the other processes
    /// (`NOTIFY` channel and payload), for [`Db::announce_commits`] to send.
    outbox: Arc<Outbox>,
    /// Acts on the notices a write transaction carries, once it commits.
    notifier: Notifier,
    /// Counts the statements of PostgreSQL write transactions, which sea-orm does not run.
    statements: Option<prometheus::IntCounter>,
    /// PostgreSQL: the turns of this process's statements at hot rows
    /// ([`WriteTxn::commit_after`]).
    hot_rows: Arc<hot_rows::HotRows>,
}

/// Notifications for the other processes, sent once their transactions committed.
type Outbox = std::sync::Mutex<Vec<(&'static str, String)>>;
/// Notifications waiting in the outbox at most: beyond it (the database unreachable for
/// long), the oldest are dropped; the listeners' periodic reads find what they said.
const OUTBOX_MAX: usize = 10_000;

impl Db {
    pub async fn connect(config: &Config) -> Result<Self, DbErr> {
        let mut options = ConnectOptions::new(config.database.url.clone());
        options
            .max_connections(config.database.max_connections)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .sqlx_logging(false);
        let sqlite = config.is_sqlite();
        if sqlite {
            // An embedded file cannot drop a connection: no ping before each use (one round
            // trip to SQLite's worker thread per statement outside a transaction and per
            // transaction saved).
            options.test_before_acquire(false);
            let cache_mib = config.database.sqlite_cache_mib;
            options.map_sqlx_sqlite_opts(move |opts| sqlite_settings(opts, cache_mib));
        } else {
            // A server connection can die while idle (restart, failover, idle timeout): ping
            // one that has idled a while, not every one on every use.
            options.test_before_acquire_if_idle_for(Duration::from_secs(30));
        }
        let conn = Database::connect(options).await?;
        Ok(Self {
            conn,
            write_lock: sqlite.then(|| Arc::new(Mutex::new(()))),
            commits: Arc::new(CommitSignal::default()),
            local_commits: Arc::new(Notify::new()),
            outbox: Arc::default(),
            notifier: Notifier::default(),
            statements: None,
            hot_rows: Arc::default(),
        })
    }

    /// The listeners that committed writes notify (workers, the authentication cache).
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Counts every SQL statement (for `/metrics`); call before cloning the handle.
    pub fn count_statements(&mut self, counter: prometheus::IntCounter) {
        self.statements = Some(counter.clone());
        self.conn.set_metric_callback(move |_| counter.inc());
    }

    /// Applies pending migrations. On PostgreSQL several processes may start at once on one
    /// database: each migrates under an advisory lock, so they migrate one after another and
    /// all but the first find nothing left to do.
    pub async fn migrate(&self) -> Result<(), DbErr> {
        let _guard = self.lock_writes().await;
        if self.conn.get_database_backend() != DbBackend::Postgres {
            return Migrator::up(&self.conn, None).await;
        }
        // A session-level lock belongs to one session: a connection of its own, outside the
        // pool (which the migrator uses, and which may hold only one connection).
        let options = self.conn.get_postgres_connection_pool().connect_options();
        let mut session = options.connect().await.map_err(sql_err)?;
        lock_migrations(&mut session).await?;
        let migrated = Migrator::up(&self.conn, None).await;
        // Closing the session releases the lock too, and does so if this process dies.
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut session)
            .await;
        let _ = session.close().await;
        migrated?;
        unlocked.map(|_| ()).map_err(sql_err)
    }

    /// The pool, for reads.
    pub fn conn(&self) -> &DatabaseConnection {
        &self.conn
    }

    /// Begins a transaction that may write.
    pub async fn begin_write(&self) -> Result<WriteTxn, DbErr> {
        let guard = self.lock_writes().await;
        // IMMEDIATE takes SQLite's write lock at BEGIN (waiting up to busy_timeout), so a
        // transaction never fails later when its first write would upgrade a stale read.
        let options = TransactionOptions {
            sqlite_transaction_mode: guard.is_some().then_some(SqliteTransactionMode::Immediate),
            ..Default::default()
        };
        let txn = if self.conn.get_database_backend() == DbBackend::Postgres {
            let pool = self.conn.get_postgres_connection_pool();
            TxnConn::Postgres(postgres::PgTxn::begin(pool, self.statements.clone()).await?)
        } else {
            TxnConn::SeaOrm(self.conn.begin_with_options(options).await?)
        };
        Ok(WriteTxn {
            txn,
            commits: self.commits.clone(),
            local_commits: self.local_commits.clone(),
            outbox: self.outbox.clone(),
            notifier: self.notifier.clone(),
            hot_rows: self.hot_rows.clone(),
            notices: std::sync::Mutex::new(Vec::new()),
            announcements: std::sync::Mutex::new(Vec::new()),
            _guard: guard,
        })
    }

    async fn lock_writes(&self) -> Option<OwnedMutexGuard<()>> {
        match &self.write_lock {
            Some(lock) => Some(lock.clone().lock_owned().await),
            None => None,
        }
    }

    /// A new listener, notified after each commit of a write transaction.
    pub fn commits(&self) -> Arc<Notify> {
        self.commits.subscribe()
    }

    /// Wakes the listeners of [`Db::commits`] as a commit of this process would: another
    /// process committed (PostgreSQL `NOTIFY`, heard by the `event-listener` worker).
    pub fn wake_readers(&self) {
        self.commits.notify();
    }

    /// PostgreSQL: tells the other processes on the database of this process's commits, on
    /// a connection of its own and outside every writer's transaction (a `NOTIFY` inside
    /// one holds a cluster-wide lock from its commit's start to its end, the WAL flush
    /// included, so every such commit of every process waits for the one before): one
    /// `NOTIFY` on `channel` per burst of commits, and with it, in the same statement, what
    /// the committed transactions announced ([`WriteTxn::announce`]), until shutdown.
    ///
    /// A notification is sent after its commit, so a process that dies in between never
    /// sends it: every listener also reads the tables it is about on a timer (the event
    /// feed once a second, revocations every [`crate::auth::sockets`] sweep).
    pub async fn announce_commits(self, channel: &'static str, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.local_commits.notified() => {}
            }
            let announced = std::mem::take(&mut *lock_outbox(&self.outbox));
            let mut notices: Vec<[&str; 2]> =
                announced.iter().map(|(c, p)| [*c, p.as_str()]).collect();
            notices.push([channel, ""]);
            let notices = serde_json::to_string(&notices).unwrap_or_default();
            // In order, in one round trip: `[[channel, payload], …]`.
            let notify = sea_orm::Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_notify(n->>0, n->>1) FROM json_array_elements($1::text::json) AS n",
                [notices.into()],
            );
            if let Err(error) = self.conn.execute_raw(notify).await {
                tracing::warn!(%error, "telling other processes of new commits failed");
                // Tried again with the next burst; the listeners' timers find it meanwhile.
                let mut outbox = lock_outbox(&self.outbox);
                let mut kept = announced;
                kept.append(&mut outbox);
                keep_newest(&mut kept);
                *outbox = kept;
            }
        }
    }

    /// SQLite: after each burst of commits, copies the committed pages from the write-ahead
    /// log into the database file (a PASSIVE checkpoint: it never waits for or blocks a
    /// writer or a reader), at most once per `interval`, until `shutdown`. It runs on a pooled
    /// connection of its own, so the copying and the fsyncs overlap the next writes instead
    /// of holding the write lock.
    pub async fn checkpoint_periodically(self, interval: Duration, shutdown: CancellationToken) {
        let commits = self.commits();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = commits.notified() => {}
            }
            if let Err(error) = self
                .conn
                .execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)")
                .await
            {
                // Nothing is lost: the pages stay in the log, and the next checkpoint (or
                // a writer's own, at WAL_AUTOCHECKPOINT_PAGES) copies them.
                tracing::warn!(%error, "SQLite checkpoint failed");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Answers whether the database responds.
    pub async fn ping(&self) -> Result<(), DbErr> {
        self.conn.execute_unprepared("SELECT 1").await.map(|_| ())
    }

    pub async fn close(self) -> Result<(), DbErr> {
        self.conn.close().await
    }
}

/// A write transaction; on SQLite it holds the write lock until commit or drop.
pub struct WriteTxn {
    txn: TxnConn,
    commits: Arc<CommitSignal>,
    local_commits: Arc<Notify>,
    outbox: Arc<Outbox>,
    notifier: Notifier,
    hot_rows: Arc<hot_rows::HotRows>,
    notices: std::sync::Mutex<Vec<Notice>>,
    /// PostgreSQL `NOTIFY`s for the other processes, sent once this transaction commits.
    announcements: std::sync::Mutex<Vec<(&'static str, String)>>,
    _guard: Option<OwnedMutexGuard<()>>,
}

fn lock_outbox(outbox: &Outbox) -> std::sync::MutexGuard<'_, Vec<(&'static str, String)>> {
    outbox.lock().unwrap_or_else(|e| e.into_inner())
}

/// Drops the oldest notifications beyond [`OUTBOX_MAX`].
fn keep_newest(outbox: &mut Vec<(&'static str, String)>) {
    let excess = outbox.len().saturating_sub(OUTBOX_MAX);
    outbox.drain(..excess);
}

impl WriteTxn {
    /// Acts on `notice` once this transaction commits; a rollback drops it.
    pub fn after_commit(&self, notice: Notice) {
        let mut notices = self.notices.lock().unwrap_or_else(|e| e.into_inner());
        if !notices.contains(&notice) {
            notices.push(notice);
        }
    }

    /// PostgreSQL: `NOTIFY channel, payload` to the other processes once this transaction
    /// commits (sent by [`Db::announce_commits`], outside every writer's transaction); a
    /// rollback drops it. Nothing is sent on SQLite, whose processes share no server.
    pub fn announce(&self, channel: &'static str, payload: String) {
        if self.txn.get_database_backend() == DbBackend::Postgres {
            let mut announcements = self.announcements.lock().unwrap_or_else(|e| e.into_inner());
            announcements.push((channel, payload));
        }
    }

    pub async fn commit(self) -> Result<(), DbErr> {
        let (txn, committed) = self.split();
        match txn {
            TxnConn::SeaOrm(txn) => txn.commit().await?,
            TxnConn::Postgres(txn) => txn.commit().await?,
        }
        committed.publish();
        Ok(())
    }

    /// PostgreSQL: runs `sql` as the transaction's last statement and commits in the same
    /// round trip ([`postgres::PgTxn::commit_after`]: values written into `sql`, no
    /// parameters); the rows it returned. When `sql` fails nothing is committed (the
    /// transaction rolls back). A lock `sql` takes is held for it and the commit only, not
    /// also for the time this process takes to send the `COMMIT`. `hot_row` is the row whose
    /// lock `sql` waits for: the statement waits for its turn at that row first
    /// ([`hot_rows`]: at most two of this process at the database at once). SQLite has no
    /// such statement: `Err`.
    pub async fn commit_after(
        self,
        hot_row: Uuid,
        sql: String,
    ) -> Result<Vec<sea_orm::QueryResult>, DbErr> {
        let hot_rows = self.hot_rows.clone();
        let (txn, committed) = self.split();
        let TxnConn::Postgres(txn) = txn else {
            return Err(DbErr::Custom(
                "commit_after runs on PostgreSQL only".to_owned(),
            ));
        };
        let turn = hot_rows.turn(hot_row).await;
        let rows = txn.commit_after(sql).await;
        drop(turn);
        let rows = rows?;
        committed.publish();
        Ok(rows)
    }

    fn split(self) -> (TxnConn, Committed) {
        let committed = Committed {
            commits: self.commits,
            local_commits: self.local_commits,
            outbox: self.outbox,
            notifier: self.notifier,
            notices: self.notices.into_inner().unwrap_or_else(|e| e.into_inner()),
            announcements: self
                .announcements
                .into_inner()
                .unwrap_or_else(|e| e.into_inner()),
            _guard: self._guard,
        };
        (self.txn, committed)
    }
}

/// What a write transaction does once committed (its SQLite write lock held until then).
struct Committed {
    commits: Arc<CommitSignal>,
    local_commits: Arc<Notify>,
    outbox: Arc<Outbox>,
    notifier: Notifier,
    notices: Vec<Notice>,
    announcements: Vec<(&'static str, String)>,
    _guard: Option<OwnedMutexGuard<()>>,
}

impl Committed {
    fn publish(self) {
        if !self.announcements.is_empty() {
            let mut outbox = lock_outbox(&self.outbox);
            outbox.extend(self.announcements);
            keep_newest(&mut outbox);
        }
        self.commits.notify();
        self.local_commits.notify_one();
        for notice in self.notices {
            self.notifier.notify(notice);
        }
    }
}

impl Deref for WriteTxn {
    type Target = TxnConn;
    fn deref(&self) -> &TxnConn {
        &self.txn
    }
}

/// What a write transaction's statements run on. Dropped without a commit, either rolls
/// back.
pub enum TxnConn {
    /// sea-orm's transaction (SQLite).
    SeaOrm(DatabaseTransaction),
    /// PostgreSQL: a transaction that can also `COPY`.
    Postgres(postgres::PgTxn),
}

#[async_trait::async_trait]
impl ConnectionTrait for TxnConn {
    fn get_database_backend(&self) -> DbBackend {
        match self {
            TxnConn::SeaOrm(txn) => txn.get_database_backend(),
            TxnConn::Postgres(txn) => txn.get_database_backend(),
        }
    }

    async fn execute_raw(&self, stmt: sea_orm::Statement) -> Result<sea_orm::ExecResult, DbErr> {
        match self {
            TxnConn::SeaOrm(txn) => txn.execute_raw(stmt).await,
            TxnConn::Postgres(txn) => txn.execute_raw(stmt).await,
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<sea_orm::ExecResult, DbErr> {
        match self {
            TxnConn::SeaOrm(txn) => txn.execute_unprepared(sql).await,
            TxnConn::Postgres(txn) => txn.execute_unprepared(sql).await,
        }
    }

    async fn query_one_raw(
        &self,
        stmt: sea_orm::Statement,
    ) -> Result<Option<sea_orm::QueryResult>, DbErr> {
        match self {
            TxnConn::SeaOrm(txn) => txn.query_one_raw(stmt).await,
            TxnConn::Postgres(txn) => txn.query_one_raw(stmt).await,
        }
    }

    async fn query_all_raw(
        &self,
        stmt: sea_orm::Statement,
    ) -> Result<Vec<sea_orm::QueryResult>, DbErr> {
        match self {
            TxnConn::SeaOrm(txn) => txn.query_all_raw(stmt).await,
            TxnConn::Postgres(txn) => txn.query_all_raw(stmt).await,
        }
    }
}

/// Tells every listener (event feed, webhook dispatcher) about each commit. Each listener has
/// its own `Notify`, whose stored permit means a commit made while it was busy is not missed.
/// Listeners are held weakly: one dropped (a worker's run that ended) is forgotten.
#[derive(Default)]
pub struct CommitSignal(std::sync::Mutex<Vec<Weak<Notify>>>);

impl CommitSignal {
    fn subscribe(&self) -> Arc<Notify> {
        let listener = Arc::new(Notify::new());
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&listener));
        listener
    }

    fn notify(&self) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|listener| match listener.upgrade() {
                Some(listener) => {
                    listener.notify_one();
                    true
                }
                None => false,
            });
    }
}

/// Claims the next due job of `table` (sync runs, bulk operations: rows of `E` with a status,
/// `run_after`, `started_at`, `attempts` and a lease) for `worker` under a lease of `lease`:
/// first one `running` whose lease has expired (its process died, or it waits to be
/// retried: it has waited longest), then one `queued` and due, each the first in `run_after`
/// order. Its attempt count goes up by one. On PostgreSQL concurrent claimers skip a row
/// another one is taking.
///
/// Each of the two looks is an equality on the status and the `run_after` order, which the
/// index on (`status`, `run_after`) serves as it stands: the scan stops at the first row
/// it can take, however many are queued, and marks the entries of dead row versions it
/// meets so that later scans skip them. (One statement with both conditions joined by `OR`
/// had PostgreSQL read every queued row and sort them, and visit every row version a status
/// change had left behind: 7 to 17 ms a claim with 12,000 runs queued.)
pub async fn claim<E: sea_orm::EntityTrait>(
    db: &Db,
    table: &str,
    (queued, running): (&str, &str),
    worker: &str,
    lease: Duration,
) -> Result<Option<E::Model>, DbErr> {
    let backend = db.conn().get_database_backend();
    let now = chrono::Utc::now();
    let until = now + chrono::Duration::from_std(lease).unwrap_or_default();
    let (expired, due) = (
        format!("status = '{running}' AND locked_until < ?"),
        format!("status = '{queued}' AND run_after <= ?"),
    );
    let look = |condition: &str, lock: &str| {
        format!("(SELECT id FROM {table} WHERE {condition} ORDER BY run_after LIMIT 1{lock})")
    };
    let take = |id: String| {
        format!(
            "UPDATE {table} SET locked_by = ?, locked_until = ?, \
             started_at = COALESCE(started_at, ?), status = ?, attempts = attempts + 1 \
             WHERE id = {id} RETURNING *"
        )
    };
    let set: [sea_orm::Value; 4] = [worker.into(), until.into(), now.into(), running.into()];
    if backend == DbBackend::Postgres {
        // Both looks in one statement, outside any transaction (an idle claim was four round
        // trips): `COALESCE` evaluates its second argument only when the first is null, and
        // each sub-select is evaluated once, when first needed (an init plan).
        const LOCK: &str = " FOR UPDATE SKIP LOCKED";
        let sql = take(format!(
            "COALESCE({}, {})",
            look(&expired, LOCK),
            look(&due, LOCK)
        ));
        let values = set.into_iter().chain([now.into(), now.into()]);
        return E::find()
            .from_raw_sql(statement(backend, &sql, values))
            .one(db.conn())
            .await;
    }
    let txn = db.begin_write().await?;
    for condition in [&expired, &due] {
        let sql = take(look(condition, ""));
        let values = set.iter().cloned().chain([now.into()]);
        let job = E::find()
            .from_raw_sql(statement(backend, &sql, values))
            .one(&*txn)
            .await?;
        if job.is_some() {
            txn.commit().await?;
            return Ok(job);
        }
    }
    txn.commit().await?;
    Ok(None)
}

/// The instant `age` ago (the earliest instant there is when that is before it): the horizon
/// of a retention or grace period, older rows being due for deletion.
pub fn horizon(age: Duration) -> chrono::DateTime<chrono::Utc> {
    chrono::Duration::from_std(age)
        .ok()
        .and_then(|age| chrono::Utc::now().checked_sub_signed(age))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

/// A raw statement written once with `?` placeholders, numbered `$1, $2, …` for PostgreSQL.
pub fn statement(
    backend: DbBackend,
    sql: &str,
    values: impl IntoIterator<Item = sea_orm::Value>,
) -> sea_orm::Statement {
    let sql = match backend {
        DbBackend::Postgres => {
            let mut numbered = String::with_capacity(sql.len() + 16);
            for (n, part) in sql.split('?').enumerate() {
                if n > 0 {
                    numbered.push_str(&format!("${n}"));
                }
                numbered.push_str(part);
            }
            numbered
        }
        _ => sql.to_owned(),
    };
    sea_orm::Statement::from_sql_and_values(backend, sql, values)
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt as _;

    use super::*;

    /// Writes `mib` MiB in one write transaction.
    async fn write_mib(db: &Db, mib: u32) {
        let txn = db.begin_write().await.unwrap();
        txn.execute_unprepared(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {}) \
             INSERT INTO blobs SELECT randomblob(1024) FROM n",
            mib * 1024
        ))
        .await
        .unwrap();
        txn.commit().await.unwrap();
    }

    #[test]
    fn a_dropped_commit_listener_is_forgotten() {
        let signal = CommitSignal::default();
        let kept = signal.subscribe();
        drop(signal.subscribe());
        signal.notify();
        assert_eq!(signal.0.lock().unwrap().len(), 1);
        assert!(
            kept.notified().now_or_never().is_some(),
            "the live one was told"
        );
    }

    #[tokio::test]
    async fn the_background_checkpoint_copies_committed_pages_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.db");
        let mut config = Config::default();
        config.database.url = format!("sqlite://{}?mode=rwc", path.display());
        let db = Db::connect(&config).await.unwrap();
        db.conn()
            .execute_unprepared("CREATE TABLE blobs (b BLOB NOT NULL)")
            .await
            .unwrap();
        let file_len = || std::fs::metadata(&path).unwrap().len();

        // Without the checkpointer, 4 MiB (far below WAL_AUTOCHECKPOINT_PAGES) stay in the log.
        write_mib(&db, 4).await;
        assert!(file_len() < 1024 * 1024, "{} bytes", file_len());

        let shutdown = CancellationToken::new();
        let task = tokio::spawn(
            db.clone()
                .checkpoint_periodically(Duration::from_millis(10), shutdown.clone()),
        );
        write_mib(&db, 4).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while file_len() < 8 * 1024 * 1024 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the log was not checkpointed: the file holds {} bytes",
                file_len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let count: i64 = db
            .conn()
            .query_one_raw(sea_orm::Statement::from_string(
                DbBackend::Sqlite,
                "SELECT count(*) AS n FROM blobs",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get("", "n")
            .unwrap();
        assert_eq!(count, 8 * 1024);

        shutdown.cancel();
        task.await.unwrap();
        db.close().await.unwrap();
    }
}
