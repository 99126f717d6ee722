//! PostgreSQL write transactions run here rather than by sea-orm, so that `COPY` can run
//! inside them.
//!
//! The record store writes a page's rows with `COPY … FROM STDIN` into a temporary table and
//! one `INSERT … SELECT` from it (`records::copy`). `COPY` takes the connection for several
//! protocol messages, and it must run on the connection of the page's transaction. sea-orm
//! 2.0 offers no way to reach the sqlx connection under a `DatabaseTransaction` (the field is
//! private, and no method hands it out), so on PostgreSQL [`Db::begin_write`](super::Db)
//! begins the transaction itself, with sqlx, on a connection of sea-orm's own pool (its size,
//! timeouts and ping after idling apply), and [`PgTxn`] runs sea-orm's statements on it the
//! way sea-orm's transaction does: the same binding of values (`sea-query-sqlx`), rows and
//! results of the same types, the same error kinds (a unique violation is still
//! `SqlErr::UniqueConstraintViolation`), the same `BEGIN`, `COMMIT` and rollback when dropped,
//! and every prepared statement counted by the statement counter (`/metrics`). Everything
//! written against `ConnectionTrait` runs on it unchanged; SQLite keeps sea-orm's transaction.

use chrono::{DateTime, NaiveDate, Utc};
use std::sync::Arc;

use sea_orm::{
    ConnAcquireErr, ConnectionTrait, DbBackend, DbErr, ExecResult, QueryResult, RuntimeErr,
    Statement,
    sqlx::{self, PgConnection, Postgres, postgres::PgPool},
};
use sea_query_sqlx::SqlxValues;
use tokio::sync::Mutex;
use uuid::Uuid;

/// A write transaction on a pooled PostgreSQL connection.
pub struct PgTxn {
    /// Locked for each statement, and for the whole of a `COPY`.
    conn: Mutex<sqlx::Transaction<'static, Postgres>>,
    statements: Option<prometheus::IntCounter>,
    /// The scratch tables this transaction has filled (see [`Self::copy_in`]).
    filled: std::sync::Mutex<Vec<&'static str>>,
}

impl PgTxn {
    pub(super) async fn begin(
        pool: &PgPool,
        statements: Option<prometheus::IntCounter>,
    ) -> Result<Self, DbErr> {
        let conn = pool.acquire().await.map_err(sqlx_conn_acquire_err)?;
        let txn = sqlx::Transaction::begin(conn, None)
            .await
            .map_err(sqlx_error_to_query_err)?;
        Ok(Self {
            conn: Mutex::new(txn),
            statements,
            filled: std::sync::Mutex::new(Vec::new()),
        })
    }

    pub(super) async fn commit(self) -> Result<(), DbErr> {
        self.conn
            .into_inner()
            .commit()
            .await
            .map_err(sqlx_error_to_query_err)
    }

    /// Runs `sql` and commits in one round trip, `sql; COMMIT; BEGIN` in one simple query;
    /// the rows `sql` returned. sqlx's transaction still expects one to be open, hence the
    /// `BEGIN`: that empty transaction is then dropped, which queues its `ROLLBACK` on the
    /// connection, sent with the check sqlx's pool makes of every connection it takes back
    /// (a round trip the caller does not wait for; committing it was one more, on the
    /// request's path). The simple protocol takes no parameters: the caller writes the values
    /// into `sql` (`sea-query`'s literals). When `sql` fails the server runs nothing after
    /// it, and the failed transaction rolls back as a dropped one does.
    pub(super) async fn commit_after(self, sql: String) -> Result<Vec<QueryResult>, DbErr> {
        self.count();
        let mut txn = self.conn.into_inner();
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{sql}; COMMIT; BEGIN")))
            .fetch_all(&mut *txn)
            .await
            .map_err(sqlx_error_to_query_err)?;
        drop(txn);
        Ok(rows.into_iter().map(Into::into).collect())
    }

    fn count(&self) {
        if let Some(counter) = &self.statements {
            counter.inc();
        }
    }

    /// Copies rows into the session's temporary table `scratch` with `COPY … FROM STDIN
    /// (FORMAT binary)`, for a statement of this transaction to read; the rows copied.
    /// `chunks` is the data in COPY's binary format ([`BinaryRows`]), consumed as it is sent;
    /// an error it yields aborts the COPY (the transaction is then failed, and rolls back).
    ///
    /// The table is created on the connection's first use (it lasts as long as the session:
    /// no catalog rows are written per page) and is `ON COMMIT DELETE ROWS`: the rows of a
    /// committed transaction are gone at its commit, those of a rolled-back one were never
    /// visible to anyone else, and a pooled connection hands none over to its next
    /// transaction. Filled twice in one transaction, it is emptied first. A table created by
    /// a transaction that then rolled back is gone with it, and created again next time.
    pub async fn copy_in(
        &self,
        scratch: &Scratch,
        chunks: impl Iterator<Item = Result<Vec<u8>, DbErr>> + Send,
    ) -> Result<u64, DbErr> {
        let mut conn = self.conn.lock().await;
        let conn: &mut PgConnection = &mut conn;
        let refill = {
            let mut filled = self.filled.lock().unwrap_or_else(|e| e.into_inner());
            let refill = filled.contains(&scratch.name);
            if !refill {
                filled.push(scratch.name);
            }
            refill
        };
        let qualified = format!("pg_temp.{}", scratch.name);
        if refill {
            self.count();
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {qualified}")))
                .execute(&mut *conn)
                .await
                .map_err(sqlx_error_to_exec_err)?;
        } else {
            // `CREATE … IF NOT EXISTS` would send a notice on every page but the first.
            self.count();
            let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(&qualified)
                .fetch_one(&mut *conn)
                .await
                .map_err(sqlx_error_to_query_err)?;
            if !exists {
                self.count();
                let create = format!(
                    "CREATE TEMPORARY TABLE {} ({}) ON COMMIT DELETE ROWS",
                    scratch.name, scratch.columns
                );
                sqlx::query(sqlx::AssertSqlSafe(create))
                    .execute(&mut *conn)
                    .await
                    .map_err(sqlx_error_to_exec_err)?;
            }
        }
        self.count();
        let statement = format!(
            "COPY {qualified} ({}) FROM STDIN (FORMAT binary)",
            scratch.names
        );
        let mut copy = conn
            .copy_in_raw(&statement)
            .await
            .map_err(sqlx_error_to_exec_err)?;
        for chunk in chunks {
            match chunk {
                Ok(chunk) => {
                    copy.send(chunk).await.map_err(sqlx_error_to_exec_err)?;
                }
                Err(err) => {
                    // The server answers an abort with the error it was asked to raise.
                    copy.abort(err.to_string())
                        .await
                        .map_err(sqlx_error_to_exec_err)?;
                    return Err(err);
                }
            }
        }
        copy.finish().await.map_err(sqlx_error_to_exec_err)
    }
}

/// A session's temporary table that [`PgTxn::copy_in`] fills.
pub struct Scratch {
    pub name: &'static str,
    /// The column definitions, in the order of the copied fields.
    pub columns: &'static str,
    /// The column names, in the same order.
    pub names: &'static str,
}

/// A statement as sea-orm's PostgreSQL driver makes it: the values bound through
/// `sea-query-sqlx`.
fn query(stmt: &Statement) -> sqlx::query::Query<'_, Postgres, SqlxValues> {
    let values = stmt
        .values
        .clone()
        .unwrap_or_else(|| sea_orm::Values(Vec::new()));
    sqlx::query_with(sqlx::AssertSqlSafe(stmt.sql.as_str()), SqlxValues(values))
}

// sea-orm's own conversions of sqlx errors, which it does not export: the same kinds, so
// that callers tell errors apart as they do on sea-orm's transactions.

fn sqlx_error_to_exec_err(err: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(Arc::new(err)))
}

fn sqlx_error_to_query_err(err: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(err)))
}

fn sqlx_conn_acquire_err(err: sqlx::Error) -> DbErr {
    match err {
        sqlx::Error::PoolTimedOut => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
        sqlx::Error::PoolClosed => DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
        err => DbErr::Conn(RuntimeErr::SqlxError(Arc::new(err))),
    }
}

/// No row is `None`, as sea-orm's `query_one` has it.
fn sqlx_map_err_ignore_not_found<T>(
    result: Result<Option<T>, sqlx::Error>,
) -> Result<Option<T>, DbErr> {
    match result {
        Err(sqlx::Error::RowNotFound) => Ok(None),
        result => result.map_err(sqlx_error_to_query_err),
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for PgTxn {
    fn get_database_backend(&self) -> DbBackend {
        DbBackend::Postgres
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        let mut conn = self.conn.lock().await;
        self.count();
        query(&stmt)
            .execute(&mut **conn)
            .await
            .map(Into::into)
            .map_err(sqlx_error_to_exec_err)
    }

    /// Like sea-orm's: the simple protocol (several statements may go in one), not counted.
    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        let mut conn = self.conn.lock().await;
        sqlx::Executor::execute(&mut **conn, sqlx::AssertSqlSafe(sql.to_owned()))
            .await
            .map(Into::into)
            .map_err(sqlx_error_to_exec_err)
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        let mut conn = self.conn.lock().await;
        self.count();
        sqlx_map_err_ignore_not_found(
            query(&stmt)
                .fetch_one(&mut **conn)
                .await
                .map(|row| Some(row.into())),
        )
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        let mut conn = self.conn.lock().await;
        self.count();
        query(&stmt)
            .fetch_all(&mut **conn)
            .await
            .map(|rows| rows.into_iter().map(Into::into).collect())
            .map_err(sqlx_error_to_query_err)
    }
}

/// Rows in the binary format of `COPY` (the server's own representation of each value: no
/// escaping, no parsing of numbers or dates on its side), written into chunks of about
/// [`Self::CHUNK`] bytes.
pub struct BinaryRows {
    buf: Vec<u8>,
}

impl BinaryRows {
    /// Bytes in a chunk before it is handed on: the server parses one while the next is
    /// written, and a page of any length takes no more memory than this beyond its rows.
    pub const CHUNK: usize = 1 << 20;

    /// The format's signature, flags and header extension: no OIDs, no extension.
    const HEADER: &'static [u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(Self::CHUNK + 64 * 1024);
        buf.extend_from_slice(Self::HEADER);
        Self { buf }
    }

    /// Starts a row of `fields` values.
    pub fn row(&mut self, fields: i16) {
        self.buf.extend_from_slice(&fields.to_be_bytes());
    }

    pub fn uuid(&mut self, value: Uuid) {
        self.buf.extend_from_slice(&16i32.to_be_bytes());
        self.buf.extend_from_slice(value.as_bytes());
    }

    /// A `text`, `varchar` or `json` value: its UTF-8 bytes. The server checks them as it
    /// checks a bound text value (a NUL character is refused the same way).
    pub fn text(&mut self, value: &str) -> Result<(), DbErr> {
        let len = i32::try_from(value.len())
            .map_err(|_| DbErr::Custom(format!("a value of {} bytes", value.len())))?;
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(value.as_bytes());
        Ok(())
    }

    /// A `timestamptz`: microseconds since 2000-01-01 UTC, truncated as sqlx truncates a
    /// bound `DateTime<Utc>`, so that COPY stores what a bound value stored.
    pub fn timestamptz(&mut self, value: Option<DateTime<Utc>>) -> Result<(), DbErr> {
        let Some(value) = value else {
            self.buf.extend_from_slice(&(-1i32).to_be_bytes());
            return Ok(());
        };
        let epoch = NaiveDate::from_ymd_opt(2000, 1, 1)
            .and_then(|day| day.and_hms_opt(0, 0, 0))
            .expect("2000-01-01 is a date");
        let micros = (value.naive_utc() - epoch)
            .num_microseconds()
            .ok_or_else(|| DbErr::Custom(format!("{value} is out of range for PostgreSQL")))?;
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&micros.to_be_bytes());
        Ok(())
    }

    /// The chunk written so far, if it is full.
    pub fn full_chunk(&mut self) -> Option<Vec<u8>> {
        (self.buf.len() >= Self::CHUNK)
            .then(|| std::mem::replace(&mut self.buf, Vec::with_capacity(Self::CHUNK + 64 * 1024)))
    }

    /// The last chunk, with the format's trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

impl Default for BinaryRows {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::sqlx::{Encode, postgres::PgArgumentBuffer};

    /// What sqlx writes for a bound value (its length prefix aside).
    fn bound<T: for<'q> Encode<'q, Postgres>>(value: T) -> Vec<u8> {
        let mut buf = PgArgumentBuffer::default();
        let _ = value.encode_by_ref(&mut buf).unwrap();
        buf.to_vec()
    }

    /// The value `write` put after the header and its 4-byte length.
    fn copied(write: impl FnOnce(&mut BinaryRows)) -> Vec<u8> {
        let mut rows = BinaryRows::new();
        write(&mut rows);
        let bytes = rows.finish();
        bytes[BinaryRows::HEADER.len() + 4..bytes.len() - 2].to_vec()
    }

    #[test]
    fn timestamps_and_uuids_are_written_as_a_bound_value_is() {
        let instants = [
            "2026-12-05T10:11:12.123456789Z",
            "1999-12-31T23:59:59.999999999Z",
            "1970-01-01T00:00:00Z",
            "2000-01-01T00:00:00.000000500Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
        ];
        for text in instants {
            let instant: DateTime<Utc> = text.parse().unwrap();
            assert_eq!(
                copied(|rows| rows.timestamptz(Some(instant)).unwrap()),
                bound(instant),
                "{text}"
            );
        }
        let id = Uuid::now_v7();
        assert_eq!(copied(|rows| rows.uuid(id)), bound(id));
    }

    #[test]
    fn the_format_has_its_header_lengths_nulls_and_trailer() {
        let mut rows = BinaryRows::new();
        rows.row(2);
        rows.text("a\tb\\").unwrap();
        rows.timestamptz(None).unwrap();
        let bytes = rows.finish();
        let mut expected = b"PGCOPY\n\xff\r\n\0".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0, 2, 0, 0, 0, 4, b'a', b'\t', b'b', b'\\']);
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn chunks_are_handed_on_once_full() {
        let mut rows = BinaryRows::new();
        let value = "x".repeat(1000);
        let mut chunks = 0;
        let mut copied = 0;
        for _ in 0..3000 {
            rows.row(1);
            rows.text(&value).unwrap();
            if let Some(chunk) = rows.full_chunk() {
                assert!(chunk.len() >= BinaryRows::CHUNK);
                assert!(chunk.len() < BinaryRows::CHUNK + 1010);
                chunks += 1;
                copied += chunk.len();
            }
        }
        copied += rows.finish().len();
        assert_eq!(chunks, 2);
        assert_eq!(copied, BinaryRows::HEADER.len() + 3000 * 1006 + 2);
    }
}
