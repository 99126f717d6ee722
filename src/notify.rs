//! After-commit notices: what a committed write means for the rest of this process. Domain
//! code attaches a [`Notice`] to its write transaction ([`crate::db::WriteTxn::after_commit`]);
//! the [`Notifier`] acts on it once the transaction commits, never when it rolls back: a
//! queued sync run wakes the sync workers, queued deliveries wake the delivery workers, a
//! revoked key or token leaves the authentication cache and closes its WebSockets, an
//! account's new rate limit applies.
//!
//! Other instances sharing the database learn of the same changes by polling (workers, rate
//! limits on PostgreSQL), by the cache's short lifetime (`auth::AUTH_CACHE_TTL`), and for
//! revocations by [`crate::auth::sockets::watch`] (PostgreSQL `NOTIFY`, a poll on SQLite).

use std::{sync::Arc, time::Duration};

use sea_orm::sqlx::postgres::PgListener;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    auth::{AuthCache, Principal, TokenKind, sockets::Sockets},
    limits::{Overrides, RateLimit},
};

/// What a committed write asks of this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A sync run was queued: the sync workers look for work now, not at their next poll.
    SyncQueued,
    /// A bulk operation was queued: the bulk-write workers look for work now.
    BulkQueued,
    /// Webhook deliveries were queued outside the dispatcher (tests, redeliveries, replays).
    DeliveriesQueued,
    /// An API key was revoked: no cached copy of it may authenticate again.
    ApiKeyRevoked(Uuid),
    /// A connection's token was replaced or the connection disconnected.
    ConnectionTokenRevoked(Uuid),
    /// A portal session was revoked.
    PortalSessionRevoked(Uuid),
    /// The operator set or cleared an account's rate limit (`None`: the default again).
    RateLimitChanged {
        account_id: Uuid,
        limit: Option<RateLimit>,
    },
}

impl Notice {
    /// The kind of token a revocation revokes; `None` for other notices.
    pub fn revoked_kind(&self) -> Option<TokenKind> {
        match self {
            Notice::ApiKeyRevoked(_) => Some(TokenKind::ApiKey),
            Notice::ConnectionTokenRevoked(_) => Some(TokenKind::Connection),
            Notice::PortalSessionRevoked(_) => Some(TokenKind::Portal),
            _ => None,
        }
    }

    /// Whether this notice revokes the token `principal` authenticated with.
    pub fn revokes(&self, principal: &Principal) -> bool {
        match (self, principal) {
            (Notice::ApiKeyRevoked(key), Principal::Account { api_key_id, .. }) => {
                api_key_id == key
            }
            (
                Notice::ConnectionTokenRevoked(connection),
                Principal::Connection { connection_id, .. },
            ) => connection_id == connection,
            (Notice::PortalSessionRevoked(session), Principal::Portal(grant)) => {
                grant.session_id == *session
            }
            _ => false,
        }
    }
}

/// The process's listeners for [`Notice`]s; cheap to clone, one per process (the [`Db`]
/// handle carries it).
///
/// [`Db`]: crate::db::Db
#[derive(Clone, Default)]
pub struct Notifier {
    sync_queued: Arc<Notify>,
    bulk_queued: Arc<Notify>,
    deliveries_queued: Arc<Notify>,
    auth_cache: Arc<AuthCache>,
    sockets: Arc<Sockets>,
    rate_limits: Arc<Overrides>,
}

impl Notifier {
    pub fn notify(&self, notice: Notice) {
        match notice {
            // Every idle sync worker looks: runs of several connections may be waiting.
            Notice::SyncQueued => self.sync_queued.notify_waiters(),
            Notice::BulkQueued => self.bulk_queued.notify_waiters(),
            // One delivery worker claims for all (it batches); a stored permit means a
            // claim in progress looks again.
            Notice::DeliveriesQueued => self.deliveries_queued.notify_one(),
            Notice::ApiKeyRevoked(_)
            | Notice::ConnectionTokenRevoked(_)
            | Notice::PortalSessionRevoked(_) => {
                self.forget(notice);
                self.sockets.close(|p| notice.revokes(p));
            }
            Notice::RateLimitChanged { account_id, limit } => {
                self.rate_limits.set(account_id, limit);
            }
        }
    }

    /// A revocation committed by another process: the cache forgets the token at once (its
    /// sockets here are closed by a sweep of the database, which tells a rotated connection
    /// token from the one that replaced it).
    pub fn revoked_elsewhere(&self, notice: Notice) {
        self.forget(notice);
    }

    fn forget(&self, notice: Notice) {
        if let Some(kind) = notice.revoked_kind() {
            self.auth_cache.forget(kind, |p| notice.revokes(p));
        }
    }

    /// What the sync workers wait on between polls.
    pub fn sync_queued(&self) -> Arc<Notify> {
        self.sync_queued.clone()
    }

    /// What the bulk-write workers wait on between polls.
    pub fn bulk_queued(&self) -> Arc<Notify> {
        self.bulk_queued.clone()
    }

    /// What the webhook delivery workers wait on between polls.
    pub fn deliveries_queued(&self) -> Arc<Notify> {
        self.deliveries_queued.clone()
    }

    /// The WebSockets of this process, which revocations close.
    pub fn sockets(&self) -> Arc<Sockets> {
        self.sockets.clone()
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

/// What a PostgreSQL LISTEN connection hears.
pub enum Heard {
    /// The connection (again) listens: what was sent while none did is to be read from the
    /// database.
    Listening,
    /// A `NOTIFY` payload.
    Payload(String),
}

/// LISTENs on a PostgreSQL `channel` on a connection of its own until shutdown or until the
/// receiver is dropped; a lost connection is opened again, with backoff.
pub fn listen(
    url: String,
    channel: &'static str,
    shutdown: CancellationToken,
) -> mpsc::Receiver<Heard> {
    let (heard, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            match PgListener::connect(&url).await {
                Ok(mut listener) => match listener.listen(channel).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(100);
                        let mut next = Heard::Listening;
                        loop {
                            if heard.send(next).await.is_err() {
                                return;
                            }
                            let received = tokio::select! {
                                () = shutdown.cancelled() => return,
                                // Its reader is gone (a worker that failed and restarts).
                                () = heard.closed() => return,
                                received = listener.recv() => received,
                            };
                            match received {
                                Ok(notification) => {
                                    next = Heard::Payload(notification.payload().to_owned())
                                }
                                Err(err) => {
                                    tracing::warn!(error = %err, channel, "LISTEN connection lost; reconnecting");
                                    break;
                                }
                            }
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, channel, "LISTEN failed"),
                },
                Err(err) => tracing::warn!(error = %err, channel, "LISTEN connection failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = heard.closed() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
    receiver
}
