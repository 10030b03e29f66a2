//! Prometheus metrics served on `/metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AbortLabels {
    pub namespace: String,
    pub pool: String,
    pub reason: String,
}

pub struct Metrics {
    pub reconciles: Counter,
    pub aborts: Family<AbortLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    pub registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("workerpool");
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let aborts = Family::<AbortLabels, Counter>::default();
        registry.register(
            "worker_aborts",
            "Worker aborts by pool and reason, each termination counted once",
            aborts.clone(),
        );
        registry.register("reconciles", "WorkerPool reconciles", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed WorkerPool reconciles by category",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one WorkerPool reconcile",
            duration.clone(),
        );
        Metrics {
            reconciles,
            aborts,
            errors,
            duration,
            registry,
        }
    }
}

impl Metrics {
    pub fn observe_reconcile(&self, took: Duration, error: Option<&'static str>) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(category) = error {
            self.errors.get_or_create(&ErrorLabels { category }).inc();
        }
    }

    pub fn count_abort(&self, namespace: &str, pool: &str, reason: &str) {
        self.aborts
            .get_or_create(&AbortLabels {
                namespace: namespace.to_string(),
                pool: pool.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!("encoding metrics failed: {e}");
        }
        out
    }
}
