//! PostgreSQL: a page's live records go into the store by `COPY`.
//!
//! Bound to one multi-row `INSERT`, a page of 1,000 records was 7,000 parameters for the
//! server to parse, plan and convert (each timestamp and uuid from the wire, each JSON text
//! cast) and for the client to build as sea-orm values. Instead the rows are sent with
//! `COPY … FROM STDIN (FORMAT binary)` into the session's temporary table `records_page`
//! (each value in the server's own representation: no escaping on this side, no parsing on
//! the server's; the JSON is still checked as a `json` value) and stored by one
//! `INSERT INTO records … SELECT … FROM records_page ON CONFLICT …`, whose conflict handling
//! and `RETURNING` are the SQLite statement's (`upsert_returning`): the same outcomes, the
//! same keys added and updated, in the page's order (the table, emptied at every commit, is
//! read in the order its rows were copied), the same pass marks. Both run in the page's transaction, on its
//! connection ([`PgTxn::copy_in`]); the table is emptied at its commit.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveEnum as _, ConnectionTrait, DbBackend, DbErr};
use uuid::Uuid;

use super::{PageOutcome, PreparedRow, UPSERT_COLUMNS, upsert_returning};
use crate::{
    catalog::EntityType,
    db::postgres::{BinaryRows, PgTxn, Scratch},
    error::AppResult,
};

/// The temporary table a page's rows are copied into: the values that differ from row to
/// row, typed as in `records` (what every row shares is bound to the `INSERT`).
const PAGE: Scratch = Scratch {
    name: "records_page",
    columns: "id uuid, key text, data json, remote_data json, content_hash text, \
              remote_created_at timestamptz, remote_updated_at timestamptz",
    names: "id, key, data, remote_data, content_hash, remote_created_at, remote_updated_at",
};
const FIELDS: i16 = 7;

/// What every row of a page shares.
pub(super) struct Shared {
    pub connection_id: Uuid,
    pub entity: EntityType,
    /// The full pass that sees the records, if any.
    pub pass: Option<Uuid>,
    /// The page's write time.
    pub now: DateTime<Utc>,
}

/// [`super::upsert`] on PostgreSQL, for a whole page: one `COPY` and one statement whatever
/// its length.
pub(super) async fn upsert(
    txn: &PgTxn,
    shared: &Shared,
    rows: Vec<PreparedRow>,
    outcome: &mut PageOutcome,
) -> AppResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let total = rows.len();
    let copied = txn.copy_in(&PAGE, encode(&rows)).await?;
    debug_assert_eq!(copied, total as u64);
    let values: [sea_orm::Value; 4] = [
        shared.connection_id.into(),
        shared.entity.to_value().into(),
        shared.now.into(),
        shared.pass.into(),
    ];
    let statement = sea_orm::Statement::from_sql_and_values(DbBackend::Postgres, sql(), values);
    let returned = txn.query_all_raw(statement).await?;
    super::count_outcomes(&returned, total, outcome)
}

/// `$1` connection, `$2` entity, `$3` write time (also what RETURNING compares with), `$4`
/// pass.
fn sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "INSERT INTO records ({UPSERT_COLUMNS}) SELECT $1, $2, $3, $3, $4, NULL, {} FROM \
             pg_temp.{}{}",
            PAGE.names,
            PAGE.name,
            upsert_returning("$3"),
        )
    })
}

/// The rows in COPY's binary format, in chunks written as they are sent.
fn encode(rows: &[PreparedRow]) -> impl Iterator<Item = Result<Vec<u8>, DbErr>> + Send + '_ {
    let mut rows = rows.iter();
    let mut writer = Some(BinaryRows::new());
    std::iter::from_fn(move || {
        let out = writer.as_mut()?;
        for row in rows.by_ref() {
            if let Err(err) = write_row(out, row) {
                writer = None;
                return Some(Err(err));
            }
            if let Some(chunk) = out.full_chunk() {
                return Some(Ok(chunk));
            }
        }
        writer.take().map(|last| Ok(last.finish()))
    })
}

fn write_row(out: &mut BinaryRows, row: &PreparedRow) -> Result<(), DbErr> {
    out.row(FIELDS);
    out.uuid(row.id);
    out.text(&row.key)?;
    out.text(&row.data)?;
    out.text(&row.remote)?;
    out.text(&row.hash)?;
    out.timestamptz(row.remote_created_at)?;
    out.timestamptz(row.remote_updated_at)
}
