//! Prometheus metrics of the daemon, served on `GET /metrics` in the OpenMetrics text format.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// What `GET /metrics` is: prometheus-client encodes OpenMetrics 1.0 text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub struct Metrics {
    registry: Registry,
    pub reconcile_seconds: Histogram,
    pub last_applied_commit_time: Gauge<f64, AtomicU64>,
    pub steps: Family<Vec<(String, String)>, Counter>,
    pub drifted: Gauge,
    pub api_requests: Family<Vec<(String, String)>, Counter>,
    pub reconciles: Family<Vec<(String, String)>, Counter>,
    pub notifications: Family<Vec<(String, String)>, Counter>,
    pub notification_failing: Family<Vec<(String, String)>, Gauge>,
    pub store_errors: Counter,
    /// Synced from `store::postgresql::calls` when rendered.
    store_queries: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("capstan");
        let reconcile_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile takes, from trigger to outcome",
            reconcile_seconds.clone(),
        );
        let last_applied_commit_time = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_applied_commit_timestamp_seconds",
            "Unix time at which the last commit was applied",
            last_applied_commit_time.clone(),
        );
        let steps = Family::<Vec<(String, String)>, Counter>::default();
        registry.register("steps", "Plan steps run, by outcome", steps.clone());
        let drifted = Gauge::default();
        registry.register(
            "drifted_resources",
            "Resources that differed from the applied commit at the last resync",
            drifted.clone(),
        );
        let api_requests = Family::<Vec<(String, String)>, Counter>::default();
        registry.register("api_requests", "Requests to the platform API, by status code", api_requests.clone());
        let reconciles = Family::<Vec<(String, String)>, Counter>::default();
        registry.register("reconciles", "Reconciles, by result", reconciles.clone());
        let notifications = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "notifications",
            "Notification sends, by receiver and result (delivered, retried, given_up, dropped)",
            notifications.clone(),
        );
        let notification_failing = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register(
            "notification_receiver_failing",
            "1 while a receiver's last notification was given up on",
            notification_failing.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "store_errors",
            "Records the history store failed to keep (each is also logged at error level)",
            store_errors.clone(),
        );
        let store_queries = Counter::default();
        registry.register(
            "store_queries",
            "Round trips to the PostgreSQL store (history, leases, fence, shared journal)",
            store_queries.clone(),
        );
        Metrics {
            registry,
            reconcile_seconds,
            last_applied_commit_time,
            steps,
            drifted,
            api_requests,
            reconciles,
            notifications,
            notification_failing,
            store_errors,
            store_queries,
        }
    }
}

impl Metrics {
    pub fn step(&self, outcome: &str) {
        self.steps.get_or_create(&vec![("outcome".to_string(), outcome.to_string())]).inc();
    }

    pub fn reconcile(&self, result: &str) {
        self.reconciles.get_or_create(&vec![("result".to_string(), result.to_string())]).inc();
    }

    /// The text exposition, with the platform request counts brought up to date first.
    pub fn render(&self) -> String {
        for (code, n) in crate::http::request_counts() {
            let c = self.api_requests.get_or_create(&vec![("code".to_string(), code)]);
            let have = c.get();
            if n > have {
                c.inc_by(n - have);
            }
        }
        let calls = crate::daemon::store::postgresql::calls();
        if calls > self.store_queries.get() {
            self.store_queries.inc_by(calls - self.store_queries.get());
        }
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("metrics encode to a string");
        out
    }
}
