//! The health check: probes every live connection once per interval and moves its status
//! between ONLINE, OFFLINE and AUTH_REQUIRED. Each connection has its own `next_check_at`,
//! first set at a random point of the interval, so thousands of connections spread out.
//! A check is claimed with a conditional update, so several processes never probe one
//! connection twice.

use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use rand::Rng;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio_util::sync::CancellationToken;

use crate::{
    connections::{self, ConnectionStatus, Scope},
    connectors::{self, http::Outbound},
    crypto::Cipher,
    db::Db,
    error::AppResult,
};
use entity::connection;

const BATCH: u64 = 100;
const CONCURRENT_PROBES: usize = 8;

#[derive(Clone)]
pub struct HealthCheck {
    pub db: Db,
    pub cipher: Cipher,
    pub outbound: Outbound,
    pub interval: Duration,
}

impl HealthCheck {
    pub async fn run(self, shutdown: CancellationToken) {
        let tick = (self.interval / 10).clamp(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            match self.check_due().await {
                Ok(checked) if checked as u64 == BATCH => continue,
                Ok(_) => {}
                Err(err) => tracing::error!(error = %err.detail(), "health check failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// Probes the connections whose check is due; returns how many it claimed.
    pub async fn check_due(&self) -> AppResult<usize> {
        let now = Utc::now();
        let due = connection::Entity::find()
            .filter(connection::Column::NextCheckAt.lte(now))
            .filter(connection::Column::Status.ne(ConnectionStatus::Disconnected))
            .order_by_asc(connection::Column::NextCheckAt)
            .limit(BATCH)
            .all(self.db.conn())
            .await?;
        let mut claimed = Vec::with_capacity(due.len());
        for model in due {
            if self.claim(&model).await? {
                claimed.push(model);
            }
        }
        let count = claimed.len();
        futures_util::stream::iter(claimed)
            .for_each_concurrent(CONCURRENT_PROBES, |model| async move {
                if let Err(err) = self.probe(model).await {
                    tracing::error!(error = %err.detail(), "health probe failed");
                }
            })
            .await;
        Ok(count)
    }

    /// Moves the next check one interval (with ±10 % jitter) ahead, unless another process did.
    async fn claim(&self, model: &connection::Model) -> AppResult<bool> {
        let jitter = rand::rng().random_range(0.9..1.1);
        let next = Utc::now()
            + chrono::Duration::from_std(self.interval.mul_f64(jitter)).unwrap_or_default();
        let txn = self.db.begin_write().await?;
        let result = connection::Entity::update_many()
            .col_expr(connection::Column::NextCheckAt, Some(next).into())
            .filter(connection::Column::Id.eq(model.id))
            .filter(connection::Column::NextCheckAt.eq(model.next_check_at))
            .exec(&*txn)
            .await?;
        txn.commit().await?;
        Ok(result.rows_affected == 1)
    }

    async fn probe(&self, model: connection::Model) -> AppResult<()> {
        let scope = Scope::account(model.account_id);
        let credentials = match connections::open_credentials(&self.cipher, &model) {
            Ok(credentials) => credentials,
            Err(connections::CredentialsError::Unreadable(why)) => {
                connections::record_unreadable(&self.db, scope, model.id, &why).await?;
                return Ok(());
            }
            Err(err) => return Err(err.into()),
        };
        let connector = connectors::connect(
            connections::system(&model)?,
            model.id,
            &credentials,
            &self.outbound,
            &self.db,
        );
        let outcome = connectors::probe(connector.as_ref()).await;
        connections::record_check(&self.db, scope, model.id, outcome).await?;
        Ok(())
    }
}
