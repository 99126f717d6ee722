//! The one error type of Millwright and its GraphQL `extensions.code`.
//!
//! Domain functions return `AppError`. Use `NotFound` for anything the caller may not see
//! (another tenant's object looks missing), `BadUserInput` with a message naming the field,
//! `Conflict` for uniqueness and state clashes, and `Internal` for everything unexpected:
//! its detail is logged once by the GraphQL layer and never shown to the client.

use std::sync::Arc;

use sea_orm::{DbErr, SqlErr};

#[derive(Clone, Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    BadUserInput(String),
    /// Records of a bulk write that cannot be written as given: the first
    /// [`crate::bulk::fields::MAX_PROBLEMS`] problems, and how many there are.
    #[error("{}", invalid_records_message(.problems, *.count))]
    InvalidRecords {
        problems: Vec<crate::bulk::fields::Problem>,
        count: usize,
    },
    /// An expression (a flow's condition, a template) that does not compile or type-check:
    /// the input field it came from and where in it the problem is (1-based).
    #[error("`{field}`, line {line}, column {column}: {message}")]
    InvalidExpression {
        field: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{0}")]
    Conflict(String),
    /// `available` is withheld (`None`) from a caller that may not know the pool's size.
    #[error("insufficient credits: {needed} needed{}", .available.map(|a| format!(", {a} available")).unwrap_or_default())]
    InsufficientCredits { needed: i64, available: Option<i64> },
    #[error("{0}")]
    ConnectionFailed(String),
    #[error("rate limited, retry after {retry_after_seconds} s")]
    RateLimited { retry_after_seconds: u64 },
    #[error("{0}")]
    QueryTooComplex(String),
    #[error("{0}")]
    Timeout(String),
    #[error("internal error")]
    Internal(Arc<anyhow::Error>),
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Unauthenticated(_) => "UNAUTHENTICATED",
            AppError::Forbidden(_) => "FORBIDDEN",
            AppError::NotFound(_) => "NOT_FOUND",
            AppError::BadUserInput(_)
            | AppError::InvalidRecords { .. }
            | AppError::InvalidExpression { .. } => "BAD_USER_INPUT",
            AppError::Conflict(_) => "CONFLICT",
            AppError::InsufficientCredits { .. } => "INSUFFICIENT_CREDITS",
            AppError::ConnectionFailed(_) => "CONNECTION_FAILED",
            AppError::RateLimited { .. } => "RATE_LIMITED",
            AppError::QueryTooComplex(_) => "QUERY_TOO_COMPLEX",
            AppError::Timeout(_) => "TIMEOUT",
            AppError::Internal(_) => "INTERNAL",
        }
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        AppError::BadUserInput(message.into())
    }

    /// Work stopped because it took longer than the request timeout, `limit`.
    pub fn timeout(limit: std::time::Duration) -> Self {
        AppError::Timeout(format!(
            "the operation took longer than {} s and was stopped",
            limit.as_secs()
        ))
    }

    /// The error for an operator's log: an internal error with its cause chain (kept out of
    /// responses), anything else as its message.
    pub fn detail(&self) -> String {
        match self {
            AppError::Internal(detail) => format!("{detail:#}"),
            other => other.to_string(),
        }
    }

    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        AppError::Internal(Arc::new(error.into()))
    }

    /// True when the database refused a row because of a unique constraint.
    pub fn is_unique_violation(err: &DbErr) -> bool {
        matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
    }
}

/// `3 records are invalid: records[1].title: expected a string, got a number; …`: the first
/// few problems in words (all of them, up to the cap, are in `extensions.problems`).
fn invalid_records_message(problems: &[crate::bulk::fields::Problem], count: usize) -> String {
    const SHOWN: usize = 5;
    let listed: Vec<String> = problems
        .iter()
        .take(SHOWN)
        .map(|p| match &p.field {
            Some(field) => format!("records[{}].{field}: {}", p.index, p.message),
            None => format!("records[{}]: {}", p.index, p.message),
        })
        .collect();
    let more = count.saturating_sub(listed.len());
    let tail = if more > 0 {
        format!("; and {more} more")
    } else {
        String::new()
    };
    let noun = if count == 1 { "problem" } else { "problems" };
    format!(
        "{count} {noun} in records, nothing was queued: {}{tail}",
        listed.join("; ")
    )
}

impl From<DbErr> for AppError {
    fn from(err: DbErr) -> Self {
        // sea-orm names only the enum of a stored text it does not know; say where it is.
        if let DbErr::Type(message) = &err
            && let Some(name) = message
                .strip_prefix("unexpected value for ")
                .and_then(|rest| rest.split(' ').next())
            && let Some(column) = entity::enums::stored_in(name)
        {
            return AppError::internal(anyhow::anyhow!(
                "{column} holds a value this release does not know ({message})"
            ));
        }
        AppError::Internal(Arc::new(err.into()))
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::ConnectionTrait;

    use super::*;
    use crate::{accounts, config::Config, credits, db::Db, pagination::PageRequest};

    #[tokio::test]
    async fn an_unknown_stored_value_is_an_error_that_names_its_column() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.database.url = format!("sqlite://{}?mode=rwc", dir.path().join("enum.db").display());
        let db = Db::connect(&config).await.unwrap();
        db.migrate().await.unwrap();
        let created = accounts::create_account(&db, "Acme", 5).await.unwrap();
        let page = || PageRequest::from_args(Some(10), None, None, None).unwrap();
        let ledger = credits::ledger(db.conn(), created.account.id, page())
            .await
            .unwrap();
        assert_eq!(ledger.items.len(), 1, "the initial grant");

        db.conn()
            .execute_unprepared("UPDATE credit_ledger SET kind = 'GIFT'")
            .await
            .unwrap();
        let err = credits::ledger(db.conn(), created.account.id, page())
            .await
            .unwrap_err();
        let AppError::Internal(detail) = &err else {
            panic!("an internal error, not {err:?}")
        };
        let detail = format!("{detail:#}");
        assert!(detail.contains("credit_ledger.kind"), "{detail}");
        assert!(detail.contains("GIFT"), "{detail}");
        db.close().await.unwrap();
    }
}
