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
    /// A fleet's per-unit gauges (the unlabelled ones above are a daemon of one unit's).
    pub unit_drifted: Family<Vec<(String, String)>, Gauge>,
    pub unit_last_applied_commit_time: Family<Vec<(String, String)>, Gauge<f64, AtomicU64>>,
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
        let unit_drifted = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register(
            "unit_drifted_resources",
            "Resources that differed from the applied commit at the last resync, by unit (a daemon of several units)",
            unit_drifted.clone(),
        );
        let unit_last_applied_commit_time = Family::<Vec<(String, String)>, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "unit_last_applied_commit_timestamp_seconds",
            "Unix time at which the unit's last commit was applied, by unit (a daemon of several units)",
            unit_last_applied_commit_time.clone(),
        );
        let store_queries = Counter::default();
        registry.register(
            "store_queries",
            "Round trips to the PostgreSQL store (history, leases, fence, shared journal)",
            store_queries.clone(),
        );
        Metrics {
            registry,
            unit_drifted,
            unit_last_applied_commit_time,
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

    /// A step's outcome, labelled with its unit's name when the daemon has several.
    pub fn step_in(&self, unit: Option<&str>, outcome: &str) {
        match unit {
            None => self.step(outcome),
            Some(u) => {
                self.steps.get_or_create(&labels(u, "outcome", outcome)).inc();
            }
        }
    }

    /// How many resources drifted: the daemon's gauge, or the unit's when it has several.
    pub fn drifted_in(&self, unit: Option<&str>, n: i64) {
        match unit {
            None => {
                self.drifted.set(n);
            }
            Some(u) => {
                self.unit_drifted.get_or_create(&vec![("unit".to_string(), u.to_string())]).set(n);
            }
        }
    }

    /// When a commit was last applied: the daemon's gauge, or the unit's when it has several.
    pub fn applied_in(&self, unit: Option<&str>, at: f64) {
        match unit {
            None => {
                self.last_applied_commit_time.set(at);
            }
            Some(u) => {
                self.unit_last_applied_commit_time.get_or_create(&vec![("unit".to_string(), u.to_string())]).set(at);
            }
        }
    }

    /// A reconcile's result, labelled with its unit's name when the daemon has several.
    pub fn reconcile_in(&self, unit: Option<&str>, result: &str) {
        match unit {
            None => self.reconcile(result),
            Some(u) => {
                self.reconciles.get_or_create(&labels(u, "result", result)).inc();
            }
        }
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

fn labels(unit: &str, key: &str, value: &str) -> Vec<(String, String)> {
    vec![("unit".to_string(), unit.to_string()), (key.to_string(), value.to_string())]
}
