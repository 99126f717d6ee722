//! The WebSockets open on this process, by token: the cap on sockets per token, and how a
//! revoked token's sockets learn of it.
//!
//! A socket takes a [`Slot`] when its `connection_init` authenticates and gives it back when it
//! ends. Revocations close sockets through their slot's [`CancellationToken`]:
//!
//! - in the revoking process, at once: the after-commit [`Notice`](crate::notify::Notice);
//! - in the others, by [`sweep`]: which of the tokens held here still authenticate, read from
//!   the database (not the authentication cache). On PostgreSQL a sweep runs on every
//!   `NOTIFY` of a revocation ([`announce`] has one sent once the revoking transaction
//!   committed), after each (re)connection of the listener, and every [`POLL`] while sockets
//!   are open (a process that dies between its commit and its `NOTIFY` never sends it); on
//!   SQLite, whose processes share a file and nothing else, every [`POLL`] while sockets are
//!   open.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Principal;
use crate::{
    db::{Db, WriteTxn},
    error::AppResult,
    notify::{self, Heard, Notice},
};
use entity::{api_key, connection, portal_session};

/// The PostgreSQL channel revocations are announced on.
pub const CHANNEL: &str = "millwright_revocations";
/// How often SQLite processes look for revocations made by others.
const POLL: Duration = Duration::from_secs(1);
/// Token hashes asked about in one statement.
const SWEEP_BATCH: usize = 500;

/// The sockets of this process by token hash.
#[derive(Default)]
pub struct Sockets {
    next: AtomicU64,
    open: Mutex<HashMap<String, Holder>>,
}

/// The open sockets of one token.
struct Holder {
    principal: Principal,
    /// Each socket's signal to close, by slot number.
    sockets: HashMap<u64, CancellationToken>,
}

/// One socket's place in [`Sockets`]; dropped, it frees it.
pub struct Slot {
    sockets: Arc<Sockets>,
    hash: String,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.sockets.lock();
        if let Some(holder) = open.get_mut(&self.hash) {
            holder.sockets.remove(&self.id);
            if holder.sockets.is_empty() {
                open.remove(&self.hash);
            }
        }
    }
}

impl Sockets {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Holder>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a socket of the token whose hash is `hash`, unless that token already has
    /// `max` sockets open here. `revoked` fires when the token is revoked.
    pub fn open(
        self: &Arc<Self>,
        hash: String,
        principal: &Principal,
        max: usize,
        revoked: CancellationToken,
    ) -> Option<Slot> {
        let mut open = self.lock();
        let holder = open.entry(hash.clone()).or_insert_with(|| Holder {
            principal: principal.clone(),
            sockets: HashMap::new(),
        });
        if holder.sockets.len() >= max {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        holder.sockets.insert(id, revoked);
        Some(Slot {
            sockets: self.clone(),
            hash,
            id,
        })
    }

    /// Closes the sockets of the principals that match.
    pub fn close(&self, revoked: impl Fn(&Principal) -> bool) {
        for holder in self.lock().values() {
            if revoked(&holder.principal) {
                holder.sockets.values().for_each(CancellationToken::cancel);
            }
        }
    }

    /// Closes the sockets of these tokens.
    fn close_tokens(&self, hashes: &HashSet<String>) {
        let open = self.lock();
        for hash in hashes {
            if let Some(holder) = open.get(hash) {
                holder.sockets.values().for_each(CancellationToken::cancel);
            }
        }
    }

    /// The hashes of the API keys, connection tokens and portal sessions' tokens with sockets
    /// here (the admin token is not revoked while the server runs).
    fn revocable(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, holder)| {
                matches!(
                    holder.principal,
                    Principal::Account { .. } | Principal::Connection { .. } | Principal::Portal(_)
                )
            })
            .map(|(hash, _)| hash.clone())
            .collect()
    }

    /// Whether no socket is open here (a token without sockets is forgotten).
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// Closes the sockets here whose token no longer authenticates: an API key revoked, a
/// connection token replaced or erased, a portal session revoked or expired, in any process.
pub async fn sweep(db: &Db, sockets: &Sockets) -> AppResult<()> {
    for batch in sockets.revocable().chunks(SWEEP_BATCH) {
        let keys: Vec<String> = api_key::Entity::find()
            .select_only()
            .column(api_key::Column::TokenHash)
            .filter(api_key::Column::TokenHash.is_in(batch.iter().cloned()))
            .filter(api_key::Column::RevokedAt.is_null())
            .into_tuple()
            .all(db.conn())
            .await?;
        let connections: Vec<Option<String>> = connection::Entity::find()
            .select_only()
            .column(connection::Column::TokenHash)
            .filter(connection::Column::TokenHash.is_in(batch.iter().cloned()))
            .into_tuple()
            .all(db.conn())
            .await?;
        let portals: Vec<String> = portal_session::Entity::find()
            .select_only()
            .column(portal_session::Column::TokenHash)
            .filter(portal_session::Column::TokenHash.is_in(batch.iter().cloned()))
            .filter(portal_session::Column::RevokedAt.is_null())
            .filter(portal_session::Column::ExpiresAt.gt(chrono::Utc::now()))
            .into_tuple()
            .all(db.conn())
            .await?;
        let live: HashSet<String> = keys
            .into_iter()
            .chain(connections.into_iter().flatten())
            .chain(portals)
            .collect();
        let revoked: HashSet<String> = batch
            .iter()
            .filter(|hash| !live.contains(*hash))
            .cloned()
            .collect();
        if !revoked.is_empty() {
            sockets.close_tokens(&revoked);
        }
    }
    Ok(())
}

/// Acts on `notice` when `txn` commits, in this process and, on PostgreSQL, in every other
/// (a `NOTIFY` sent once the commit is done, outside the transaction: see
/// [`Db::announce_commits`]).
pub fn announce(txn: &WriteTxn, notice: Notice) {
    txn.after_commit(notice);
    if let Some(payload) = payload(notice) {
        txn.announce(CHANNEL, payload);
    }
}

fn payload(notice: Notice) -> Option<String> {
    match notice {
        Notice::ApiKeyRevoked(id) => Some(format!("api_key:{id}")),
        Notice::ConnectionTokenRevoked(id) => Some(format!("connection:{id}")),
        Notice::PortalSessionRevoked(id) => Some(format!("portal:{id}")),
        Notice::SyncQueued
        | Notice::BulkQueued
        | Notice::DeliveriesQueued
        | Notice::RateLimitChanged { .. } => None,
    }
}

fn parse(payload: &str) -> Option<Notice> {
    let (kind, id) = payload.split_once(':')?;
    let id = Uuid::parse_str(id).ok()?;
    match kind {
        "api_key" => Some(Notice::ApiKeyRevoked(id)),
        "connection" => Some(Notice::ConnectionTokenRevoked(id)),
        "portal" => Some(Notice::PortalSessionRevoked(id)),
        _ => None,
    }
}

/// Closes this process's sockets of tokens revoked by other processes until shutdown:
/// LISTEN on PostgreSQL (`postgres_url`), a poll on SQLite.
pub async fn watch(db: Db, postgres_url: Option<String>, shutdown: CancellationToken) {
    match postgres_url {
        Some(url) => listen(db, url, shutdown).await,
        None => poll(db, shutdown).await,
    }
}

async fn poll(db: Db, shutdown: CancellationToken) {
    let sockets = db.notifier().sockets();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
        if sockets.is_empty() {
            continue;
        }
        if let Err(err) = sweep(&db, &sockets).await {
            tracing::warn!(error = %err, "looking for revoked tokens failed");
        }
    }
}

/// LISTENs for revocations; after a dropped connection it reconnects and sweeps, which finds
/// whatever was revoked meanwhile.
async fn listen(db: Db, url: String, shutdown: CancellationToken) {
    let notifier = db.notifier().clone();
    let sockets = notifier.sockets();
    let mut heard = notify::listen(url, CHANNEL, shutdown);
    let mut timer = tokio::time::interval(POLL);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            heard = heard.recv() => {
                let Some(heard) = heard else { return };
                if let Heard::Payload(payload) = heard
                    && let Some(notice) = parse(&payload)
                {
                    notifier.revoked_elsewhere(notice);
                }
            }
            _ = timer.tick() => {
                if sockets.is_empty() {
                    continue;
                }
            }
        }
        if let Err(err) = sweep(&db, &sockets).await {
            tracing::warn!(error = %err, "looking for revoked tokens failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Principal {
        Principal::Account {
            account_id: Uuid::now_v7(),
            api_key_id: Uuid::now_v7(),
        }
    }

    #[test]
    fn a_token_holds_at_most_max_slots_and_a_dropped_one_is_free_again() {
        let sockets = Arc::new(Sockets::default());
        let principal = key();
        let open = || sockets.open("h".into(), &principal, 2, CancellationToken::new());
        let first = open().unwrap();
        let _second = open().unwrap();
        assert!(open().is_none());
        assert!(
            sockets
                .open("other".into(), &key(), 2, CancellationToken::new())
                .is_some()
        );
        drop(first);
        assert!(open().is_some());
    }

    #[test]
    fn closing_a_principal_signals_its_sockets_only() {
        let sockets = Arc::new(Sockets::default());
        let (revoked, kept) = (key(), key());
        let (a, b) = (CancellationToken::new(), CancellationToken::new());
        let _a = sockets.open("a".into(), &revoked, 5, a.clone()).unwrap();
        let _b = sockets.open("b".into(), &kept, 5, b.clone()).unwrap();
        sockets.close(|p| *p == revoked);
        assert!(a.is_cancelled());
        assert!(!b.is_cancelled());
    }

    #[test]
    fn payloads_round_trip() {
        let id = Uuid::now_v7();
        for notice in [
            Notice::ApiKeyRevoked(id),
            Notice::ConnectionTokenRevoked(id),
            Notice::PortalSessionRevoked(id),
        ] {
            assert_eq!(parse(&payload(notice).unwrap()), Some(notice));
        }
        assert_eq!(parse("api_key:nope"), None);
    }
}
