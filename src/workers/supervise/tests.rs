//! The supervisor under paused time: restarts, backoff, readiness and shutdown.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU32, Ordering},
};

use super::*;
use crate::workers::Workers;

fn policy() -> Policy {
    Policy {
        first_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(8),
        healthy_after: Duration::from_secs(30),
        failing_after: 3,
    }
}

fn counter() -> IntCounterVec {
    IntCounterVec::new(prometheus::Opts::new("restarts", "restarts"), &["worker"]).unwrap()
}

/// Workers with the test policy, and their restart counter.
fn workers(shutdown: &CancellationToken) -> (Workers, IntCounterVec) {
    let restarts = counter();
    let workers = Workers::new(shutdown.clone(), restarts.clone(), policy());
    (workers, restarts)
}

/// When each run of a worker started, from the start of the test.
#[derive(Clone, Default)]
struct Starts(Arc<Mutex<Vec<Duration>>>);

impl Starts {
    fn record(&self, origin: Instant) -> usize {
        let mut starts = self.0.lock().unwrap();
        starts.push(origin.elapsed());
        starts.len()
    }

    fn get(&self) -> Vec<Duration> {
        self.0.lock().unwrap().clone()
    }
}

#[test]
fn the_backoff_doubles_up_to_its_cap() {
    let backoffs: Vec<u64> = (1..=6).map(|n| policy().backoff(n).as_secs()).collect();
    assert_eq!(backoffs, [1, 2, 4, 8, 8, 8]);
    assert_eq!(policy().backoff(u32::MAX), Duration::from_secs(8));
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_panics_is_restarted_and_counted() {
    let shutdown = CancellationToken::new();
    let (mut workers, restarts) = workers(&shutdown);
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    workers.spawn("flaky", move |stop: CancellationToken| {
        let run = counted.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            assert!(run > 1, "the first run panics");
            stop.cancelled().await;
        }
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2, "restarted once");
    assert_eq!(restarts.with_label_values(&["flaky"]).get(), 1);
    assert!(
        workers.health().failing().is_empty(),
        "one failure is not failing"
    );
    workers.stop().await;
    assert_eq!(runs.load(Ordering::SeqCst), 2, "not restarted at shutdown");
}

#[tokio::test(start_paused = true)]
async fn errors_and_early_returns_are_failures_too() {
    let shutdown = CancellationToken::new();
    let (mut workers, restarts) = workers(&shutdown);
    workers.spawn("erring", |_| async { Err::<(), _>("the database is gone") });
    workers.spawn("returning", |_| async {});
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(restarts.with_label_values(&["erring"]).get(), 1);
    assert_eq!(restarts.with_label_values(&["returning"]).get(), 1);
    workers.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_backoff_grows_and_resets_after_a_healthy_run() {
    let shutdown = CancellationToken::new();
    let (mut workers, _) = workers(&shutdown);
    let origin = Instant::now();
    let starts = Starts::default();
    let recorded = starts.clone();
    workers.spawn("worker", move |_| {
        let run = recorded.record(origin);
        async move {
            // The sixth run is healthy for a while, then fails again.
            if run == 6 {
                tokio::time::sleep(Duration::from_secs(40)).await;
            }
            Err::<(), _>("fails")
        }
    });
    tokio::time::sleep(Duration::from_secs(68)).await;
    workers.stop().await;
    let gaps: Vec<u64> = starts
        .get()
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs())
        .collect();
    // 1, 2, 4, 8, then capped at 8; after the healthy run (40 s) the backoff is 1 s, then
    // 2 s again.
    assert_eq!(gaps, [1, 2, 4, 8, 8, 40 + 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_keeps_failing_is_named_until_it_runs_healthily() {
    let shutdown = CancellationToken::new();
    let (mut workers, _) = workers(&shutdown);
    let health = workers.health();
    workers.spawn("steady", |stop: CancellationToken| async move {
        stop.cancelled().await;
    });
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    workers.spawn("broken", move |stop: CancellationToken| {
        let run = counted.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if run <= 3 {
                return Err(format!("attempt {run} failed"));
            }
            stop.cancelled().await;
            Ok(())
        }
    });
    // Failures at 0 s and 1 s: two in a row are not yet "keeps failing".
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(health.failing().is_empty(), "{:?}", health.failing());
    // The third at 3 s; restarted at 7 s, and healthy 30 s later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failing = health.failing();
    assert_eq!(
        failing,
        [Failing {
            worker: "broken",
            failures: 3,
            last_error: "attempt 3 failed".to_owned(),
        }]
    );
    assert_eq!(
        failing[0].to_string(),
        "worker broken keeps failing (3 failures in a row; last: attempt 3 failed)"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    assert_eq!(health.failing().len(), 1, "running, but not yet for long");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(health.failing().is_empty(), "{:?}", health.failing());
    workers.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_a_worker_waiting_out_its_backoff() {
    let shutdown = CancellationToken::new();
    let restarts = counter();
    let long = Policy {
        first_backoff: Duration::from_secs(3600),
        ..policy()
    };
    let mut workers = Workers::new(shutdown.clone(), restarts.clone(), long);
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    workers.spawn("broken", move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Err::<(), _>("broken") }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    tokio::time::timeout(Duration::from_secs(1), workers.stop())
        .await
        .expect("stopped at once, not after the hour's backoff");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(restarts.with_label_values(&["broken"]).get(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_injected_panic_fails_only_the_named_worker() {
    let shutdown = CancellationToken::new();
    let (mut workers, restarts) = workers(&shutdown);
    workers.panic_in = Some("victim");
    for name in ["victim", "bystander"] {
        workers.spawn(name, |stop: CancellationToken| async move {
            stop.cancelled().await;
        });
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(restarts.with_label_values(&["victim"]).get(), 2);
    assert_eq!(restarts.with_label_values(&["bystander"]).get(), 0);
    let failing = workers.health().failing();
    assert_eq!(failing.len(), 1);
    assert_eq!(failing[0].worker, "victim");
    assert!(
        failing[0].last_error.contains("injected failure"),
        "{failing:?}"
    );
    workers.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_loop_that_panics_stops_its_siblings_and_fails_the_worker() {
    let shutdown = CancellationToken::new();
    let stopping = shutdown.child_token();
    let stopped = Arc::new(AtomicU32::new(0));
    let mut loops = JoinSet::new();
    for n in 0..3 {
        let (stop, stopped) = (stopping.clone(), stopped.clone());
        loops.spawn(async move {
            if n == 1 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                panic!("loop {n} broke");
            }
            stop.cancelled().await;
            stopped.fetch_add(1, Ordering::SeqCst);
        });
    }
    let error = join_loops(loops, &stopping, "a test loop")
        .await
        .unwrap_err();
    assert!(error.starts_with("a test loop failed"), "{error}");
    assert!(error.contains("loop 1 broke"), "{error}");
    assert_eq!(stopped.load(Ordering::SeqCst), 2, "the others stopped");
    assert!(!shutdown.is_cancelled(), "only the worker's loops stop");
}

#[tokio::test(start_paused = true)]
async fn loops_that_stop_at_shutdown_are_no_failure() {
    let shutdown = CancellationToken::new();
    let stopping = shutdown.child_token();
    let mut loops = JoinSet::new();
    for _ in 0..2 {
        let stop = stopping.clone();
        loops.spawn(async move { stop.cancelled().await });
    }
    let joined = tokio::spawn({
        let stopping = stopping.clone();
        async move { join_loops(loops, &stopping, "a test loop").await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    shutdown.cancel();
    assert_eq!(joined.await.unwrap(), Ok(()));
}
