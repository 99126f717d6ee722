//! Prometheus metrics of one server instance, served at `/metrics`.
//!
//! Operation names come from clients, so they label series only for authenticated callers
//! and only up to `metrics_max_operation_names` distinct names; every series lives as long as
//! the process, so an unbounded label would be unbounded memory.

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub graphql_requests: IntCounterVec,
    pub graphql_duration: HistogramVec,
    pub db_statements: IntCounter,
    /// Restarts of each background worker after it failed (`worker` label).
    pub worker_restarts: IntCounterVec,
    /// Evaluations, matches and errors of each flow.
    pub flows: FlowMetrics,
    pub webhooks: WebhookMetrics,
    operations: Arc<OperationNames>,
}

/// Per-flow counters (`flow` label: the flow's id). A flow's series lives as long as the
/// process; an account has at most 100 flows.
#[derive(Clone)]
pub struct FlowMetrics {
    evaluations: IntCounterVec,
    matches: IntCounterVec,
    errors: IntCounterVec,
}

impl FlowMetrics {
    fn new() -> Self {
        let counter = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["flow"]).expect("valid metric")
        };
        FlowMetrics {
            evaluations: counter(
                "millwright_flow_evaluations_total",
                "Flow conditions evaluated against a record change",
            ),
            matches: counter(
                "millwright_flow_matches_total",
                "Record changes a flow's condition held for",
            ),
            errors: counter(
                "millwright_flow_errors_total",
                "Flow evaluations and actions that failed",
            ),
        }
    }

    /// Adds one flow's counts.
    pub fn add(&self, flow: uuid::Uuid, counts: &crate::flows::trigger::Counts) {
        let label = crate::ids::encode(crate::ids::Kind::Flow, flow);
        for (counter, n) in [
            (&self.evaluations, counts.evaluations),
            (&self.matches, counts.matches),
            (&self.errors, counts.errors),
        ] {
            if n > 0 {
                counter
                    .with_label_values(&[label.as_str()])
                    .inc_by(n as u64);
            }
        }
    }
}

/// Counters of this process's webhook delivery: how its deliveries came to be leased to it,
/// and how often its dispatcher stopped for room (see `webhooks::deliver::lease::Pacing`).
#[derive(Clone)]
pub struct WebhookMetrics {
    leased: IntCounterVec,
    held_back: IntCounter,
    paused: IntCounter,
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WebhookMetrics {
    pub fn new() -> Self {
        WebhookMetrics {
            leased: IntCounterVec::new(
                Opts::new(
                    "millwright_webhook_deliveries_leased_total",
                    "Deliveries this process leased to send: by=\"dispatcher\" created leased, by=\"claim\" claimed after they were created",
                ),
                &["by"],
            )
            .expect("valid metric"),
            held_back: IntCounter::new(
                "millwright_webhook_dispatch_held_back_total",
                "Times the webhook dispatcher stopped reading events until this process had room to send more",
            )
            .expect("valid metric"),
            paused: IntCounter::new(
                "millwright_webhook_dispatch_paused_accounts_total",
                "Times an account's room did not come back soon enough and it stopped holding the dispatcher back for a while",
            )
            .expect("valid metric"),
        }
    }

    fn collectors(&self) -> [Box<dyn prometheus::core::Collector>; 3] {
        [
            Box::new(self.leased.clone()),
            Box::new(self.held_back.clone()),
            Box::new(self.paused.clone()),
        ]
    }

    /// `n` new deliveries created leased to this process by its dispatcher.
    pub fn leased_by_dispatcher(&self, n: usize) {
        self.leased
            .with_label_values(&["dispatcher"])
            .inc_by(n as u64);
    }

    /// `n` deliveries claimed by this process.
    pub fn leased_by_claim(&self, n: usize) {
        self.leased.with_label_values(&["claim"]).inc_by(n as u64);
    }

    pub fn held_back(&self) {
        self.held_back.inc();
    }

    pub fn paused(&self) {
        self.paused.inc();
    }
}

/// The operation label of requests that brought no valid token, whatever their names.
pub const UNAUTHENTICATED: &str = "unauthenticated";
/// The operation label of authenticated operations once the distinct names are used up.
pub const OTHER: &str = "other";
/// The operation label of authenticated operations without a name.
pub const ANONYMOUS: &str = "anonymous";
/// The operation label of every operation of a portal session: the names browsers send must
/// not use up the labels.
pub const PORTAL: &str = "portal";

/// Who ran an operation, as the metrics see it.
#[derive(Clone, Copy, Debug)]
pub enum Caller<'a> {
    /// A valid token, and the operation's name if it has one.
    Authenticated(Option<&'a str>),
    /// No token, or a token that did not authenticate.
    Unauthenticated,
    /// A portal session's token (a browser's).
    Portal,
}

impl<'a> Caller<'a> {
    /// `principal` running the operation named `name`, as the metrics see it.
    pub fn of(principal: &crate::auth::Principal, name: Option<&'a str>) -> Self {
        match principal {
            crate::auth::Principal::Anonymous => Caller::Unauthenticated,
            crate::auth::Principal::Portal(_) => Caller::Portal,
            _ => Caller::Authenticated(name),
        }
    }
}

/// The names already labelled, at most `limit` of them.
struct OperationNames {
    seen: RwLock<HashSet<String>>,
    limit: usize,
}

impl OperationNames {
    fn label(&self, caller: Caller<'_>) -> String {
        let name = match caller {
            Caller::Unauthenticated => return UNAUTHENTICATED.to_owned(),
            Caller::Portal => return PORTAL.to_owned(),
            Caller::Authenticated(name) => sanitize(name),
        };
        if name == ANONYMOUS
            || self
                .seen
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(&name)
        {
            return name;
        }
        let mut seen = self
            .seen
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(&name) || seen.len() < self.limit {
            seen.insert(name.clone());
            return name;
        }
        OTHER.to_owned()
    }
}

impl Metrics {
    /// Metrics that label at most `operation_names` distinct operation names.
    pub fn new(operation_names: usize) -> Self {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "millwright_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        let graphql_requests = IntCounterVec::new(
            Opts::new(
                "millwright_graphql_requests_total",
                "GraphQL operations by name and outcome",
            ),
            &["operation", "outcome"],
        )
        .expect("valid metric");
        let graphql_duration = HistogramVec::new(
            HistogramOpts::new(
                "millwright_graphql_request_duration_seconds",
                "GraphQL operation latency by operation name",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["operation"],
        )
        .expect("valid metric");
        let db_statements =
            IntCounter::new("millwright_db_statements_total", "SQL statements executed")
                .expect("valid metric");
        let worker_restarts = IntCounterVec::new(
            Opts::new(
                "millwright_worker_restarts_total",
                "Restarts of background workers after a panic, an error or an early return",
            ),
            &["worker"],
        )
        .expect("valid metric");
        let flows = FlowMetrics::new();
        let webhooks = WebhookMetrics::new();
        for collector in webhooks.collectors().into_iter().chain([
            Box::new(db_statements.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(flows.evaluations.clone()),
            Box::new(flows.matches.clone()),
            Box::new(flows.errors.clone()),
            Box::new(worker_restarts.clone()),
            Box::new(http_requests.clone()),
            Box::new(graphql_requests.clone()),
            Box::new(graphql_duration.clone()),
        ]) {
            registry
                .register(collector)
                .expect("metric registered once");
        }
        Self {
            db_statements,
            worker_restarts,
            flows,
            webhooks,
            registry,
            http_requests,
            graphql_requests,
            graphql_duration,
            operations: Arc::new(OperationNames {
                seen: RwLock::default(),
                limit: operation_names,
            }),
        }
    }

    /// Records one GraphQL operation that ran.
    pub fn observe_graphql(&self, caller: Caller<'_>, ok: bool, seconds: f64) {
        let operation = self.operations.label(caller);
        let outcome = if ok { "ok" } else { "error" };
        self.graphql_requests
            .with_label_values(&[operation.as_str(), outcome])
            .inc();
        self.graphql_duration
            .with_label_values(&[operation.as_str()])
            .observe(seconds);
    }

    /// Records a GraphQL request refused before it ran: no valid token, or over its rate limit.
    pub fn count_refused(&self, caller: Caller<'_>) {
        let operation = self.operations.label(caller);
        self.graphql_requests
            .with_label_values(&[operation.as_str(), "refused"])
            .inc();
    }

    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = encoder.encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

fn sanitize(operation: Option<&str>) -> String {
    match operation {
        Some(name) if !name.is_empty() => name
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
        _ => ANONYMOUS.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_are_bounded_and_unauthenticated_ones_not_labelled() {
        let metrics = Metrics::new(2);
        for name in ["a", "b", "c", "a", "d"] {
            metrics.observe_graphql(Caller::Authenticated(Some(name)), true, 0.01);
        }
        metrics.count_refused(Caller::Unauthenticated);
        metrics.observe_graphql(Caller::Authenticated(None), true, 0.01);
        let labels = |o: &str| metrics.graphql_requests.with_label_values(&[o, "ok"]).get();
        assert_eq!(labels("a"), 2);
        assert_eq!(labels("b"), 1);
        assert_eq!(labels(OTHER), 2, "c and d");
        assert_eq!(labels(ANONYMOUS), 1);
        let refused = metrics
            .graphql_requests
            .with_label_values(&[UNAUTHENTICATED, "refused"])
            .get();
        assert_eq!(refused, 1);
    }
}
