//! The I/O edge: reads pools and the watch caches, applies children, writes status and Events.
//!
//! `reconcile_pool` observes (the pods, the Events and log tails they ask for, the children),
//! asks [`decide`](crate::decide::decide) for everything the reconcile does, and acts on it: the
//! children's writes, the status, the Events and the metrics. A write the API server refuses is
//! fed back as an observation and decided on again.

mod apply;
mod coalesce;
mod error;
pub mod kubelet;
pub mod logs;
pub mod managed_fields;
pub mod metrics;
pub mod pod_cache;
mod pools;
pub mod recorders;
mod report;
pub mod run;
pub mod triggers;
pub mod watched;
mod workers;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action;

use apply::Lookup;
use coalesce::Windows;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};

pub use error::Error;
use kubelet::{ApiEvents, EventReader};
use logs::{ApiLogs, LogReader, SampleBudget};
use metrics::Metrics;
use pod_cache::PodCache;
use pools::Pools;
use recorders::Recorders;
use report::{publish, write_status};

use crate::api::WorkerPool;
use crate::api::reason;
use crate::controller::watched::{Guarded, PackedBudget, PackedDeployment, PackedPool, Watched};
use crate::decide::{self, Decision, Observed, Prepared};
use crate::pool::Stall;
use crate::pool::derive::PoolRef;

/// Field manager for the status subresource, separate from the children's.
pub const STATUS_MANAGER: &str = "workerpool-operator-status";
pub use crate::decide::RESYNC;

/// Source of the current time, so the sandbox can run the controller on a virtual clock.
pub type Clock = Arc<dyn Fn() -> jiff::Timestamp + Send + Sync>;

/// The watch caches the controller reads instead of the API.
#[derive(Clone)]
pub struct Caches {
    /// Deployments with their spec packed: [`PackedDeployment::unpack`] gives the whole one.
    pub deployments: Store<Watched<PackedDeployment>>,
    pub pdbs: Store<Watched<PackedBudget>>,
    /// Pods carrying the pool label, as the views classification reads.
    pub pods: PodCache,
    pub jobs: Store<Watched<Job>>,
}

pub struct Context {
    pub client: Client,
    pub caches: Caches,
    pub recorders: Recorders,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    logs: Arc<dyn LogReader>,
    /// Shared by every pool: how many running logs may be sampled now.
    log_samples: SampleBudget,
    events: Arc<dyn EventReader>,
    /// What is kept of each pool between its reconciles, one record per pool.
    pools: Pools,
    /// The pools whose triggers are being gathered, told when a reconcile starts.
    windows: Windows<ObjectRef<Guarded<PackedPool>>>,
}

impl Context {
    pub fn new(
        client: Client,
        caches: Caches,
        reporter: Reporter,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Self {
        Context {
            logs: Arc::new(ApiLogs(client.clone())),
            log_samples: SampleBudget::default(),
            events: Arc::new(ApiEvents(client.clone())),
            recorders: Recorders::new(client.clone(), reporter),
            client,
            caches,
            metrics,
            clock,
            pools: Pools::default(),
            windows: Windows::default(),
        }
    }

    /// A pool as its watch delivered it: its record, and once the cache holds the last status
    /// write, that write's copy is let go, also for pools no reconcile looks at again.
    pub fn pool_seen(&self, meta: &kube::core::ObjectMeta) {
        self.pools.apply(meta);
    }

    /// Drops everything kept of a deleted pool, its metric series included.
    pub fn pool_deleted(&self, meta: &kube::core::ObjectMeta) {
        let labels = meta.uid.as_deref().and_then(|uid| self.pools.delete(uid));
        if let Some((namespace, name)) = labels {
            self.metrics.forget_pool(&namespace, &name);
        }
    }

    /// After a relist of the pools: forgets every pool the list no longer holds, deleted while
    /// the watch was away (no Delete event tells of those), its metric series included.
    pub fn pools_relisted(&self, listed: &[kube::core::ObjectMeta]) {
        let uids: HashSet<String> = listed.iter().filter_map(|m| m.uid.clone()).collect();
        for (namespace, name) in self.pools.reset(&uids) {
            self.metrics.forget_pool(&namespace, &name);
        }
    }

    /// Pools with an Event series remembered (for tests and sizing).
    pub fn folded_pools(&self) -> usize {
        self.pools.folded_pools()
    }

    /// Pools whose last status write this process remembers (for tests and sizing).
    pub fn remembered_pools(&self) -> usize {
        self.pools.written_pools()
    }

    /// Pools whose last status write time is remembered for pacing (for tests and sizing).
    pub fn paced_pools(&self) -> usize {
        self.pools.paced_pools()
    }

    /// Reads container logs from somewhere other than the API server (tests, the sandbox).
    pub fn with_logs(mut self, logs: Arc<dyn LogReader>) -> Self {
        self.logs = logs;
        self
    }

    /// Reads kubelet Events from somewhere other than the API server (tests).
    pub fn with_events(mut self, events: Arc<dyn EventReader>) -> Self {
        self.events = events;
        self
    }
}

/// Entry point for the controller runtime; records metrics around [`reconcile_pool`].
pub async fn reconcile(
    guard: Arc<Guarded<PackedPool>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    ctx.windows.look_started(&ObjectRef::from_obj(&*guard));
    ctx.metrics.in_flight.inc();
    let result = match &guard.0 {
        // Boxed, the pool too: kube's runner moves the future it is handed; this keeps that
        // future small.
        Ok(packed) => match packed.unpack().map(Box::new) {
            Ok(pool) => Box::pin(reconcile_pool(&pool, &ctx)).await,
            Err(source) => Err(Error::Read {
                kind: "WorkerPool".into(),
                name: packed.name_any(),
                source: kube::Error::SerdeError(source),
            }),
        },
        Err(invalid) => Box::pin(report_malformed(invalid, &ctx)).await,
    };
    ctx.metrics.in_flight.dec();
    ctx.metrics.observe_reconcile(
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    if result.is_ok()
        && let Some(uid) = guard.meta().uid.as_deref()
    {
        ctx.pools.succeeded(uid);
    }
    result
}

/// Per-object exponential backoff: 5 s, 10 s, 20 s, … up to 5 minutes.
pub fn error_policy(guard: Arc<Guarded<PackedPool>>, error: &Error, ctx: Arc<Context>) -> Action {
    let attempts = guard
        .meta()
        .uid
        .as_deref()
        .map_or(1, |uid| ctx.pools.failed(uid));
    tracing::warn!(pool = %guard.name_any(), category = error.category(), attempts, "reconcile failed: {error}");
    Action::requeue(backoff(attempts))
}

pub fn backoff(attempts: u32) -> Duration {
    let exponent = attempts.saturating_sub(1).min(6);
    Duration::from_secs((5u64 << exponent).min(300))
}

/// A WorkerPool that does not deserialize: say so on the object, keep the rest of the loop going.
async fn report_malformed(invalid: &InvalidObject, ctx: &Context) -> Result<Action, Error> {
    let meta = &invalid.metadata;
    let (Some(name), Some(namespace)) = (meta.name.as_deref(), meta.namespace.as_deref()) else {
        return Err(Error::Metadata("name or namespace"));
    };
    tracing::warn!(
        pool = name,
        namespace,
        "malformed WorkerPool: {}",
        invalid.error
    );
    let reference = ObjectReference {
        api_version: Some(WorkerPool::api_version(&()).into()),
        kind: Some(WorkerPool::kind(&()).into_owned()),
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        uid: meta.uid.clone(),
        ..Default::default()
    };
    let event = decide::malformed(&invalid.error.to_string());
    publish(ctx, &reference, &[event]).await;
    Ok(Action::await_change())
}

/// The API server refuses to create objects in a namespace being deleted.
pub(crate) fn namespace_terminating(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status)
        if status.code == 403 && status.message.contains("because it is being terminated"))
}

/// A request about a child that the API server refused for good (403, 422, …): retrying the same
/// request cannot succeed until someone changes the pool, the RBAC or an admission policy.
fn refusal(error: &Error, namespace: &str) -> Option<Stall> {
    let (verb, kind, name, source) = match error {
        Error::Apply { kind, name, source } => ("apply", kind, name, source),
        Error::Read { kind, name, source } => ("read", kind, name, source),
        _ => return None,
    };
    let kube::Error::Api(status) = source else {
        return None;
    };
    // Conflicts and throttling pass on their own; 5xx is the server's trouble, not the pool's.
    if !(400..500).contains(&status.code) || matches!(status.code, 408 | 409 | 429) {
        return None;
    }
    let advice = match status.code {
        401 | 403 => "grant the operator's ServiceAccount this verb (the chart's RBAC does)",
        _ => "change the pool so the object it derives is accepted",
    };
    Some(Stall {
        reason: reason::WRITE_REFUSED,
        message: format!(
            "the API server refused to {verb} {kind} {namespace}/{name} ({} {}): {}; {advice}",
            status.code, status.reason, status.message
        ),
    })
}

/// The pool's identity, which every object the API server returns carries; else the field
/// missing.
fn identity(pool: &WorkerPool) -> Result<PoolRef, &'static str> {
    let meta = &pool.metadata;
    Ok(PoolRef {
        name: meta.name.clone().ok_or("name")?,
        namespace: meta.namespace.clone().ok_or("namespace")?,
        uid: Some(meta.uid.clone().ok_or("uid")?),
    })
}

/// How long a pool waits while the pod watch relists.
pub const RELIST_WAIT: Duration = Duration::from_secs(2);

/// Observe, decide, act.
pub async fn reconcile_pool(pool: &WorkerPool, ctx: &Context) -> Result<Action, Error> {
    let identity = identity(pool).map_err(Error::Metadata)?;
    // A pool judged on pods known to be out of date could read Ready on pods that are gone, and
    // unready once the relist shows the new ones: it waits for the relist instead.
    if ctx.caches.pods.is_stale() {
        tracing::debug!(pool = %identity.name, namespace = %identity.namespace, "the pod watch is relisting; the pool waits for it");
        return Ok(Action::requeue(RELIST_WAIT));
    }
    let uid = identity.uid.as_deref().unwrap_or_default();
    ctx.pools.apply(&pool.metadata);
    let remembered = ctx.pools.status_ahead_of_cache(&pool.metadata);
    let old = remembered.as_ref().or(pool.status.as_ref());

    let workers = workers::observe(ctx, pool, old, &identity.namespace, &identity.name).await;
    let prepared = Prepared::new(pool, &identity);
    let announced_ready = ctx.pools.announced_ready(uid);
    let verified = ctx.pools.verified(uid);
    let now = (ctx.clock)();
    // The caches answer first; only a create refused for a name already taken reads the API.
    let mut lookup = Lookup::Cache;
    let (decision, refused) = loop {
        let read = apply::read_children(ctx, &prepared, lookup).await?;
        let live = read.live();
        let mut observed = Observed {
            old,
            last_write: ctx.pools.last_write(&pool.metadata, remembered.is_some()),
            announced_ready: announced_ready.as_ref(),
            workers: &workers.report,
            children: &live,
            refused: None,
            verified: &verified,
            now,
        };
        let decision = decide::decide(&prepared, &observed).map_err(Error::Serialize)?;
        match apply::write_children(ctx, &identity, &decision.writes, &read).await {
            Ok(()) => break (decision, None),
            Err(Error::Unseen { .. }) if lookup == Lookup::Cache => lookup = Lookup::Api,
            Err(Error::Apply { source, .. }) if namespace_terminating(&source) => {
                tracing::info!(pool = %identity.name, namespace = %identity.namespace, "the namespace is being deleted; the pool goes with it");
                return Ok(Action::await_change());
            }
            Err(error) => {
                let Some(stall) = refusal(&error, &identity.namespace) else {
                    return Err(error);
                };
                observed.refused = Some(stall);
                let decision = decide::decide(&prepared, &observed).map_err(Error::Serialize)?;
                break (decision, Some(error));
            }
        }
    };
    let requeue = decision.requeue;
    ctx.pools.set_verified(uid, decision.verified.clone());
    report(ctx, pool, decision, remembered.is_some(), now).await?;

    // Come back: with back-off after a refusal or unread Events, else when asked.
    if let Some(error) = refused {
        return Err(error);
    }
    if let Some((pod, source)) = workers.unread {
        return Err(Error::Read {
            kind: "Events of Pod".into(),
            name: pod,
            source,
        });
    }
    Ok(Action::requeue(requeue))
}

/// Carries out what the decision says about the pool itself: its gauges, its status, its Events
/// and its abort counts.
async fn report(
    ctx: &Context,
    pool: &WorkerPool,
    decision: Decision,
    based_on_memory: bool,
    now: jiff::Timestamp,
) -> Result<(), Error> {
    let namespace = pool.metadata.namespace.as_deref().unwrap_or_default();
    let name = pool.metadata.name.as_deref().unwrap_or_default();
    let uid = pool.metadata.uid.as_deref().unwrap_or_default();
    let reference = pool.object_ref(&());
    ctx.metrics
        .publish_pool(namespace, name, &decision.status.conditions);
    if decision.write_status {
        let version = write_status(ctx, namespace, name, &decision.status).await?;
        publish(ctx, &reference, &decision.notices).await;
        if let Some(mark) = decision.announced_ready {
            ctx.pools.set_announced_ready(uid, mark);
        }
        ctx.pools.wrote_status(
            &pool.metadata,
            based_on_memory,
            now,
            version,
            decision.status,
        );
    }
    for abort in &decision.aborts {
        ctx.metrics
            .count_abort(namespace, name, &abort.event.reason);
    }
    publish(ctx, &reference, &decision.aborts).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn metrics_are_exposed_with_the_project_prefix() {
        let metrics = Metrics::default();
        metrics.observe_reconcile(Duration::from_millis(3), None);
        metrics.observe_reconcile(Duration::from_millis(3), Some("apply"));
        let text = metrics.encode();
        assert!(text.contains("workerpool_reconciles_total 2"), "{text}");
        assert!(
            text.contains("workerpool_reconcile_errors_total{category=\"apply\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("workerpool_reconcile_duration_seconds_count 2"),
            "{text}"
        );
    }

    #[test]
    fn pool_conditions_are_gauges_that_go_with_the_pool() {
        let metrics = Metrics::default();
        let condition =
            |type_: &str, status: &str| k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: type_.into(),
                status: status.into(),
                reason: "R".into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    jiff::Timestamp::UNIX_EPOCH,
                ),
            };
        metrics.publish_pool(
            "shop",
            "api",
            &[
                condition("Ready", "False"),
                condition("Stalled", "True"),
                condition("PolicyConflict", "True"),
            ],
        );
        let text = metrics.encode();
        assert!(
            text.contains(
                "workerpool_pool_condition{namespace=\"shop\",pool=\"api\",condition=\"Stalled\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "workerpool_pool_condition{namespace=\"shop\",pool=\"api\",condition=\"Ready\"} 0"
            ),
            "{text}"
        );
        assert!(!text.contains("PolicyConflict"), "{text}");
        assert!(
            text.contains(
                "workerpool_worker_aborts_total{namespace=\"shop\",pool=\"api\",reason=\"BootFailed\"} 0"
            ),
            "an alerted counter starts at 0: {text}"
        );
        metrics.forget_pool("shop", "api");
        assert!(!metrics.encode().contains("pool=\"api\""));
    }

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, Fut, F: Fn(A, B) -> Fut>(_: F) -> usize {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn the_future_kubes_runner_moves_per_reconcile_stays_small() {
        // Each reconcile's future is moved several times before it is first polled; the
        // children, requests and statuses it holds across awaits live on the heap instead.
        let size = future_size(reconcile);
        assert!(size <= 256, "reconcile's future is {size} bytes");
    }
}
