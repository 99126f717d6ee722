//! The database handle: SQLite (embedded default) or PostgreSQL, and write transactions.
//!
//! SQLite allows one writer at a time and fails a deferred transaction that tries to upgrade
//! to a write while another writer holds the lock ("database is locked"). Writes therefore
//! take an in-process lock before `BEGIN`, so they queue instead of failing; reads run in
//! parallel under WAL. On PostgreSQL the lock is absent and row locks do the work.

use std::{ops::Deref, sync::Arc, time::Duration};

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
    sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous},
};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard};

use crate::config::Config;

#[derive(Clone)]
pub struct Db {
    conn: DatabaseConnection,
    write_lock: Option<Arc<Mutex<()>>>,
    /// Signalled after every committed write transaction (the event feed listens).
    commits: Arc<CommitSignal>,
}

impl Db {
    pub async fn connect(config: &Config) -> Result<Self, DbErr> {
        let mut options = ConnectOptions::new(config.database_url.clone());
        options
            .max_connections(config.database_max_connections)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .sqlx_logging(false);
        let sqlite = config.is_sqlite();
        if sqlite {
            // An embedded file cannot drop a connection: no ping before each use (one round
            // trip to SQLite's worker thread per statement outside a transaction and per
            // transaction saved).
            options.test_before_acquire(false);
            // Negative: a size in KiB rather than in pages.
            let cache_kib = format!("-{}", config.sqlite_cache_mib.saturating_mul(1024));
            options.map_sqlx_sqlite_opts(move |opts| {
                // 8 KiB pages for a new file (an existing one keeps its own): a stored record
                // is ~0.5–1 KiB of JSON text, and a batched insert of such rows ran 10–18 %
                // faster than with 4 KiB pages (BENCHMARKS.md, sync_ingest).
                opts.page_size(8192)
                    .pragma("cache_size", cache_kib.clone())
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
                    .create_if_missing(true)
            });
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
        })
    }

    /// Counts every SQL statement (for `/metrics`); call before cloning the handle.
    pub fn count_statements(&mut self, counter: prometheus::IntCounter) {
        self.conn.set_metric_callback(move |_| counter.inc());
    }

    pub async fn migrate(&self) -> Result<(), DbErr> {
        let _guard = self.lock_writes().await;
        Migrator::up(&self.conn, None).await
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
        let txn = self.conn.begin_with_options(options).await?;
        Ok(WriteTxn {
            txn,
            commits: self.commits.clone(),
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
    txn: DatabaseTransaction,
    commits: Arc<CommitSignal>,
    _guard: Option<OwnedMutexGuard<()>>,
}

impl WriteTxn {
    pub async fn commit(self) -> Result<(), DbErr> {
        self.txn.commit().await?;
        self.commits.notify();
        Ok(())
    }
}

impl Deref for WriteTxn {
    type Target = DatabaseTransaction;
    fn deref(&self) -> &DatabaseTransaction {
        &self.txn
    }
}

/// Tells every listener (event feed, webhook dispatcher) about each commit. Each listener has
/// its own `Notify`, whose stored permit means a commit made while it was busy is not missed.
#[derive(Default)]
pub struct CommitSignal(std::sync::Mutex<Vec<Arc<Notify>>>);

impl CommitSignal {
    fn subscribe(&self) -> Arc<Notify> {
        let listener = Arc::new(Notify::new());
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener.clone());
        listener
    }

    fn notify(&self) {
        for listener in self.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            listener.notify_one();
        }
    }
}

/// A raw statement written once with `?` placeholders, numbered `$1, $2, …` for PostgreSQL.
pub fn statement(
    backend: sea_orm::DbBackend,
    sql: &str,
    values: impl IntoIterator<Item = sea_orm::Value>,
) -> sea_orm::Statement {
    let sql = match backend {
        sea_orm::DbBackend::Postgres => {
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
