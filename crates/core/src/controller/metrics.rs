//! Prometheus metrics served on `/metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::aborts::classify::Reason;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    pub namespace: String,
    pub pool: String,
    pub condition: String,
}

/// The conditions published per pool, so alerts can fire on them.
pub const GAUGED_CONDITIONS: [&str; 4] = ["Ready", "Reconciling", "Stalled", "Degraded"];

/// Abort reasons the chart's alerts watch: their counters exist at 0 from a pool's first
/// reconcile, so `increase()` sees the first abort too.
pub const ALERTED_REASONS: [Reason; 7] = [
    Reason::BootFailed,
    Reason::AppLoadFailed,
    Reason::OOMKilled,
    Reason::WorkerTimeout,
    Reason::StartupTimeout,
    Reason::LivenessTimeout,
    Reason::BrokerUnreachable,
];

pub struct Metrics {
    pub reconciles: Counter,
    /// Reconciles under way: a stop waits for these, and for nothing when there are none.
    pub in_flight: Gauge,
    pub conditions: Family<ConditionLabels, Gauge>,
    pub aborts: Family<AbortLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    pub registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("workerpool");
        let reconciles = Counter::default();
        let in_flight = Gauge::default();
        registry.register(
            "reconciles_in_flight",
            "Reconciles under way",
            in_flight.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let aborts = Family::<AbortLabels, Counter>::default();
        let conditions = Family::<ConditionLabels, Gauge>::default();
        registry.register(
            "pool_condition",
            "1 while the pool's condition is True, 0 while it is False",
            conditions.clone(),
        );
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
            in_flight,
            conditions,
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

    /// Publishes the pool's conditions, as its status now says them, and its alerted abort
    /// counters.
    pub fn publish_pool(
        &self,
        namespace: &str,
        pool: &str,
        conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    ) {
        for reason in ALERTED_REASONS {
            self.aborts
                .get_or_create(&AbortLabels {
                    namespace: namespace.to_string(),
                    pool: pool.to_string(),
                    reason: reason.as_str().to_string(),
                })
                .inc_by(0);
        }
        for condition in conditions
            .iter()
            .filter(|c| GAUGED_CONDITIONS.contains(&c.type_.as_str()))
        {
            self.conditions
                .get_or_create(&ConditionLabels {
                    namespace: namespace.to_string(),
                    pool: pool.to_string(),
                    condition: condition.type_.clone(),
                })
                .set(i64::from(condition.status == "True"));
        }
    }

    /// Drops the series of a deleted pool.
    pub fn forget_pool(&self, namespace: &str, pool: &str) {
        for reason in Reason::ALL {
            self.aborts.remove(&AbortLabels {
                namespace: namespace.to_string(),
                pool: pool.to_string(),
                reason: reason.as_str().to_string(),
            });
        }
        for condition in GAUGED_CONDITIONS {
            self.conditions.remove(&ConditionLabels {
                namespace: namespace.to_string(),
                pool: pool.to_string(),
                condition: condition.to_string(),
            });
        }
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
