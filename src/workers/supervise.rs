//! Supervision: each worker runs under a supervisor that logs a panic, an error or an early
//! return with the worker's name, and starts the worker again after a backoff; it keeps the
//! state `/readyz` reports and counts restarts in `millwright_worker_restarts_total`.
//!
//! Backoff doubles from [`Policy::first_backoff`] with each failure of a streak, up to
//! [`Policy::max_backoff`]. A run that lasted [`Policy::healthy_after`] was healthy: the
//! next failure starts a new streak, at the first backoff again. A worker *keeps failing*
//! once its streak reaches [`Policy::failing_after`] failures, until a run of it lasts
//! `healthy_after` (readiness is then green again, without waiting for the next failure).
//!
//! The backoff is written out here rather than taken from a retry crate: it is three lines,
//! and its reset is tied to how long a run lasted, which the supervisor alone knows.

use std::{
    any::Any,
    collections::BTreeMap,
    fmt,
    future::Future,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::FutureExt as _;
use prometheus::IntCounterVec;
use tokio::{task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

/// How a supervisor backs off and when it calls a worker failing.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// The wait before the first restart of a streak.
    pub first_backoff: Duration,
    /// The longest wait between restarts.
    pub max_backoff: Duration,
    /// A run that lasts this long was healthy: it ends a streak of failures.
    pub healthy_after: Duration,
    /// Failures in a streak from which the worker keeps failing (readiness names it).
    pub failing_after: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            healthy_after: Duration::from_secs(60),
            failing_after: 3,
        }
    }
}

impl Policy {
    /// The wait after the `failures`-th failure of a streak (counted from 1).
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }
}

/// What one run of a worker came to: `()`, or a `Result` whose error says why it ended.
pub trait Outcome {
    fn into_result(self) -> Result<(), String>;
}

impl Outcome for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: fmt::Display> Outcome for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|err| err.to_string())
    }
}

/// A worker that keeps failing, as `/readyz` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failing {
    pub worker: &'static str,
    /// Failures in its current streak.
    pub failures: u32,
    /// Why its last run ended.
    pub last_error: String,
}

impl fmt::Display for Failing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "worker {} keeps failing ({} failures in a row; last: {})",
            self.worker, self.failures, self.last_error
        )
    }
}

/// The supervision state of every worker of a process; clones share it.
#[derive(Clone, Default)]
pub struct WorkerHealth {
    policy: Policy,
    workers: Arc<Mutex<BTreeMap<&'static str, State>>>,
}

#[derive(Default)]
struct State {
    /// Failures since the last healthy run.
    streak: u32,
    /// When the current run started; `None` while the worker waits to restart.
    running_since: Option<Instant>,
    last_error: String,
}

impl WorkerHealth {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            workers: Arc::default(),
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    fn update(&self, worker: &'static str, change: impl FnOnce(&mut State)) {
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        change(workers.entry(worker).or_default());
    }

    /// The workers that keep failing, by name.
    pub fn failing(&self) -> Vec<Failing> {
        let now = Instant::now();
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        workers
            .iter()
            .filter(|(_, state)| {
                let healthy_now = state
                    .running_since
                    .is_some_and(|since| now - since >= self.policy.healthy_after);
                state.streak >= self.policy.failing_after && !healthy_now
            })
            .map(|(&worker, state)| Failing {
                worker,
                failures: state.streak,
                last_error: state.last_error.clone(),
            })
            .collect()
    }
}

/// One worker under supervision: its name, how to start it, and where it reports.
pub struct Supervised<F> {
    pub name: &'static str,
    pub factory: F,
    pub health: WorkerHealth,
    pub restarts: IntCounterVec,
    /// Testing only: the worker panics each time it starts.
    pub inject_panic: bool,
}

impl<F, Fut> Supervised<F>
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future,
    Fut::Output: Outcome,
{
    /// Runs the worker until it returns after `shutdown`; restarts it when it fails before.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let policy = self.health.policy;
        let mut streak = 0;
        loop {
            let started = Instant::now();
            self.health
                .update(self.name, |s| s.running_since = Some(started));
            let ended = self.run_once(&shutdown).await;
            if shutdown.is_cancelled() {
                if let Err(error) = ended {
                    tracing::warn!(worker = self.name, %error, "worker failed while stopping");
                }
                return;
            }
            let error = ended
                .err()
                .unwrap_or_else(|| "returned before shutdown".to_owned());
            if started.elapsed() >= policy.healthy_after {
                streak = 0;
            }
            streak += 1;
            let backoff = policy.backoff(streak);
            tracing::error!(
                worker = self.name,
                %error,
                failures = streak,
                backoff_ms = backoff.as_millis() as u64,
                "worker failed; restarting after the backoff"
            );
            self.health.update(self.name, |s| {
                s.streak = streak;
                s.running_since = None;
                s.last_error = error;
            });
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            self.restarts.with_label_values(&[self.name]).inc();
        }
    }

    /// One run; a panic (of the factory or of the future) is an error naming its message.
    async fn run_once(&mut self, shutdown: &CancellationToken) -> Result<(), String> {
        let inject_panic = self.inject_panic;
        let factory = &mut self.factory;
        let run = async move {
            if inject_panic {
                panic!("injected failure (config.testing.panic_in_worker)");
            }
            // Boxed: a worker's future can be large, and the supervisor holds it throughout.
            Box::pin(factory(shutdown.clone())).await.into_result()
        };
        AssertUnwindSafe(run)
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_message(&*panic))))
    }
}

/// Waits for the loops a worker spawned, which stop on `stopping` (a child of the worker's
/// shutdown token). The first loop that panics or ends while `stopping` has not fired fails
/// the worker: `stopping` fires so that the others stop as at shutdown, and once they have,
/// the error naming `what` failed is returned.
pub async fn join_loops(
    mut loops: JoinSet<()>,
    stopping: &CancellationToken,
    what: &str,
) -> Result<(), String> {
    let mut failure = None;
    while let Some(ended) = loops.join_next().await {
        let why = match ended {
            Ok(()) if stopping.is_cancelled() => continue,
            Ok(()) => format!("{what} ended before shutdown"),
            Err(err) => format!("{what} failed: {err}"),
        };
        if failure.is_none() {
            stopping.cancel();
            failure = Some(why);
        } else {
            tracing::error!(error = %why, "another loop of the worker failed");
        }
    }
    failure.map_or(Ok(()), Err)
}

/// The message a panic was raised with, when it has one.
pub fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests;
