//! The I/O edge: reads pools and the watch caches, applies children, writes status and Events.
//!
//! `reconcile` is a pipeline — observe, validate, settle, build, apply what differs, compute
//! status, write it if it differs — where only the first and the last two steps touch the API.

mod error;
pub mod kubelet;
pub mod logs;
pub mod managed_fields;
mod memory;
pub mod metrics;
pub mod pod_cache;
pub mod recorders;
pub mod run;
pub mod triggers;
pub mod watched;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde_json::json;

pub use error::Error;
use kubelet::{ApiEvents, EventReader};
use logs::{ApiLogs, LogReader};
use memory::Memory;
use metrics::Metrics;
use pod_cache::PodCache;
use recorders::{Fold, Recorders};

use crate::api::{AbortRecord, AbortSummary, MANAGER_NAME, WorkerPool, WorkerPoolStatus};
use crate::controller::watched::{Guarded, Lean, Watched};
use crate::pool::Stall;
use crate::pool::derive::{self, Children, PoolRef, SpecHashes};
use crate::pool::drift;
use crate::pool::policy;
use crate::pool::ramp::DeploymentCounts;
use crate::pool::rollout;
use crate::status::{self, Observation, RampChange, reason};

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
    pub deployments: Store<Watched<Deployment>>,
    pub pdbs: Store<Watched<PodDisruptionBudget>>,
    pub pods: PodCache,
    pub jobs: Store<Watched<Job>>,
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
            deployments: caches.deployments,
            pdbs: caches.pdbs,
            pods: caches.pods,
            jobs: caches.jobs,
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

    /// Pools whose last status write this process remembers (for tests and sizing).
    pub fn remembered_pools(&self) -> usize {
        self.memory.written_pools()
    }

    /// Pools whose last status write time is remembered for pacing (for tests and sizing).
    pub fn paced_pools(&self) -> usize {
        self.memory.paced_pools()
    }

    /// Children whose last verification this process remembers (for tests and sizing).
    pub fn verified_children(&self) -> usize {
        self.memory.verified_children()
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
    let result = match &guard.0 {
        // Boxed: kube's runner moves the future it is handed; this keeps that future small.
        Ok(pool) => Box::pin(reconcile_pool(pool, &ctx)).await,
        Err(invalid) => Box::pin(report_malformed(invalid, &ctx)).await,
    };
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

fn deployment_counts(dep: &Deployment) -> DeploymentCounts {
    let status = dep.status.clone().unwrap_or_default();
    let generation = dep.metadata.generation.unwrap_or(0);
    DeploymentCounts {
        target: dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        replicas: status.replicas.unwrap_or(0),
        ready: status.ready_replicas.unwrap_or(0),
        updated: status.updated_replicas.unwrap_or(0),
        available: status.available_replicas.unwrap_or(0),
        current: status.observed_generation.unwrap_or(0) >= generation,
    }
}

fn is_owned_by(meta: &kube::core::ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

/// A child as the watch cache holds it, or — when the cache has none — as the API holds it, so a
/// same-named object someone else created is never adopted or overwritten.
enum Existing<K> {
    Ours(Arc<Watched<K>>),
    Absent,
    Foreign,
}

async fn existing<K>(
    ctx: &Context,
    store: &Store<Watched<K>>,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<Existing<K>, Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Lean
        + Clone
        + std::fmt::Debug,
{
    let cached = store.get(&ObjectRef::new(name).within(namespace));
    let object = match cached {
        Some(object) => object,
        None => {
            let api: Api<Watched<K>> = Api::namespaced(ctx.client.clone(), namespace);
            match Box::pin(api.get_opt(name))
                .await
                .map_err(|source| Error::Read {
                    kind: K::kind(&()).into_owned(),
                    name: name.into(),
                    source,
                })? {
                Some(object) => Arc::new(object),
                None => return Ok(Existing::Absent),
            }
        }
    };
    Ok(if is_owned_by(object.meta(), uid) {
        Existing::Ours(object)
    } else {
        Existing::Foreign
    })
}

/// Server-side apply of one child of `pool` unless the live object already holds every field we
/// set. `inputs` names what the desired object is derived from; while it and the live version are
/// those last verified, the desired object is not even built. Returns whether a request was made.
async fn apply_child<K>(
    ctx: &Context,
    pool: &PoolRef,
    name: &str,
    inputs: u64,
    live: Option<&K>,
    desired: impl FnOnce() -> K,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + k8s_openapi::Resource
        + Clone
        + Serialize
        + std::fmt::Debug,
{
    let uid = pool.uid.as_deref().unwrap_or_default();
    let child = (K::KIND, name.to_owned());
    let live_version = live.map(|l| drift::spec_and_meta_version(l.meta()));
    if let Some(version) = live_version
        && ctx.memory.is_verified(uid, &child, version, inputs)
    {
        return Ok(false);
    }
    let mut desired = Box::new(desired());
    let hash = drift::stamp(desired.as_mut()).map_err(Error::Serialize)?;
    if let Some(live) = live {
        let desired_value = serde_json::to_value(&desired).map_err(Error::Serialize)?;
        let live_value = serde_json::to_value(live).map_err(Error::Serialize)?;
        if drift::is_current(&live_value, &desired_value, &hash) {
            if let Some(version) = live_version {
                ctx.memory.verified(uid, child, version, inputs);
            }
            return Ok(false);
        }
    }
    // A forced apply leaves the object holding every field it sets, so the version it answers
    // with is verified without reading the rest of the answer.
    let api: Api<Watched<PartialObjectMeta<K>>> =
        Api::namespaced(ctx.client.clone(), &pool.namespace);
    let applied = Box::pin(api.patch(
        name,
        &PatchParams::apply(MANAGER_NAME).force(),
        &Patch::Apply(&desired),
    ))
    .await
    .map_err(|source| Error::Apply {
        kind: K::KIND.into(),
        name: name.into(),
        source,
    })?;
    ctx.memory.verified(
        uid,
        child,
        drift::spec_and_meta_version(&applied.0.metadata),
        inputs,
    );
    Ok(true)
}

/// Sets the replicas and the pause of a live Deployment, and nothing else, when they differ.
async fn hold_template(
    ctx: &Context,
    pool: &PoolRef,
    live: &Deployment,
    replicas: i32,
    paused: bool,
) -> Result<(), Error> {
    let spec = live.spec.as_ref();
    let live_replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
    let live_paused = spec.and_then(|s| s.paused).unwrap_or(false);
    if (live_replicas, live_paused) == (replicas, paused) {
        return Ok(());
    }
    let api: Api<Watched<PartialObjectMeta<Deployment>>> =
        Api::namespaced(ctx.client.clone(), &pool.namespace);
    let params = PatchParams {
        field_manager: Some(MANAGER_NAME.into()),
        ..PatchParams::default()
    };
    let patch = json!({"spec": {"replicas": replicas, "paused": paused}});
    Box::pin(api.patch(&pool.name, &params, &Patch::Merge(&patch)))
        .await
        .map_err(|source| Error::Apply {
            kind: "Deployment".into(),
            name: pool.name.clone(),
            source,
        })?;
    Ok(())
}

/// What applying the children found and did.
struct Applied {
    stall: Option<Stall>,
    ramp_target: Option<i32>,
    previous_target: Option<i32>,
    created: bool,
    plan: Option<rollout::Plan>,
    revision: Option<String>,
}

impl Applied {
    fn stalled(stall: Stall) -> Self {
        Applied {
            stall: Some(stall),
            ramp_target: None,
            previous_target: None,
            created: false,
            plan: None,
            revision: None,
        }
    }
}

fn ours<K>(existing: &Existing<K>) -> Option<&K> {
    match existing {
        Existing::Ours(object) => Some(&object.0),
        _ => None,
    }
}

async fn apply_children(
    ctx: &Context,
    pool: &WorkerPool,
    pool_ref: &PoolRef,
    valid: &policy::ValidPool<'_>,
    settings: &policy::Settings,
    aborts: &AbortSummary,
    status: Option<&WorkerPoolStatus>,
) -> Result<Applied, Error> {
    let uid = pool_ref.uid.as_deref().unwrap_or_default();
    let ns = pool_ref.namespace.as_str();
    let name = pool_ref.name.as_str();
    let generation = pool.metadata.generation.unwrap_or(0);
    let spec = valid.spec();
    // The children are derived only when something needs them: their revision is remembered per
    // version of the pool, and an unchanged child is recognised without building it.
    let pool_version = drift::spec_and_meta_version(&pool.metadata);
    // Boxed, like each request's future below: held across awaits, a child by value would make
    // every reconcile's future several kilobytes larger, and such a future is moved whole.
    let mut children: Option<Box<Children>> = None;
    let derive = || Box::new(derive::build(pool_ref, valid, settings, 0));
    let SpecHashes {
        revision,
        spec: spec_hash,
    } = match ctx.memory.spec_hashes(uid, pool_version) {
        Some(hashes) => hashes,
        None => {
            let hashes = SpecHashes::of(spec);
            ctx.memory.took_spec_hashes(uid, pool_version, &hashes);
            hashes
        }
    };
    let job_name = derive::init_job_name_of(name, valid, &revision);

    let deployment = existing(ctx, &ctx.deployments, ns, name, uid).await?;
    let pdb = existing(ctx, &ctx.pdbs, ns, name, uid).await?;
    // The init Job matters only until the Deployment runs this revision; after that the Job
    // is finished and cleaned up, and looking for it would cost a request per reconcile.
    let runs_revision = ours(&deployment).and_then(derive::revision_in) == Some(revision.as_str());
    let job = match job_name.as_deref().filter(|_| !runs_revision) {
        Some(job_name) => Some(existing(ctx, &ctx.jobs, ns, job_name, uid).await?),
        None => None,
    };
    let foreign: Vec<String> = [
        matches!(deployment, Existing::Foreign).then(|| format!("Deployment {ns}/{name}")),
        matches!(pdb, Existing::Foreign).then(|| format!("PodDisruptionBudget {ns}/{name}")),
        matches!(job, Some(Existing::Foreign))
            .then(|| format!("Job {ns}/{}", job_name.as_deref().unwrap_or_default())),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !foreign.is_empty() {
        return Ok(Applied::stalled(Stall {
            reason: reason::NOT_OWNED,
            message: format!(
                "{} already exists and is not owned by this WorkerPool; it was left untouched. Rename the pool or remove that object",
                foreign.join(" and ")
            ),
        }));
    }

    let live_deployment = ours(&deployment);
    let counts = live_deployment.map(deployment_counts);
    let job_state = job.as_ref().map(|j| match ours(j) {
        Some(live) => rollout::job_state(live),
        None => rollout::JobState::Absent,
    });
    let plan = rollout::plan(&rollout::Input {
        generation,
        desired: spec.replicas,
        max_concurrent: spec.policy.boot.max_concurrent,
        revision: &revision,
        spec_hash: &spec_hash,
        live: live_deployment
            .zip(counts)
            .map(|(d, counts)| rollout::LiveDeployment {
                counts,
                revision: derive::revision_in(d),
            }),
        init_job: job_state
            .zip(job_name.as_deref())
            .map(|(state, name)| (name, state)),
        previous_init: status.and_then(|s| s.init.as_ref()),
        previous_circuit: status.and_then(|s| s.circuit.as_ref()),
        aborts: Some(aborts),
        threshold: spec.policy.failure.boot_failure_threshold,
        window_seconds: spec.policy.failure.window_seconds,
        now: (ctx.clock)(),
    });

    if plan.create_init_job
        && let Some(job_name) = &job_name
        && let Some(job) = children.get_or_insert_with(derive).init_job.take()
    {
        Box::pin(apply_child(
            ctx,
            pool_ref,
            job_name,
            pool_version,
            None,
            || job,
        ))
        .await?;
    }
    match (plan.apply_deployment, plan.template, live_deployment) {
        (false, ..) => {}
        // The new revision waits for its init Job: the live template is left as it is, with
        // whatever other managers set in it (`kubectl rollout restart`'s annotation, say), and
        // only the gates' replicas and pause are written.
        (true, rollout::Template::KeepLive, Some(live)) => {
            Box::pin(hold_template(
                ctx,
                pool_ref,
                live,
                plan.replicas,
                plan.paused,
            ))
            .await?;
        }
        (true, ..) => {
            let inputs = drift::version_of((pool_version, plan.replicas, plan.paused));
            Box::pin(apply_child(
                ctx,
                pool_ref,
                name,
                inputs,
                live_deployment,
                || {
                    let mut deployment =
                        std::mem::take(&mut children.get_or_insert_with(derive).deployment);
                    derive::shape(&mut deployment, plan.replicas, plan.paused);
                    deployment
                },
            ))
            .await?;
        }
    }
    Box::pin(apply_child(
        ctx,
        pool_ref,
        name,
        pool_version,
        ours(&pdb),
        || std::mem::take(&mut children.get_or_insert_with(derive).pdb),
    ))
    .await?;
    Ok(Applied {
        stall: plan.stall.clone(),
        ramp_target: plan.apply_deployment.then_some(plan.replicas),
        previous_target: counts.map(|c| c.target),
        created: live_deployment.is_none() && plan.apply_deployment,
        plan: Some(plan),
        revision: Some(revision),
    })
}

pub async fn reconcile_pool(pool: &WorkerPool, ctx: &Context) -> Result<Action, Error> {
    let name = pool.metadata.name.clone().ok_or(Error::Metadata("name"))?;
    let namespace = pool
        .metadata
        .namespace
        .clone()
        .ok_or(Error::Metadata("namespace"))?;
    let uid = pool.metadata.uid.clone().ok_or(Error::Metadata("uid"))?;
    let generation = pool.metadata.generation.unwrap_or(0);
    let pool_ref = PoolRef {
        name: name.clone(),
        namespace: namespace.clone(),
        uid: Some(uid.clone()),
    };

    let remembered = ctx.memory.status_ahead_of_cache(&pool.metadata);
    let old = remembered.as_ref().or(pool.status.as_ref());

    // Aborts first: the circuit breaker decides on them.
    let workers = workers::observe(ctx, pool, old, &namespace, &name).await;

    // A write the API server refused is shown on the pool, then retried with back-off.
    let mut refused = None;
    let (settings, applied) = match policy::validate(&pool.spec) {
        Err(invalid) => {
            let stall = Stall {
                reason: reason::INVALID_SPEC,
                message: format!("spec is invalid, the running pool was left untouched: {invalid}"),
            };
            (None, Applied::stalled(stall))
        }
        Ok(valid) => {
            let settings = policy::settle(&valid);
            let applied = match apply_children(
                ctx,
                pool,
                &pool_ref,
                &valid,
                &settings,
                &workers.summary,
                old,
            )
            .await
            {
                Ok(applied) => applied,
                Err(error) => match refusal(&error, &namespace) {
                    Some(stall) => {
                        refused = Some(error);
                        Applied::stalled(stall)
                    }
                    None => return Err(error),
                },
            };
            (Some(settings), applied)
        }
    };
    let stall = applied.stall.as_ref();

    let cached = ctx
        .deployments
        .get(&ObjectRef::new(&name).within(&namespace))
        .filter(|d| is_owned_by(d.meta(), &uid));
    let gates = applied.plan.as_ref().map(|plan| status::Gates {
        revision: applied.revision.as_deref(),
        init: plan.init.as_ref(),
        circuit: plan.circuit.as_ref(),
        waiting: plan.waiting.as_ref().map(|(r, m)| (*r, m.as_str())),
    });
    let observation = Observation {
        generation,
        desired_replicas: pool.spec.replicas,
        max_concurrent: pool.spec.policy.boot.max_concurrent,
        selector: derive::selector_string(&name),
        deployment: cached.map(|d| deployment_counts(&d.0)),
        ramp_target: applied.ramp_target,
        effective: if stall.is_none() {
            settings.as_ref().map(|s| &s.effective)
        } else {
            None
        },
        conflicts: settings
            .as_ref()
            .map(|s| s.conflicts.as_slice())
            .unwrap_or_default(),
        stall,
        aborts: Some(&workers.summary),
        window_seconds: pool.spec.policy.failure.window_seconds,
        gates,
        initializing: workers.initializing.as_ref(),
    };
    let now = (ctx.clock)();
    let new = status::compute(old, &observation, &Time(now));
    ctx.metrics.publish_pool(&namespace, &name, &new.conditions);
    // Progress alone is written at a pace; the reconcile comes back when the wait is over.
    let held = old
        .filter(|old| *old != &new && status::is_progress_only(old, &new))
        .and_then(|_| {
            let last = ctx.memory.last_write(&pool.metadata, remembered.is_some());
            status::progress_wait(last, now)
        });
    if old != Some(&new) && held.is_none() {
        let version = write_status(ctx, &namespace, &name, &new).await?;
        announce(ctx, pool, old, &new, Some(&applied)).await;
        ctx.memory
            .wrote_status(&pool.metadata, remembered.is_some(), now, version, new);
    }
    report_aborts(ctx, pool, &workers.fresh).await;
    if let Some(error) = refused {
        return Err(error);
    }

    let requeue = workers
        .recheck
        .and_then(|d| Duration::try_from(d).ok())
        .map_or(RESYNC, |d| d.clamp(Duration::from_secs(1), RESYNC));
    Ok(Action::requeue(
        held.map_or(requeue, |held| held.min(requeue)),
    ))
}

/// One Warning Event and one metric increment per newly counted abort. The note leaves out
/// restart counts and times so the recorder folds a crash loop's repeats into one Event series.
async fn report_aborts(ctx: &Context, pool: &WorkerPool, fresh: &[AbortRecord]) {
    let reference = pool.object_ref(&());
    let namespace = pool.metadata.namespace.as_deref().unwrap_or_default();
    let name = pool.metadata.name.as_deref().unwrap_or_default();
    for abort in fresh {
        ctx.metrics.count_abort(namespace, name, &abort.reason);
        let exit = match (abort.exit_code, &abort.signal) {
            (Some(code), Some(signal)) => format!(" exited {code} ({signal})"),
            (Some(code), None) => format!(" exited {code}"),
            _ => String::new(),
        };
        let container = if abort.container.is_empty() {
            String::new()
        } else {
            format!(" container {}", abort.container)
        };
        let detail = abort
            .hint
            .as_deref()
            .or(abort.message.as_deref())
            .map(|h| format!(": {h}"))
            .unwrap_or_default();
        let note = format!("pod {}{container}{exit}{detail}", abort.pod);
        let event = Event {
            type_: EventType::Warning,
            reason: abort.reason.clone(),
            note: Some(truncate(note, 1000)),
            action: "ObserveWorker".into(),
            // One series per pod and reason: `kubectl describe wp` names each pod.
            secondary: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                namespace: Some(namespace.to_string()),
                name: Some(abort.pod.clone()),
                ..Default::default()
            }),
        };
        if let Err(error) = ctx
            .recorders
            .publish(&event, &reference, Fold::Series)
            .await
        {
            tracing::warn!(reason = %abort.reason, "publishing an Event failed: {error}");
        }
    }
}

/// Applies the whole status server-side with its own field manager, so the server's copy is
/// what was computed whatever the cache held; returns the version the write produced.
async fn write_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    new: &WorkerPoolStatus,
) -> Result<Option<String>, Error> {
    let status_error = |source| Error::Status {
        name: name.to_string(),
        source,
    };
    // Only the metadata of the answer is read: its version and who owns which field.
    let api: Api<PartialObjectMeta<WorkerPool>> = Api::namespaced(ctx.client.clone(), namespace);
    let body = json!({
        "apiVersion": WorkerPool::api_version(&()),
        "kind": WorkerPool::kind(&()),
        "metadata": {"name": name},
        "status": new,
    });
    let params = PatchParams::apply(STATUS_MANAGER).force();
    let written = Box::pin(api.patch_status(name, &params, &Patch::Apply(&body)))
        .await
        .map_err(status_error)?;
    let entries = written
        .metadata
        .managed_fields
        .as_deref()
        .unwrap_or_default();
    let Some(upgraded) = managed_fields::upgrade_status_manager(entries, STATUS_MANAGER) else {
        return Ok(written.metadata.resource_version);
    };
    // Status fields an earlier version wrote with merge patches: handed to the apply manager
    // (through the main resource: the server ignores managedFields sent to a subresource) and
    // applied again, which removes those no longer computed.
    let handover = json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": written.metadata.resource_version},
        {"op": "replace", "path": "/metadata/managedFields", "value": upgraded},
    ]);
    let patch: json_patch::Patch = serde_json::from_value(handover).map_err(Error::Serialize)?;
    Box::pin(api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch)))
        .await
        .map_err(status_error)?;
    tracing::info!(
        pool = name,
        "status fields of an earlier version handed to {STATUS_MANAGER}"
    );
    let written = Box::pin(api.patch_status(name, &params, &Patch::Apply(&body)))
        .await
        .map_err(status_error)?;
    Ok(written.metadata.resource_version)
}

/// Publishes the Events for what changed between two statuses.
async fn announce(
    ctx: &Context,
    pool: &WorkerPool,
    old: Option<&WorkerPoolStatus>,
    new: &WorkerPoolStatus,
    applied: Option<&Applied>,
) {
    let reference = pool.object_ref(&());
    let ramp = applied.and_then(|a| {
        a.ramp_target.map(|target| RampChange {
            previous: if a.created { None } else { a.previous_target },
            target,
            desired: pool.spec.replicas,
        })
    });
    let uid = pool.metadata.uid.as_deref().unwrap_or_default();
    let revision = new.revision.as_deref().unwrap_or_default();
    for notice in status::notices(old, new, ramp) {
        if notice.reason == status::READY_NOTICE
            && !ctx.memory.ready_is_news(uid, revision, pool.spec.replicas)
        {
            continue;
        }
        let type_ = if notice.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(
            ctx,
            &reference,
            type_,
            &notice.reason,
            notice.action,
            notice.message,
        )
        .await;
    }
}

async fn publish(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(truncate(note, 1000)),
        action: action.into(),
        secondary: None,
    };
    // A state change is its own Event: folded into a series it would keep its first message
    // ("scaling from 2 to 4") while the pool moves on.
    if let Err(error) = ctx.recorders.publish(&event, reference, Fold::Never).await {
        tracing::warn!(reason, "publishing an Event failed: {error}");
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
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
