//! Who is calling: bearer tokens (account API keys, connection tokens, portal sessions' tokens,
//! the admin token), how they are made and checked, and the `Principal` every request runs as.

pub mod sockets;
mod token;

pub use token::{GeneratedToken, TokenKind, generate, hash_token};

use std::{collections::HashMap, sync::Mutex, time::Instant};

use chrono::{DateTime, Duration, Utc};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::{config::Secret, connections::Scope, db::Db, error::AppError};
use entity::{api_key, connection, customer, portal_session};

/// How often `lastUsedAt` is written at most; finer tracking would turn every read into a write.
const LAST_USED_RESOLUTION: Duration = Duration::seconds(60);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    Admin,
    Account {
        account_id: Uuid,
        api_key_id: Uuid,
    },
    /// A connection token: that connection, its runs, records and events, and nothing else.
    Connection {
        account_id: Uuid,
        connection_id: Uuid,
    },
    /// A portal session's token (`mwp_…`), held by a browser: one customer's connections,
    /// the catalog, and nothing of the account (docs/portal.md).
    Portal(PortalGrant),
}

/// What a portal session lets its browser do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortalGrant {
    pub account_id: Uuid,
    pub session_id: Uuid,
    pub customer_id: Uuid,
    /// The systems it may see and connect; `None`: every system.
    pub allowed_systems: Option<std::sync::Arc<[String]>>,
    /// The most connections (not disconnected) its customer may have after a connect it makes.
    pub max_connections: u32,
    pub expires_at: DateTime<Utc>,
}

impl PortalGrant {
    /// Whether the session may see and connect the system `key`.
    pub fn allows(&self, key: &str) -> bool {
        self.allowed_systems
            .as_ref()
            .is_none_or(|keys| keys.iter().any(|k| k == key))
    }
}

/// The refusal of everything a portal session may not do.
fn portal_forbidden() -> AppError {
    AppError::Forbidden(
        "a portal session may see only its customer's connections and the catalog; use an account API key"
            .into(),
    )
}

/// The token a request came with, as rate limits count it: each token has its own bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenId {
    ApiKey(Uuid),
    /// A connection token, by its connection: a rotated token keeps the connection's bucket.
    Connection(Uuid),
    /// A portal session's token, by its session.
    Portal(Uuid),
}

impl Principal {
    /// The rate-limited token behind this caller and its account; the admin token and
    /// anonymous callers have none.
    pub fn token(&self) -> Option<(TokenId, Uuid)> {
        match self {
            Principal::Account {
                account_id,
                api_key_id,
            } => Some((TokenId::ApiKey(*api_key_id), *account_id)),
            Principal::Connection {
                account_id,
                connection_id,
            } => Some((TokenId::Connection(*connection_id), *account_id)),
            Principal::Portal(grant) => Some((TokenId::Portal(grant.session_id), grant.account_id)),
            Principal::Admin | Principal::Anonymous => None,
        }
    }

    /// The account this caller manages; connection tokens and the admin manage none.
    pub fn account_id(&self) -> Result<Uuid, AppError> {
        match self {
            Principal::Account { account_id, .. } => Ok(*account_id),
            Principal::Connection { .. } => Err(AppError::Forbidden(
                "a connection token cannot manage the account; use an account API key".into(),
            )),
            Principal::Portal(_) => Err(portal_forbidden()),
            Principal::Anonymous => Err(unauthenticated("missing bearer token")),
            Principal::Admin => Err(AppError::Forbidden(
                "the admin token manages accounts only".into(),
            )),
        }
    }

    /// What this caller may read: its account, narrowed to one connection for a connection
    /// token. A portal session has no such scope: what it may do asks for
    /// [`connections_scope`](Self::connections_scope) instead.
    pub fn scope(&self) -> Result<Scope, AppError> {
        match self {
            Principal::Connection {
                account_id,
                connection_id,
            } => Ok(Scope {
                account_id: *account_id,
                connection_id: Some(*connection_id),
                customer_id: None,
            }),
            other => other.account_id().map(Scope::account),
        }
    }

    /// The connections this caller may see and act on, where a portal session may too: the
    /// scope of [`scope`](Self::scope), or a portal session's customer's connections.
    pub fn connections_scope(&self) -> Result<Scope, AppError> {
        match self {
            Principal::Portal(grant) => Ok(Scope {
                account_id: grant.account_id,
                connection_id: None,
                customer_id: Some(grant.customer_id),
            }),
            other => other.scope(),
        }
    }

    /// The connections this caller may manage (check, disconnect, give new credentials): all
    /// of the account's with an account key, its customer's with a portal session; a
    /// connection token manages none.
    pub fn managed_scope(&self) -> Result<Scope, AppError> {
        match self {
            Principal::Portal(_) => self.connections_scope(),
            other => other.account_id().map(Scope::account),
        }
    }

    /// The portal session behind this caller, if it is one.
    pub fn portal(&self) -> Option<&PortalGrant> {
        match self {
            Principal::Portal(grant) => Some(grant),
            _ => None,
        }
    }

    /// Refuses a portal session what only the account's own keys and tokens may see.
    pub fn deny_portal(&self) -> Result<(), AppError> {
        match self {
            Principal::Portal(_) => Err(portal_forbidden()),
            _ => Ok(()),
        }
    }

    pub fn require_admin(&self) -> Result<(), AppError> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Anonymous => Err(unauthenticated("missing bearer token")),
            Principal::Account { .. } | Principal::Connection { .. } | Principal::Portal(_) => Err(
                AppError::Forbidden("this operation needs the admin token".into()),
            ),
        }
    }
}

fn unauthenticated(message: &str) -> AppError {
    AppError::Unauthenticated(message.to_owned())
}

/// Recently verified tokens, so that a busy client does not cost a database read per request.
/// Entries live briefly: a revocation on this instance clears the cache at once, one on
/// another instance takes effect here within `AUTH_CACHE_TTL`.
#[derive(Default)]
pub struct AuthCache {
    entries: Mutex<HashMap<String, (Principal, Instant)>>,
    /// Each kind's count of `forget`s: a lookup that began before a revocation of its kind
    /// does not cache what it read. By kind, as a revocation matches only principals of its
    /// own (`Notice::revokes`): the disconnects of a busy account do not keep its API key
    /// from being cached.
    revocations: [std::sync::atomic::AtomicU64; 3],
}

fn kind_index(kind: TokenKind) -> usize {
    match kind {
        TokenKind::ApiKey => 0,
        TokenKind::Connection => 1,
        TokenKind::Portal => 2,
    }
}

pub const AUTH_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(2);
const AUTH_CACHE_MAX: usize = 10_000;

impl AuthCache {
    fn get(&self, hash: &str) -> Option<Principal> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(hash)
            .filter(|(_, at)| at.elapsed() < AUTH_CACHE_TTL)
            .map(|(p, _)| p.clone())
    }

    /// Moves on every revocation this process learns of (its own, or another's `NOTIFY`).
    pub fn revocations(&self) -> u64 {
        self.revocations
            .iter()
            .map(|n| n.load(std::sync::atomic::Ordering::SeqCst))
            .sum()
    }

    /// Moves on every revocation of a token of `kind` this process learns of.
    pub fn revocations_of(&self, kind: TokenKind) -> u64 {
        self.revocations[kind_index(kind)].load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Caches a lookup of a `kind` token that began when `revocations_of(kind)` read `seen`,
    /// unless a token of that kind was revoked since: what the lookup read may be the
    /// revoked token.
    fn put(&self, hash: String, principal: Principal, kind: TokenKind, seen: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if self.revocations_of(kind) != seen {
            return;
        }
        if entries.len() >= AUTH_CACHE_MAX {
            entries.retain(|_, (_, at)| at.elapsed() < AUTH_CACHE_TTL);
            if entries.len() >= AUTH_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(hash, (principal, Instant::now()));
    }

    /// Forgets the cached tokens of the principals that match, all of them authenticated by
    /// tokens of `kind`; called whenever a key or token is revoked or replaced, so no cached
    /// copy outlives it in this process.
    pub fn forget(&self, kind: TokenKind, revoked: impl Fn(&Principal) -> bool) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.revocations[kind_index(kind)].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        entries.retain(|_, (principal, _)| !revoked(principal));
    }
}

/// Resolves an `Authorization` header value (or a WebSocket `authorization` field).
pub async fn authenticate(
    db: &Db,
    cache: &AuthCache,
    admin_token: Option<&Secret>,
    header: Option<&str>,
) -> Result<Principal, AppError> {
    let Some(header) = header else {
        return Ok(Principal::Anonymous);
    };
    let token = bearer(header)?;
    let Some(kind) = TokenKind::of(token) else {
        return match is_admin_token(admin_token, token) {
            true => Ok(Principal::Admin),
            false => Err(unauthenticated("invalid token")),
        };
    };
    let hash = hash_token(token);
    if let Some(principal) = cache.get(&hash) {
        return unexpired(principal);
    }
    let seen = cache.revocations_of(kind);
    let principal = match kind {
        TokenKind::ApiKey => authenticate_api_key(db, &hash).await?,
        TokenKind::Connection => authenticate_connection(db, &hash).await?,
        TokenKind::Portal => authenticate_portal(db, &hash).await?,
    };
    cache.put(hash, principal.clone(), kind, seen);
    Ok(principal)
}

/// A cached portal session stops authenticating the moment it expires, not when the cache
/// entry does.
fn unexpired(principal: Principal) -> Result<Principal, AppError> {
    match &principal {
        Principal::Portal(grant) if grant.expires_at <= Utc::now() => {
            Err(unauthenticated(PORTAL_INVALID))
        }
        _ => Ok(principal),
    }
}

/// The token of a `Bearer <token>` credential. The scheme's name is case-insensitive and
/// one or more spaces follow it (RFC 7235 §2.1, RFC 6750 §2.1).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

/// The token of an `Authorization` value.
fn bearer(header: &str) -> Result<&str, AppError> {
    bearer_token(header)
        .ok_or_else(|| unauthenticated("the Authorization header must be `Bearer <token>`"))
}

/// The stored hash of the token in an `Authorization` value, which names the token without
/// holding it (e.g. to count a token's sockets).
pub fn token_hash(header: &str) -> Option<String> {
    bearer(header).ok().map(hash_token)
}

fn is_admin_token(admin_token: Option<&Secret>, token: &str) -> bool {
    // Compare hashes so that the comparison takes the same time whatever the lengths.
    admin_token.is_some_and(|admin| {
        let expected = hash_token(admin.expose());
        bool::from(expected.as_bytes().ct_eq(hash_token(token).as_bytes()))
    })
}

async fn authenticate_api_key(db: &Db, hash: &str) -> Result<Principal, AppError> {
    let key = api_key::Entity::find()
        .filter(api_key::Column::TokenHash.eq(hash))
        .one(db.conn())
        .await?
        .filter(|key| key.revoked_at.is_none())
        .ok_or_else(|| unauthenticated("invalid or revoked API key"))?;
    let now = Utc::now();
    if key
        .last_used_at
        .is_none_or(|at| now - at > LAST_USED_RESOLUTION)
    {
        touch_api_key(db, key.id, now).await?;
    }
    Ok(Principal::Account {
        account_id: key.account_id,
        api_key_id: key.id,
    })
}

async fn authenticate_connection(db: &Db, hash: &str) -> Result<Principal, AppError> {
    // Disconnecting erases the hash, so only live connections are found.
    let found = connection::Entity::find()
        .filter(connection::Column::TokenHash.eq(hash))
        .one(db.conn())
        .await?
        .ok_or_else(|| unauthenticated("invalid or revoked connection token"))?;
    Ok(Principal::Connection {
        account_id: found.account_id,
        connection_id: found.id,
    })
}

const PORTAL_INVALID: &str = "invalid, expired or revoked portal session";

async fn authenticate_portal(db: &Db, hash: &str) -> Result<Principal, AppError> {
    let now = Utc::now();
    let (session, customer) = portal_session::Entity::find()
        .filter(portal_session::Column::TokenHash.eq(hash))
        .find_also_related(customer::Entity)
        .one(db.conn())
        .await?
        .ok_or_else(|| unauthenticated(PORTAL_INVALID))?;
    // A deleted customer's sessions end with it.
    let live = session.revoked_at.is_none()
        && session.expires_at > now
        && customer.is_some_and(|c| c.deleted_at.is_none());
    if !live {
        return Err(unauthenticated(PORTAL_INVALID));
    }
    Ok(Principal::Portal(PortalGrant {
        account_id: session.account_id,
        session_id: session.id,
        customer_id: session.customer_id,
        allowed_systems: crate::portal::allowed_systems(&session),
        max_connections: session.max_connections.max(0) as u32,
        expires_at: session.expires_at,
    }))
}

async fn touch_api_key(db: &Db, id: Uuid, now: DateTime<Utc>) -> Result<(), AppError> {
    let txn = db.begin_write().await?;
    let update = api_key::ActiveModel {
        id: Set(id),
        last_used_at: Set(Some(now)),
        ..Default::default()
    };
    update.update(&*txn).await?;
    txn.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in [
            "Bearer t",
            "bearer t",
            "BEARER t",
            "bEaReR   t",
            " Bearer t ",
        ] {
            assert_eq!(bearer_token(header), Some("t"), "{header:?}");
        }
        for header in [
            "Bearer",
            "Bearer ",
            "Basic t",
            "Bearert",
            "t",
            "Bearer t u",
            "",
        ] {
            assert_eq!(bearer_token(header), None, "{header:?}");
        }
    }

    #[test]
    fn a_lookup_older_than_a_revocation_is_not_cached() {
        let cache = AuthCache::default();
        let key = Principal::Account {
            account_id: Uuid::now_v7(),
            api_key_id: Uuid::now_v7(),
        };
        let seen = cache.revocations_of(TokenKind::ApiKey);
        // The key is revoked while the lookup that found it valid is still running.
        cache.forget(TokenKind::ApiKey, |p| *p == key);
        cache.put("h".into(), key.clone(), TokenKind::ApiKey, seen);
        assert_eq!(cache.get("h"), None);
        // A lookup that began after it is cached.
        let seen = cache.revocations_of(TokenKind::ApiKey);
        cache.put("h".into(), key.clone(), TokenKind::ApiKey, seen);
        assert_eq!(cache.get("h"), Some(key.clone()));
        // A connection token's revocation during a key's lookup does not stop its caching
        // (it cannot revoke a key), and counts among all revocations.
        let (seen, all) = (cache.revocations_of(TokenKind::ApiKey), cache.revocations());
        cache.forget(TokenKind::Connection, |_| false);
        cache.put("k".into(), key.clone(), TokenKind::ApiKey, seen);
        assert_eq!(cache.get("k"), Some(key));
        assert_eq!(cache.revocations(), all + 1);
    }
}
