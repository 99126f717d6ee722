//! Prometheus metrics of one server instance, served at `/metrics`.

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
}

impl Metrics {
    pub fn new() -> Self {
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
        for collector in [
            Box::new(db_statements.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_requests.clone()),
            Box::new(graphql_requests.clone()),
            Box::new(graphql_duration.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric registered once");
        }
        Self {
            db_statements,
            registry,
            http_requests,
            graphql_requests,
            graphql_duration,
        }
    }

    /// Records one GraphQL operation. Names come from clients, so they are bounded.
    pub fn observe_graphql(&self, operation: Option<&str>, ok: bool, seconds: f64) {
        let operation = operation_label(operation);
        let outcome = if ok { "ok" } else { "error" };
        self.graphql_requests
            .with_label_values(&[operation.as_str(), outcome])
            .inc();
        self.graphql_duration
            .with_label_values(&[operation.as_str()])
            .observe(seconds);
    }

    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = encoder.encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn operation_label(operation: Option<&str>) -> String {
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
        _ => "anonymous".to_owned(),
    }
}
