//! After-commit notices: what a committed write means for the rest of this process. Domain
//! code attaches a [`Notice`] to its write transaction ([`crate::db::WriteTxn::after_commit`]);
//! the [`Notifier`] acts on it once the transaction commits, never when it rolls back: a
//! queued sync run wakes the sync workers, queued deliveries wake the delivery workers, a
//! revoked key or token leaves the authentication cache, an account's new rate limit applies.
//!
//! Other instances sharing a PostgreSQL database learn of the same changes by polling
//! (workers, rate limits) or by the cache's short lifetime (`auth::AUTH_CACHE_TTL`).

use std::sync::Arc;

use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    auth::{AuthCache, Principal},
    limits::{Overrides, RateLimit},
};

/// What a committed write asks of this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A sync run was queued: the sync workers look for work now, not at their next poll.
    SyncQueued,
    /// Webhook deliveries were queued outside the dispatcher (tests, redeliveries, replays).
    DeliveriesQueued,
    /// An API key was revoked: no cached copy of it may authenticate again.
    ApiKeyRevoked(Uuid),
    /// A connection's token was replaced or the connection disconnected.
    ConnectionTokenRevoked(Uuid),
    /// The operator set or cleared an account's rate limit (`None`: the default again).
    RateLimitChanged {
        account_id: Uuid,
        limit: Option<RateLimit>,
    },
}

/// The process's listeners for [`Notice`]s; cheap to clone, one per process (the [`Db`]
/// handle carries it).
///
/// [`Db`]: crate::db::Db
#[derive(Clone, Default)]
pub struct Notifier {
    sync_queued: Arc<Notify>,
    deliveries_queued: Arc<Notify>,
    auth_cache: Arc<AuthCache>,
    rate_limits: Arc<Overrides>,
}

impl Notifier {
    pub fn notify(&self, notice: Notice) {
        match notice {
            // Every idle sync worker looks: runs of several connections may be waiting.
            Notice::SyncQueued => self.sync_queued.notify_waiters(),
            // One delivery worker claims for all (it batches); a stored permit means a
            // claim in progress looks again.
            Notice::DeliveriesQueued => self.deliveries_queued.notify_one(),
            Notice::ApiKeyRevoked(key) => self.auth_cache.forget(
                |p| matches!(p, Principal::Account { api_key_id, .. } if *api_key_id == key),
            ),
            Notice::ConnectionTokenRevoked(connection) => self.auth_cache.forget(|p| {
                matches!(p, Principal::Connection { connection_id, .. } if *connection_id == connection)
            }),
            Notice::RateLimitChanged { account_id, limit } => {
                self.rate_limits.set(account_id, limit);
            }
        }
    }

    /// What the sync workers wait on between polls.
    pub fn sync_queued(&self) -> Arc<Notify> {
        self.sync_queued.clone()
    }

    /// What the webhook delivery workers wait on between polls.
    pub fn deliveries_queued(&self) -> Arc<Notify> {
        self.deliveries_queued.clone()
    }

    /// The accounts' own rate limits, which changes update.
    pub fn rate_limits(&self) -> Arc<Overrides> {
        self.rate_limits.clone()
    }

    /// The authentication cache that revocations clear.
    pub fn auth_cache(&self) -> Arc<AuthCache> {
        self.auth_cache.clone()
    }
}
