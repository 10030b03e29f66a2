//! The I/O edge: reads pools and the watch caches, applies children, writes status and Events.
//!
//! `reconcile_pool` is one pipeline, numbered in its body: observe (watch caches, aborts), validate,
//! settle and build (pure), read the children, plan the gates (pure) and apply what differs
//! (`converge`), compute the status (pure) and write it if it differs. Only the reads, the
//! applies and the status write hold a client.

mod apply;
mod error;
pub mod kubelet;
pub mod logs;
pub mod managed_fields;
mod memory;
pub mod metrics;
pub mod pod_cache;
pub mod recorders;
mod report;
pub mod run;
pub mod triggers;
pub mod watched;
mod workers;

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};

use apply::{Applied, is_owned_by};
pub use error::Error;
use kubelet::{ApiEvents, EventReader};
use logs::{ApiLogs, LogReader};
use memory::Memory;
use metrics::Metrics;
use pod_cache::PodCache;
use recorders::Recorders;
use report::{announce, publish, report_aborts, write_status};

use crate::api::reason;
use crate::api::{AbortSummary, WorkerPool, WorkerPoolStatus};
use crate::controller::watched::{Guarded, Watched};
use crate::pool::Stall;
use crate::pool::derive::{self, Children, PoolRef};
use crate::pool::policy;
use crate::pool::ramp::DeploymentCounts;
use crate::status::{self, Observation};

/// Field manager for the status subresource, separate from the children's.
pub const STATUS_MANAGER: &str = "workerpool-operator-status";
/// Safety net: every pool is looked at again after this long even without a watch event.
pub const RESYNC: Duration = Duration::from_secs(3600);

/// Source of the current time, so the sandbox can run the controller on a virtual clock.
pub type Clock = Arc<dyn Fn() -> jiff::Timestamp + Send + Sync>;

/// The watch caches the controller reads instead of the API.
#[derive(Clone)]
pub struct Caches {
    pub deployments: Store<Watched<Deployment>>,
    pub pdbs: Store<Watched<PodDisruptionBudget>>,
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
    events: Arc<dyn EventReader>,
    /// What is remembered of each pool between its reconciles.
    memory: Memory,
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
            events: Arc::new(ApiEvents(client.clone())),
            recorders: Recorders::new(client.clone(), reporter),
            client,
            caches,
            metrics,
            clock,
            memory: Memory::default(),
        }
    }

    /// A pool as its watch delivered it: once the cache holds the last write, that write's copy
    /// is let go, also for pools no reconcile looks at again.
    pub fn observed(&self, meta: &kube::core::ObjectMeta) {
        self.memory.observed(meta);
    }

    /// Drops everything remembered about a deleted pool.
    pub fn forget(&self, meta: &kube::core::ObjectMeta) {
        if let Some(uid) = meta.uid.as_deref() {
            self.memory.forget(uid);
        }
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        let name = meta.name.as_deref().unwrap_or_default();
        self.recorders.forget(namespace, name);
        self.metrics.forget_pool(namespace, name);
    }

    /// After a relist of the pools: forgets every pool the list no longer holds, deleted while
    /// the watch was away (no Delete event tells of those), its metric series included.
    pub fn keep_only(&self, listed: &[kube::core::ObjectMeta]) {
        let uids: HashSet<String> = listed.iter().filter_map(|m| m.uid.clone()).collect();
        let names: HashSet<(String, String)> = listed
            .iter()
            .filter_map(|m| Some((m.namespace.clone()?, m.name.clone()?)))
            .collect();
        self.memory.keep(&uids);
        self.recorders.keep(&names);
        self.metrics.keep_pools(&names);
    }

    /// Pools whose last status write this process remembers (for tests and sizing).
    pub fn remembered_pools(&self) -> usize {
        self.memory.written_pools()
    }

    /// Pools whose last status write time is remembered for pacing (for tests and sizing).
    pub fn paced_pools(&self) -> usize {
        self.memory.paced_pools()
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
    guard: Arc<Guarded<WorkerPool>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    ctx.metrics.in_flight.inc();
    let result = match &guard.0 {
        // Boxed: kube's runner moves the future it is handed; this keeps that future small.
        Ok(pool) => Box::pin(reconcile_pool(pool, &ctx)).await,
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
        ctx.memory.succeeded(uid);
    }
    result
}

/// Per-object exponential backoff: 5 s, 10 s, 20 s, … up to 5 minutes.
pub fn error_policy(guard: Arc<Guarded<WorkerPool>>, error: &Error, ctx: Arc<Context>) -> Action {
    let attempts = guard
        .meta()
        .uid
        .as_deref()
        .map_or(1, |uid| ctx.memory.failed(uid));
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
    let message = format!(
        "the object does not match the WorkerPool schema: {}",
        invalid.error
    );
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(WorkerPool::api_version(&()).into()),
        kind: Some(WorkerPool::kind(&()).into_owned()),
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        uid: meta.uid.clone(),
        ..Default::default()
    };
    publish(
        ctx,
        &reference,
        EventType::Warning,
        reason::INVALID_SPEC,
        "Validate",
        message,
    )
    .await;
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

/// The pool's Deployment as the watch cache holds it, when the pool owns it.
fn owned_deployment(ctx: &Context, pool: &PoolRef) -> Option<Arc<Watched<Deployment>>> {
    let uid = pool.uid.as_deref()?;
    ctx.caches
        .deployments
        .get(&ObjectRef::new(&pool.name).within(&pool.namespace))
        .filter(|d| is_owned_by(d.meta(), uid))
}

/// Reads the children, lets the gates plan, and applies what the live children lack.
async fn converge(
    ctx: &Context,
    pool: &WorkerPool,
    pool_ref: &PoolRef,
    valid: &policy::ValidPool<'_>,
    children: &mut Children,
    aborts: &AbortSummary,
    old: Option<&WorkerPoolStatus>,
) -> Result<Applied, Error> {
    let live = apply::read_children(ctx, pool_ref, children).await?;
    if let Some(stall) = live.not_owned(pool_ref) {
        return Ok(Applied::stalled(
            stall,
            live.deployment().map(DeploymentCounts::of),
        ));
    }
    let plan = apply::plan(pool, valid, children, &live, aborts, old, (ctx.clock)());
    apply::apply_planned(ctx, pool_ref, &plan, &live, children).await?;
    Ok(Applied::of(plan, &live, children.revision.clone()))
}

/// What validating, settling and applying came to.
struct Settled {
    settings: Option<policy::Settings>,
    applied: Applied,
    /// A write the API server refused: shown on the pool, then retried with back-off.
    refused: Option<Error>,
}

/// Steps 2 and 3: validate, settle and build (pure); read the children, plan, apply what differs.
/// None when the namespace is being deleted, and the pool with it.
async fn settle_and_apply(
    ctx: &Context,
    pool: &WorkerPool,
    pool_ref: &PoolRef,
    aborts: &AbortSummary,
    old: Option<&WorkerPoolStatus>,
) -> Result<Option<Settled>, Error> {
    let running = || owned_deployment(ctx, pool_ref).map(|d| DeploymentCounts::of(&d.0));
    let valid = match policy::validate(&pool.spec) {
        Ok(valid) => valid,
        Err(invalid) => {
            let running = running();
            let message = match running {
                Some(_) => {
                    format!("spec is invalid, the running pool was left untouched: {invalid}")
                }
                None => format!("spec is invalid, nothing was created: {invalid}"),
            };
            let stall = Stall {
                reason: reason::INVALID_SPEC,
                message,
            };
            return Ok(Some(Settled {
                settings: None,
                applied: Applied::stalled(stall, running),
                refused: None,
            }));
        }
    };
    let settings = policy::settle(&valid);
    let mut children = derive::build(pool_ref, &valid, &settings, 0);
    let converged = converge(ctx, pool, pool_ref, &valid, &mut children, aborts, old).await;
    let (applied, refused) = match converged {
        Ok(applied) => (applied, None),
        Err(Error::Apply { source, .. }) if namespace_terminating(&source) => {
            tracing::info!(pool = %pool_ref.name, namespace = %pool_ref.namespace, "the namespace is being deleted; the pool goes with it");
            return Ok(None);
        }
        Err(error) => match refusal(&error, &pool_ref.namespace) {
            Some(stall) => (Applied::stalled(stall, running()), Some(error)),
            None => return Err(error),
        },
    };
    Ok(Some(Settled {
        settings: Some(settings),
        applied,
        refused,
    }))
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

pub async fn reconcile_pool(pool: &WorkerPool, ctx: &Context) -> Result<Action, Error> {
    let pool_ref = identity(pool).map_err(Error::Metadata)?;
    let (namespace, name) = (&pool_ref.namespace, &pool_ref.name);
    let remembered = ctx.memory.status_ahead_of_cache(&pool.metadata);
    let old = remembered.as_ref().or(pool.status.as_ref());

    // 1. Observe. Aborts first: the circuit breaker decides on them.
    let workers = workers::observe(ctx, pool, old, namespace, name).await;

    // 2, 3. Settle and apply.
    let Some(Settled {
        settings,
        applied,
        refused,
    }) = settle_and_apply(ctx, pool, &pool_ref, &workers.summary, old).await?
    else {
        return Ok(Action::await_change());
    };

    // 4. Decide the status (pure) and write it if it differs.
    let now = (ctx.clock)();
    let inputs = status_inputs(pool, settings.as_ref(), &applied, &workers);
    let last_write = ctx.memory.last_write(&pool.metadata, remembered.is_some());
    let computed = status::compute(old, &inputs.view(), &Time(now));
    let decision = status::decide(old, computed, last_write, now);
    ctx.metrics
        .publish_pool(namespace, name, &decision.status.conditions);
    if decision.write {
        let new = decision.status;
        let version = write_status(ctx, namespace, name, &new).await?;
        announce(ctx, pool, old, &new, Some(&applied)).await;
        ctx.memory
            .wrote_status(&pool.metadata, remembered.is_some(), now, version, new);
    }
    report_aborts(ctx, pool, &workers.fresh).await;

    // 5. Come back: with back-off after a refusal or unread Events, else when asked.
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
    Ok(Action::requeue(requeue(workers.recheck, decision.held)))
}

/// When the pool is looked at again: when its pods ask for it (a settling exit, a log to sample,
/// the window moving), when held-back progress is due, and at the latest after [`RESYNC`].
fn requeue(recheck: Option<jiff::SignedDuration>, held: Option<Duration>) -> Duration {
    let requeue = recheck
        .and_then(|d| Duration::try_from(d).ok())
        .map_or(RESYNC, |d| d.clamp(Duration::from_secs(1), RESYNC));
    held.map_or(requeue, |held| held.min(requeue))
}

/// Everything the status is computed from, as one reconcile saw it.
struct StatusInputs<'a> {
    pool: &'a WorkerPool,
    settings: Option<&'a policy::Settings>,
    applied: &'a Applied,
    workers: &'a workers::Report,
    /// What the template says, then what the pods show.
    conflicts: Cow<'a, [policy::Conflict]>,
    selector: String,
}

/// What the status is computed from. Pure.
fn status_inputs<'a>(
    pool: &'a WorkerPool,
    settings: Option<&'a policy::Settings>,
    applied: &'a Applied,
    workers: &'a workers::Report,
) -> StatusInputs<'a> {
    let derived = settings.map(|s| s.conflicts.as_slice()).unwrap_or_default();
    let conflicts = match &workers.stop_signal {
        None => Cow::Borrowed(derived),
        Some(seen) => Cow::Owned(derived.iter().chain([seen]).cloned().collect()),
    };
    StatusInputs {
        pool,
        settings,
        applied,
        workers,
        conflicts,
        selector: derive::selector_string(pool.metadata.name.as_deref().unwrap_or_default()),
    }
}

impl StatusInputs<'_> {
    fn view(&self) -> Observation<'_> {
        let (pool, applied, workers) = (self.pool, self.applied, self.workers);
        let stall = applied.stall.as_ref();
        Observation {
            generation: pool.metadata.generation.unwrap_or(0),
            desired_replicas: pool.spec.replicas,
            max_concurrent: pool.spec.policy.boot.max_concurrent,
            selector: self.selector.clone(),
            deployment: applied.deployment,
            ramp_target: applied.ramp_target,
            effective: self
                .settings
                .filter(|_| stall.is_none())
                .map(|s| &s.effective),
            conflicts: &self.conflicts,
            stall,
            aborts: Some(&workers.summary),
            window_seconds: pool.spec.policy.failure.window_seconds,
            gates: applied.plan.as_ref().map(|plan| status::Gates {
                revision: applied.revision.as_deref(),
                init: plan.init.as_ref(),
                circuit: plan.circuit.as_ref(),
                waiting: plan.waiting.as_ref().map(|(r, m)| (*r, m.as_str())),
            }),
            initializing: workers.initializing.as_ref(),
            stability: Some(&workers.stability),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_comes_back_when_its_pods_or_held_progress_ask_and_at_least_hourly() {
        let secs = |recheck: Option<i64>, held: Option<u64>| {
            requeue(
                recheck.map(jiff::SignedDuration::from_secs),
                held.map(Duration::from_secs),
            )
            .as_secs()
        };
        assert_eq!(secs(None, None), RESYNC.as_secs());
        assert_eq!(secs(Some(30), None), 30);
        assert_eq!(secs(Some(0), None), 1, "never a hot loop");
        assert_eq!(secs(Some(30), Some(2)), 2);
        assert_eq!(secs(Some(1), Some(2)), 1);
        assert_eq!(secs(Some(i64::MAX / 2), None), RESYNC.as_secs());
    }

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
                last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
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
