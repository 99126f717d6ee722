//! API rate limits (docs/rate-limits.md): a token bucket for each API key and connection
//! token, sized by the configuration or by its account's own limit, and one for each client
//! address whose requests bring no valid token. The buckets are governor's keyed limiters
//! (GCRA): one per distinct limit in use, keyed by the token, so an account's new limit
//! takes effect at its next request with a full bucket.

use std::{
    collections::HashMap,
    hash::Hash,
    net::{IpAddr, Ipv6Addr},
    num::NonZeroU32,
    sync::{
        Arc, RwLock, RwLockReadGuard, RwLockWriteGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter, middleware::StateInformationMiddleware,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    accounts,
    auth::{AUTH_CACHE_TTL, Principal, TokenId},
    config::Config,
    db::Db,
    error::AppError,
};

/// How often idle buckets (full again, so the same as none) are dropped.
const HOUSEKEEPING: Duration = Duration::from_secs(30);

type Keyed<K> = DefaultKeyedRateLimiter<K, StateInformationMiddleware>;

/// Requests per second and burst: the size of a token bucket and how fast it refills.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl RateLimit {
    /// The largest rate or burst a limit may have, the same as the settings allow.
    pub const MAX: u32 = 1_000_000;

    /// A limit within `1..=MAX` for both numbers; the message names the bad one.
    pub fn new(per_second: i64, burst: i64) -> Result<Self, AppError> {
        let check = |name: &str, value: i64| {
            u32::try_from(value)
                .ok()
                .filter(|v| (1..=Self::MAX).contains(v))
                .ok_or_else(|| {
                    AppError::bad_input(format!("`{name}` must be between 1 and {}", Self::MAX))
                })
        };
        Ok(Self {
            per_second: check("requestsPerSecond", per_second)?,
            burst: check("burst", burst)?,
        })
    }

    fn quota(self) -> Quota {
        let nonzero = |v: u32| NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN);
        Quota::per_second(nonzero(self.per_second)).allow_burst(nonzero(self.burst))
    }

    fn limiter<K: Hash + Eq + Clone>(self) -> Keyed<K> {
        RateLimiter::dashmap(self.quota()).with_middleware::<StateInformationMiddleware>()
    }

    /// Seconds until a bucket holding `remaining` is full again.
    fn seconds_to_refill(self, remaining: u32) -> u64 {
        let missing = self.burst.saturating_sub(remaining);
        (f64::from(missing) / f64::from(self.per_second)).ceil() as u64
    }
}

/// The accounts' own limits as this process knows them: set at once by a change made here
/// (an after-commit notice), read again from the database every 2 s on PostgreSQL, where
/// other processes may make changes.
#[derive(Default)]
pub struct Overrides {
    limits: RwLock<HashMap<Uuid, RateLimit>>,
    /// Moves on every change made here: a reload that began before one does not undo it.
    changes: AtomicU64,
}

impl Overrides {
    pub fn get(&self, account: Uuid) -> Option<RateLimit> {
        read(&self.limits).get(&account).copied()
    }

    /// An account's limit changed here (`None`: back to the default).
    pub fn set(&self, account: Uuid, limit: Option<RateLimit>) {
        let mut limits = write(&self.limits);
        self.changes.fetch_add(1, Ordering::SeqCst);
        match limit {
            Some(limit) => limits.insert(account, limit),
            None => limits.remove(&account),
        };
    }

    /// Replaces every limit with what the database held, read after `changes` was `seen`.
    fn replace(&self, all: HashMap<Uuid, RateLimit>, seen: u64) {
        let mut limits = write(&self.limits);
        if self.changes.load(Ordering::SeqCst) == seen {
            *limits = all;
        }
    }

    fn in_use(&self) -> Vec<RateLimit> {
        read(&self.limits).values().copied().collect()
    }
}

/// A token's bucket after an admitted request: the `RateLimit-*` response headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowance {
    /// The bucket's size.
    pub limit: u32,
    /// Requests the bucket still holds.
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_seconds: u64,
}

/// Why a request was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The bucket is empty for now.
    Wait {
        /// Headers to send with the refusal (nothing remains).
        allowance: Allowance,
        retry_after_seconds: u64,
    },
    /// A batch of more operations than the bucket holds can never pass.
    TooLarge { operations: u32, burst: u32 },
}

impl Refused {
    pub fn error(self) -> AppError {
        match self {
            Refused::Wait {
                retry_after_seconds,
                ..
            } => AppError::RateLimited {
                retry_after_seconds,
            },
            Refused::TooLarge { operations, burst } => AppError::bad_input(format!(
                "a batch of {operations} operations is more than this token's burst of {burst}; \
                 send fewer at once"
            )),
        }
    }
}

/// Every rate limit of one process.
pub struct RateLimits {
    default: RateLimit,
    tokens: Keyed<TokenId>,
    /// A limiter for each account limit in use.
    custom: RwLock<HashMap<RateLimit, Arc<Keyed<TokenId>>>>,
    overrides: Arc<Overrides>,
    failed_auth: Keyed<IpAddr>,
}

impl RateLimits {
    pub fn new(config: &Config, overrides: Arc<Overrides>) -> Self {
        let settings = &config.rate_limits;
        let default = RateLimit {
            per_second: settings.api_requests_per_second,
            burst: settings.api_burst,
        };
        let failed_auth = RateLimit {
            per_second: settings.failed_auth_per_second,
            burst: settings.failed_auth_burst,
        };
        Self {
            default,
            tokens: default.limiter(),
            custom: RwLock::default(),
            overrides,
            failed_auth: failed_auth.limiter(),
        }
    }

    /// Takes `operations` requests from the caller's token bucket; `None` for callers without
    /// a token (the admin token and anonymous callers).
    pub fn admit(
        &self,
        principal: &Principal,
        operations: u32,
    ) -> Option<Result<Allowance, Refused>> {
        let (token, account) = principal.token()?;
        let verdict = match self.overrides.get(account) {
            None => take(&self.tokens, self.default, &token, operations),
            Some(limit) => take(&self.custom_limiter(limit), limit, &token, operations),
        };
        Some(verdict)
    }

    /// Counts a request that brought no valid token from `address`; `Err` holds the seconds
    /// to wait when there were too many.
    pub fn admit_failed_auth(&self, address: IpAddr) -> Result<(), u64> {
        match self.failed_auth.check_key(&client(address)) {
            Ok(_) => Ok(()),
            Err(not_until) => {
                let wait =
                    not_until.wait_time_from(governor::clock::Clock::now(self.failed_auth.clock()));
                Err(retry_after(wait))
            }
        }
    }

    fn custom_limiter(&self, limit: RateLimit) -> Arc<Keyed<TokenId>> {
        if let Some(limiter) = read(&self.custom).get(&limit) {
            return limiter.clone();
        }
        write(&self.custom)
            .entry(limit)
            .or_insert_with(|| Arc::new(limit.limiter()))
            .clone()
    }

    /// Reads the accounts' own limits from the database.
    pub async fn reload(&self, db: &Db) -> Result<(), AppError> {
        let seen = self.overrides.changes.load(Ordering::SeqCst);
        let all = accounts::rate_limits(db.conn()).await?;
        self.overrides.replace(all, seen);
        Ok(())
    }

    /// Drops buckets that are full again (they are the same as none) and the limiters of
    /// limits no account has any more, so memory follows the tokens in use, not those seen.
    fn sweep(&self) {
        self.tokens.retain_recent();
        self.tokens.shrink_to_fit();
        self.failed_auth.retain_recent();
        self.failed_auth.shrink_to_fit();
        let in_use = self.overrides.in_use();
        let mut custom = write(&self.custom);
        custom.retain(|limit, limiter| {
            limiter.retain_recent();
            limiter.shrink_to_fit();
            in_use.contains(limit) || !limiter.is_empty()
        });
    }

    /// Sweeps every 30 s and, when other processes may change limits (`reload_every`),
    /// reloads the accounts' limits, until `shutdown`.
    pub async fn housekeep(
        self: Arc<Self>,
        db: Db,
        reload_every: Option<Duration>,
        shutdown: CancellationToken,
    ) {
        let mut sweep = tokio::time::interval(HOUSEKEEPING);
        let mut reload = tokio::time::interval(reload_every.unwrap_or(HOUSEKEEPING));
        loop {
            tokio::select! {
                _ = sweep.tick() => self.sweep(),
                _ = reload.tick(), if reload_every.is_some() => {
                    if let Err(err) = self.reload(&db).await {
                        tracing::warn!(error = %err, "reading the accounts' rate limits failed");
                    }
                }
                () = shutdown.cancelled() => return,
            }
        }
    }
}

/// How often a process reads the accounts' limits again when several may share the database.
pub const RELOAD_EVERY: Duration = AUTH_CACHE_TTL;

fn take<K: Hash + Eq + Clone>(
    limiter: &Keyed<K>,
    limit: RateLimit,
    key: &K,
    operations: u32,
) -> Result<Allowance, Refused> {
    let n = NonZeroU32::new(operations).unwrap_or(NonZeroU32::MIN);
    let checked = if n == NonZeroU32::MIN {
        Ok(limiter.check_key(key))
    } else {
        limiter.check_key_n(key, n)
    };
    match checked {
        Ok(Ok(snapshot)) => {
            let remaining = snapshot.remaining_burst_capacity();
            Ok(Allowance {
                limit: limit.burst,
                remaining,
                reset_seconds: limit.seconds_to_refill(remaining),
            })
        }
        Ok(Err(not_until)) => {
            let now = governor::clock::Clock::now(limiter.clock());
            Err(Refused::Wait {
                allowance: Allowance {
                    limit: limit.burst,
                    remaining: 0,
                    reset_seconds: limit.seconds_to_refill(0),
                },
                retry_after_seconds: retry_after(not_until.wait_time_from(now)),
            })
        }
        Err(_) => Err(Refused::TooLarge {
            operations,
            burst: limit.burst,
        }),
    }
}

/// Whole seconds, rounded up: a client that waits this long gets through.
fn retry_after(wait: Duration) -> u64 {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    seconds.max(1)
}

/// The bucket a client address counts against: an IPv6 client owns a whole /64.
fn client(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !u128::from(u64::MAX);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_second: u32, burst: u32) -> RateLimits {
        let mut config = Config::default();
        config.rate_limits.api_requests_per_second = per_second;
        config.rate_limits.api_burst = burst;
        config.rate_limits.failed_auth_per_second = 1;
        config.rate_limits.failed_auth_burst = 2;
        RateLimits::new(&config, Arc::default())
    }

    fn key() -> Principal {
        Principal::Account {
            account_id: Uuid::now_v7(),
            api_key_id: Uuid::now_v7(),
        }
    }

    #[test]
    fn a_bucket_counts_down_then_refuses_with_a_wait() {
        let limits = limits(1, 3);
        let caller = key();
        let remaining: Vec<u32> = (0..3)
            .map(|_| limits.admit(&caller, 1).unwrap().unwrap().remaining)
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        let Err(Refused::Wait {
            retry_after_seconds,
            allowance,
        }) = limits.admit(&caller, 1).unwrap()
        else {
            panic!("refused")
        };
        assert_eq!(retry_after_seconds, 1);
        assert_eq!(allowance.remaining, 0);
        assert_eq!(allowance.reset_seconds, 3);
        assert!(limits.admit(&Principal::Admin, 1).is_none());
    }

    #[test]
    fn a_batch_takes_one_per_operation_and_never_more_than_the_burst() {
        let limits = limits(1, 5);
        let caller = key();
        assert_eq!(limits.admit(&caller, 4).unwrap().unwrap().remaining, 1);
        assert!(matches!(
            limits.admit(&caller, 6).unwrap(),
            Err(Refused::TooLarge {
                operations: 6,
                burst: 5
            })
        ));
    }

    #[test]
    fn an_account_limit_replaces_the_default_at_once() {
        let overrides = Arc::new(Overrides::default());
        let limits = RateLimits::new(&Config::default(), overrides.clone());
        let caller = key();
        let (_, account) = caller.token().unwrap();
        assert_eq!(limits.admit(&caller, 1).unwrap().unwrap().limit, 100);
        overrides.set(account, Some(RateLimit::new(1, 2).unwrap()));
        assert_eq!(limits.admit(&caller, 1).unwrap().unwrap().limit, 2);
        overrides.set(account, None);
        assert_eq!(limits.admit(&caller, 1).unwrap().unwrap().limit, 100);
    }

    #[test]
    fn failed_authentication_is_counted_per_address_and_ipv6_per_64() {
        let limits = limits(1, 1);
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        let other: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(limits.admit_failed_auth(a).is_ok());
        assert!(limits.admit_failed_auth(b).is_ok());
        assert_eq!(limits.admit_failed_auth(a), Err(1));
        assert!(limits.admit_failed_auth(other).is_ok());
    }

    #[test]
    fn limits_out_of_bounds_are_refused() {
        for (rate, burst) in [(0, 1), (1, 0), (-1, 5), (1, i64::from(RateLimit::MAX) + 1)] {
            assert!(RateLimit::new(rate, burst).is_err(), "{rate}/{burst}");
        }
    }
}
