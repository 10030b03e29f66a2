//! `WorkerPool.status`: what `kubectl describe wp` shows.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition reasons: each is said once, here, whichever module decides it.
pub mod reason {
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const NOT_OWNED: &str = "ChildNotOwned";
    pub const WRITE_REFUSED: &str = "WriteRefused";
    pub const INIT_FAILED: &str = "InitFailed";
    pub const INIT_RUNNING: &str = "InitRunning";
    pub const BOOT_FAILURE_THRESHOLD: &str = "BootFailureThreshold";
    pub const ALL_READY: &str = "AllReplicasReady";
    pub const RAMPING: &str = "Ramping";
    pub const ROLLING_OUT: &str = "RollingOut";
    pub const SCALING_DOWN: &str = "ScalingDown";
    pub const CREATING: &str = "Creating";
    pub const CONVERGED: &str = "Converged";
    pub const PROGRESSING: &str = "Progressing";
    pub const NO_ABORTS: &str = "NoRecentAborts";
    pub const CONSISTENT: &str = "Consistent";
    pub const TEMPLATE_OVERRIDE: &str = "TemplateOverridesPolicy";
    pub const INIT_FAILING: &str = "InitContainersFailing";
    pub const CRASH_LOOPING: &str = "CrashLooping";
    pub const STARTING: &str = "PodsStarting";
}

/// Condition types, kstatus-compatible (`Ready`, `Reconciling`, `Stalled`) plus our own.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
    pub const DEGRADED: &str = "Degraded";
    /// A value set in the template breaks a derivation rule.
    pub const POLICY_CONFLICT: &str = "PolicyConflict";
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPoolStatus {
    /// Generation last acted on; -1 until the operator has seen the pool.
    #[serde(default = "unobserved")]
    pub observed_generation: i64,
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    #[serde(default)]
    pub updated_replicas: i32,
    #[serde(default)]
    pub available_replicas: i32,
    /// Replicas the Deployment is currently asked for while ramping up to `spec.replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp_target: Option<i32>,
    /// Label selector of the pool's pods, for the scale subresource and HPAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Numbers applied to the Deployment, derived from the policy or taken from the template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective: Option<EffectiveSettings>,
    /// Worker aborts in the failure window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborts: Option<AbortSummary>,
    /// Revision the spec asks for: a hash of the spec fields the pods are derived from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The init Job of the latest revision that needed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitStatus>,
    /// The boot-failure circuit breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit: Option<CircuitStatus>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum InitPhase {
    Running,
    Succeeded,
    Failed,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitStatus {
    pub revision: String,
    /// Spec generation the Job was created for.
    pub generation: i64,
    pub job: String,
    pub phase: InitPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitStatus {
    /// Open: the ramp is stopped and the rollout paused until the spec changes.
    pub open: bool,
    /// Spec generation at which the circuit last opened or closed.
    pub generation: i64,
    /// Hash of the spec without `replicas` when it last opened or closed: any change of the spec
    /// but a scale closes an open circuit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    /// Boot failures are counted from this time (when the circuit last closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn unobserved() -> i64 {
    -1
}

impl Default for WorkerPoolStatus {
    fn default() -> Self {
        WorkerPoolStatus {
            observed_generation: unobserved(),
            replicas: 0,
            ready_replicas: 0,
            updated_replicas: 0,
            available_replicas: 0,
            ramp_target: None,
            selector: None,
            phase: None,
            conditions: Vec::new(),
            effective: None,
            aborts: None,
            revision: None,
            init: None,
            circuit: None,
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Nothing is running yet.
    Pending,
    /// Ramping up, rolling out or scaling.
    Progressing,
    /// All desired replicas are ready and up to date.
    Ready,
    /// Serving, but workers aborted recently.
    Degraded,
    /// The operator cannot make progress until the spec (or the cluster) changes.
    Stalled,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Progressing => "Progressing",
            Phase::Ready => "Ready",
            Phase::Degraded => "Degraded",
            Phase::Stalled => "Stalled",
        }
    }
}

/// Where a celery worker's pool size comes from.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConcurrencySource {
    /// Derived from the container's CPU limit (else request).
    ContainerCpus,
    /// The worker's command line or its `CELERY_WORKER_CONCURRENCY`.
    Template,
    /// An empty or referenced `CELERY_WORKER_CONCURRENCY`: the app's configuration decides.
    AppConfiguration,
    /// Nothing sets it and the container has no CPU limit or request: celery forks one child per
    /// CPU of the node (`os.cpu_count()`).
    NodeCpus,
}

/// Whether the pool has a PodDisruptionBudget, and why not.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DisruptionBudget {
    /// The pool's budget is applied with `policy.disruption.maxUnavailable`.
    #[default]
    Applied,
    /// `policy.disruption.budget` is false: node drains may evict every pod at once.
    Disabled,
    /// `maxUnavailable` covers every replica, so a budget would allow every eviction: none is
    /// made.
    NothingToProtect,
}

/// Where an effective number came from.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Source {
    /// Derived from `spec.policy`.
    Policy,
    /// Set explicitly in `spec.template` (or the container's command line).
    Template,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeTiming {
    pub period_seconds: i32,
    pub failure_threshold: i32,
    pub timeout_seconds: i32,
    #[serde(default)]
    pub initial_delay_seconds: i32,
    pub source: Source,
}

impl ProbeTiming {
    /// A probe's timing, with the kubelet's defaults for what it leaves unset (every 10 s, 3
    /// failures, 1 s timeout, no delay).
    pub fn of(probe: &k8s_openapi::api::core::v1::Probe, source: Source) -> Self {
        ProbeTiming {
            period_seconds: probe.period_seconds.unwrap_or(10),
            failure_threshold: probe.failure_threshold.unwrap_or(3),
            timeout_seconds: probe.timeout_seconds.unwrap_or(1),
            initial_delay_seconds: probe.initial_delay_seconds.unwrap_or(0),
            source,
        }
    }

    /// Seconds of consecutive failures before the kubelet acts on this probe.
    pub fn window_seconds(&self) -> i64 {
        i64::from(self.initial_delay_seconds)
            + i64::from(self.period_seconds) * i64::from(self.failure_threshold)
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveSettings {
    pub termination_grace_period_seconds: i64,
    pub termination_grace_period_source: Source,
    /// The grace period of a liveness or startup kill, set on the derived probes: a worker that
    /// stopped answering is restarted without waiting out a drain it cannot do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_kill_grace_period_seconds: Option<i64>,
    /// preStop sleep; absent when the template's own preStop hook is not a sleep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop_sleep_seconds: Option<i64>,
    /// The probes' timings; absent when the pool has none (a generic worker without a port
    /// and without `health`) and the template sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<ProbeTiming>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<ProbeTiming>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<ProbeTiming>,
    /// App-server worker timeout (gunicorn `--timeout`), when the runtime has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_timeout_seconds: Option<i64>,
    /// gunicorn's worker class (`-k`; `gthread` for `sync` with `--threads` above 1). For any
    /// class but `sync`, `--timeout` is a heartbeat of the worker process, not a request bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_class: Option<String>,
    /// uvicorn's `--timeout-worker-healthcheck`, when it runs more than one worker process: its
    /// supervisor kills a child that does not answer a ping within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_healthcheck_timeout_seconds: Option<i64>,
    /// App-server graceful shutdown timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_timeout_seconds: Option<i64>,
    pub max_surge: i32,
    pub max_unavailable: i32,
    /// Whether the pool has a PodDisruptionBudget.
    #[serde(default)]
    pub disruption_budget: DisruptionBudget,
    /// celery's pool children (`--concurrency`), when the spec shows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<i64>,
    /// Where celery's pool size comes from; `NodeCpus` warns that celery forks one child per
    /// CPU of the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_source: Option<ConcurrencySource>,
    /// celery's hard time limit per task (`--time-limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_time_limit_seconds: Option<i64>,
    /// celery's `--max-memory-per-child`, in KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_per_child_kib: Option<i64>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbortCount {
    pub reason: String,
    pub count: i64,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbortRecord {
    pub pod: String,
    pub container: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default)]
    pub restart_count: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The run ended while no operator watched: known from the restart count, its reason
    /// taken from the run after it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inferred: bool,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbortSummary {
    /// Aborts per reason within the failure window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counts: Vec<AbortCount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<AbortRecord>,
    /// The newest aborts counted (pod uid/container/restartCount), newest last: what the
    /// circuit breaker counts per template revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub recent: Vec<SeenAbort>,
    /// Each pod and container with an abort counted in the window and which of its aborts were,
    /// so that each is counted once at any number of aborts, also across an operator restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counted: Vec<CountedSource>,
    /// Aborts per reason and slice of the window (a tenth of it), from which `counts` is summed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tally: Vec<TallyBucket>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CountedSource {
    /// `podUid/container`, or `podUid` for aborts of the pod itself.
    pub source: String,
    /// Restart counts of the runs whose end was counted, lowest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<i32>,
    /// Every run up to this restart count was counted too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs_through: Option<i32>,
    /// The run whose killed workers are in `workerPids`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_run: Option<i32>,
    /// Process ids of the workers of `workerRun` whose deaths were counted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worker_pids: Vec<u32>,
    /// Lasting states counted (`CrashLoop`, `Evicted`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<String>,
    /// When its latest counted abort happened; the entry goes once that leaves the window.
    pub time: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TallyBucket {
    pub reason: String,
    /// Start of the slice.
    pub start: String,
    pub count: i64,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeenAbort {
    pub key: String,
    pub reason: String,
    pub time: String,
    /// `pod-template-hash` of the pod, so boot failures can be counted per template revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// Stable abort reasons, used in status, Events, metrics and `diagnose`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Reason {
    BootFailed,
    AppLoadFailed,
    OOMKilled,
    StartupTimeout,
    LivenessTimeout,
    WorkerTimeout,
    GracePeriodExceeded,
    CrashLoop,
    ImagePullFailed,
    ConfigError,
    Evicted,
    Unschedulable,
    Signaled,
    UnexpectedExit,
    /// A celery worker keeps failing to reach its broker: it runs and consumes nothing.
    BrokerUnreachable,
}

impl Reason {
    pub const ALL: [Reason; 15] = [
        Reason::BootFailed,
        Reason::AppLoadFailed,
        Reason::OOMKilled,
        Reason::StartupTimeout,
        Reason::LivenessTimeout,
        Reason::WorkerTimeout,
        Reason::GracePeriodExceeded,
        Reason::CrashLoop,
        Reason::ImagePullFailed,
        Reason::ConfigError,
        Reason::Evicted,
        Reason::Unschedulable,
        Reason::Signaled,
        Reason::UnexpectedExit,
        Reason::BrokerUnreachable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BootFailed => "BootFailed",
            Reason::AppLoadFailed => "AppLoadFailed",
            Reason::OOMKilled => "OOMKilled",
            Reason::StartupTimeout => "StartupTimeout",
            Reason::LivenessTimeout => "LivenessTimeout",
            Reason::WorkerTimeout => "WorkerTimeout",
            Reason::GracePeriodExceeded => "GracePeriodExceeded",
            Reason::CrashLoop => "CrashLoop",
            Reason::ImagePullFailed => "ImagePullFailed",
            Reason::ConfigError => "ConfigError",
            Reason::Evicted => "Evicted",
            Reason::Unschedulable => "Unschedulable",
            Reason::Signaled => "Signaled",
            Reason::UnexpectedExit => "UnexpectedExit",
            Reason::BrokerUnreachable => "BrokerUnreachable",
        }
    }
}

impl Reason {
    /// The reason `name` spells, as status and Events write it.
    pub fn named(name: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
