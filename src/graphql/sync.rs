//! Sync runs as GraphQL types.

use async_graphql::{ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::enums::{EntityType, SyncKind, SyncStatus, SyncTrigger};
use crate::{error::AppResult, ids, sync::engine::stats_of};
use entity::sync_run;

pub struct SyncRun(pub sync_run::Model);

/// One run that reads a connection's remote system into the unified records: a durable job
/// that survives restarts.
#[Object]
impl SyncRun {
    /// The run's id (`run_…`).
    pub async fn id(&self) -> ID {
        ID(ids::encode(ids::Kind::SyncRun, self.0.id))
    }
    /// The connection synced.
    async fn connection(
        &self,
        ctx: &async_graphql::Context<'_>,
    ) -> AppResult<super::connection::Connection> {
        let scope = super::principal(ctx).connections_scope()?;
        let model =
            crate::connections::find(super::db(ctx).conn(), scope, self.0.connection_id).await?;
        Ok(super::connection::Connection(model))
    }
    /// How much the run reads.
    async fn kind(&self) -> SyncKind {
        self.0.kind.into()
    }
    /// What queued the run.
    async fn trigger(&self) -> SyncTrigger {
        self.0.trigger.into()
    }
    /// Where the run stands.
    async fn status(&self) -> SyncStatus {
        self.0.status.into()
    }
    /// When the run was queued.
    async fn queued_at(&self) -> DateTime<Utc> {
        self.0.queued_at
    }
    /// When a worker started it; null while queued.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }
    /// When it ended; null until then.
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
    /// Records the run added, over every entity type so far.
    async fn records_added(&self) -> i32 {
        clamp(self.0.records_added)
    }
    /// Records the run updated, over every entity type so far.
    async fn records_updated(&self) -> i32 {
        clamp(self.0.records_updated)
    }
    /// Records the run marked deleted, over every entity type so far.
    async fn records_deleted(&self) -> i32 {
        clamp(self.0.records_deleted)
    }
    /// Counts per entity type, in catalog order.
    async fn entities(&self) -> AppResult<Vec<EntitySyncStats>> {
        Ok(stats_of(&self.0)?
            .into_iter()
            .map(|(entity, s)| EntitySyncStats {
                entity: entity.into(),
                added: clamp(s.added),
                updated: clamp(s.updated),
                deleted: clamp(s.deleted),
                unchanged: clamp(s.unchanged),
                skipped: clamp(s.skipped),
                rate_limited: clamp(s.rate_limited),
            })
            .collect())
    }
    /// Remote records the run could not map, skipped while the run went on: the first 20
    /// per entity type (each entity's `skipped` counts them all).
    async fn record_errors(&self) -> AppResult<Vec<SyncRecordError>> {
        Ok(stats_of(&self.0)?
            .into_iter()
            .flat_map(|(entity, s)| {
                s.errors.into_iter().map(move |e| SyncRecordError {
                    entity: entity.into(),
                    key: e.key,
                    message: e.message,
                })
            })
            .collect())
    }
    /// Why the run failed or was cancelled; null otherwise.
    async fn error(&self) -> Option<SyncError> {
        Some(SyncError {
            code: self.0.error_code?.to_string(),
            message: self.0.error_message.clone().unwrap_or_default(),
        })
    }
}

/// What a sync run did to one entity type.
#[derive(SimpleObject)]
pub struct EntitySyncStats {
    /// The entity type.
    pub entity: EntityType,
    /// Records seen for the first time.
    pub added: i32,
    /// Records whose data changed.
    pub updated: i32,
    /// Records the remote no longer has (full reads) or reported deleted.
    pub deleted: i32,
    /// Records read again without a change.
    pub unchanged: i32,
    /// Malformed remote records that were skipped.
    pub skipped: i32,
    /// Requests the remote answered with 429 (waited out, not failures).
    pub rate_limited: i32,
}

/// A remote record a sync run skipped because it could not be mapped.
#[derive(SimpleObject)]
pub struct SyncRecordError {
    /// The record's entity type.
    pub entity: EntityType,
    /// The remote's key of the record (empty when the record had none).
    pub key: String,
    /// Why it could not be mapped.
    pub message: String,
}

/// Why a sync run failed or was cancelled.
#[derive(SimpleObject)]
pub struct SyncError {
    /// `AUTH_REQUIRED`, `OFFLINE`, `REMOTE_ERROR`, `CREDENTIALS_UNREADABLE`, `MAX_ATTEMPTS`,
    /// `CANCELLED` or `DISCONNECTED`.
    pub code: String,
    /// What went wrong, in words.
    pub message: String,
}

fn clamp(value: i64) -> i32 {
    value.clamp(0, i64::from(i32::MAX)) as i32
}
