//! The `WorkerPool` custom resource (`workerpool.dev/v1alpha1`).
//!
//! Every policy field has a default so that a pool with only `runtime` and `template` is valid.
//! Admission-time checks live next to the fields as schema bounds and CEL rules; the same checks
//! are repeated in [`crate::pool::policy::validate`] for pools that reach the controller some other way.

mod crd;
mod status;
pub mod strict;
mod window;

pub use crd::{crd, crd_yaml, pool_name_message};
pub use status::*;
pub use window::{Window, parse_time};

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "workerpool.dev";
/// Label put on every child object and every pod; value is the pool name.
pub const POOL_LABEL: &str = "workerpool.dev/pool";
/// Pod annotation naming the app-server runtime, read by `diagnose`.
pub const RUNTIME_ANNOTATION: &str = "workerpool.dev/runtime";
pub const MANAGER_NAME: &str = "workerpool-operator";
/// Pod template annotation naming the template revision (a hash of the derived template).
pub const REVISION_ANNOTATION: &str = "workerpool.dev/revision";
/// On each child: a hash of what the operator last applied to it, so a field it no longer sets
/// is noticed (and removed by the next apply) although the live object still holds it.
pub const APPLIED_ANNOTATION: &str = "workerpool.dev/applied";
/// The revision label the Deployment controller puts on every pod.
pub const REVISION_LABEL: &str = "pod-template-hash";
/// Label on init Job pods; deliberately not the pool label, so they are not pool pods.
pub const INIT_LABEL: &str = "workerpool.dev/init";

/// Pool names become label values (`workerpool.dev/pool`, `app.kubernetes.io/instance`), which are
/// at most 63 characters; a longer name would be admitted and then refused on every child.
pub const MAX_POOL_NAME: usize = 63;

/// A DNS subdomain, which every object name must be: dot-separated DNS labels.
pub fn is_dns_subdomain(name: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    name.len() <= 253
        && name.split('.').all(|label| {
            edge(label.chars().next())
                && edge(label.chars().last())
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// Longest duration any policy field accepts, so derived sums can never overflow.
pub const MAX_SECONDS: i64 = 86_400;
/// Most pods booting at once, and most boot failures before the circuit opens.
pub const MAX_COUNT: i32 = 1000;
/// Longest preStop drain: an endpoint is out of every load balancer long before.
pub const MAX_DRAIN_SECONDS: i64 = 3600;
/// Most retries of the init Job's pod.
pub const MAX_INIT_BACKOFF: i32 = 10;

// Several printer columns repeat `type_`; that is the derive's syntax, not a mistake.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "workerpool.dev",
    version = "v1alpha1",
    kind = "WorkerPool",
    plural = "workerpools",
    namespaced,
    shortname = "wp",
    category = "all",
    status = "WorkerPoolStatus",
    derive = "Default",
    derive = "PartialEq",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Last-Abort",
        type_ = "string",
        json_path = ".status.aborts.last.reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Target",
        type_ = "integer",
        json_path = ".status.rampTarget",
        priority = 1
    ),
    printcolumn(
        name = "Revision",
        type_ = "string",
        json_path = ".status.revision",
        priority = 1
    ),
    printcolumn(
        name = "Circuit-Open",
        type_ = "boolean",
        json_path = ".status.circuit.open",
        priority = 1
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.container) || (has(self.template.spec) && self.template.spec.containers.exists(c, c.name == self.container))"
).message("spec.container must name a container of spec.template.spec.containers").field_path(".container"))]
#[x_kube(validation = Rule::new(
    "has(self.template.spec) && size(self.template.spec.containers) > 0"
).message("spec.template.spec.containers must list at least one container").field_path(".template"))]
#[x_kube(validation = Rule::new(
    "!self.policy.boot.preload || self.runtime == 'gunicorn'"
).message("spec.policy.boot.preload is a gunicorn option; set runtime: gunicorn or remove it").field_path(".policy.boot.preload"))]
#[x_kube(validation = Rule::new(HEALTH_PORT_OF_FIRST).message("spec.health.port names no port of the app container (gunicorn and uvicorn pools probe the port named http unless told otherwise): name the container's port, set spec.health.port to a number, or use check: exec").field_path(".health.port"))]
pub struct WorkerPoolSpec {
    /// Desired number of pods. Reached in steps of `policy.boot.maxConcurrent`.
    // No schema minimum: the scale subresource already refuses a negative count
    // ("should be a non-negative integer"), and a minimum would say it a second time.
    #[serde(default = "default_replicas")]
    pub replicas: i32,

    /// What the app container runs (gunicorn, uvicorn, a celery worker, or anything else as
    /// generic); decides which flags are derived and how aborts are read.
    pub runtime: Runtime,

    /// Name of the app container in `template`; the first container when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,

    /// Pod template of the workers. Values set here explicitly win over derived ones.
    pub template: PodTemplateSpec,

    /// How the app's health is checked by the startup, readiness and liveness probes.
    #[serde(default)]
    pub health: Health,

    /// Boot, request, shutdown, init and failure policy; every number has a default.
    #[serde(default)]
    pub policy: Policy,
}

impl WorkerPoolSpec {
    /// The app container's name as the spec gives it: `container`, else the template's first;
    /// None when the template lists none (validation says so).
    pub fn app_container_name(&self) -> Option<&str> {
        self.container.as_deref().or_else(|| {
            self.template
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .map(|c| c.name.as_str())
        })
    }
}

/// A named health port is a port of the app container, unless nothing probes it: an exec check,
/// every probe set in the template, or a generic worker left without `health` (no probes). The
/// same rule as the operator's own validation, for pools whose app container is the first one:
/// searching the ports of the container `container` names would search ports inside a search of
/// containers, which the API server estimates too costly; the operator's validation checks those
/// (`Stalled`, `InvalidSpec`). A number is never a port name (port names hold a letter).
const HEALTH_PORT_OF_FIRST: &str = "!has(self.template.spec) || size(self.template.spec.containers) == 0 \
    || has(self.container) || self.health.check == 'exec' \
    || string(self.health.port).matches('^[0-9]+$') \
    || (self.runtime == 'generic' && self.health.check == 'http' && self.health.path == '/healthz' \
        && string(self.health.port) == 'http' && !has(self.health.command)) \
    || (has(self.template.spec.containers[0].startupProbe) \
        && has(self.template.spec.containers[0].readinessProbe) \
        && has(self.template.spec.containers[0].livenessProbe)) \
    || (has(self.template.spec.containers[0].ports) \
        && self.template.spec.containers[0].ports.exists(p, has(p.name) && p.name == string(self.health.port)))";

fn default_replicas() -> i32 {
    1
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    // Only for code that needs `WorkerPool: Default`; the schema keeps `runtime` required.
    #[default]
    Gunicorn,
    Uvicorn,
    /// A celery worker (`celery … worker …`); its prefork pool's children are the workers.
    Celery,
    Generic,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Gunicorn => "gunicorn",
            Runtime::Uvicorn => "uvicorn",
            Runtime::Celery => "celery",
            Runtime::Generic => "generic",
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Runtime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gunicorn" => Ok(Runtime::Gunicorn),
            "uvicorn" => Ok(Runtime::Uvicorn),
            "celery" => Ok(Runtime::Celery),
            "generic" => Ok(Runtime::Generic),
            other => Err(format!(
                "unknown runtime {other:?} (expected gunicorn, uvicorn, celery or generic)"
            )),
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheck {
    /// HTTP GET on `path` and `port`.
    #[default]
    Http,
    /// TCP connect to `port`.
    Tcp,
    /// Run `command` in the app container.
    Exec,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.check != 'exec' || (has(self.command) && size(self.command) > 0)")
    .message("spec.health.command is required when spec.health.check is exec").field_path(".command"))]
#[x_kube(validation = Rule::new("self.check != 'http' || self.path.startsWith('/')")
    .message("spec.health.path must start with '/'").field_path(".path"))]
pub struct Health {
    /// Kind of check: http (default), tcp or exec.
    #[serde(default)]
    pub check: HealthCheck,
    /// HTTP path for `http` checks.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Container port, by name or number, for `http` and `tcp` checks.
    #[serde(default = "default_health_port")]
    pub port: IntOrString,
    /// Command for `exec` checks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
}

fn default_health_path() -> String {
    "/healthz".into()
}

fn default_health_port() -> IntOrString {
    IntOrString::String("http".into())
}

impl Default for Health {
    fn default() -> Self {
        Health {
            check: HealthCheck::Http,
            path: default_health_path(),
            port: default_health_port(),
            command: Vec::new(),
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default)]
    pub boot: BootPolicy,
    #[serde(default)]
    pub requests: RequestPolicy,
    #[serde(default)]
    pub shutdown: ShutdownPolicy,
    /// Run-once Job per template revision, before that revision's pods boot (migrations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitPolicy>,
    #[serde(default)]
    pub failure: FailurePolicy,
    #[serde(default)]
    pub disruption: DisruptionPolicy,
    #[serde(default)]
    pub logs: LogPolicy,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootPolicy {
    /// Longest expected boot (imports, warm-up), in seconds.
    #[serde(default = "default_boot_timeout")]
    #[schemars(range(min = 1, max = MAX_SECONDS))]
    pub timeout_seconds: i64,
    /// At most this many pods booting at once during scale-up and rollout.
    #[serde(default = "default_max_concurrent")]
    #[schemars(range(min = 1, max = MAX_COUNT))]
    pub max_concurrent: i32,
    /// gunicorn `--preload`: load the app in the master before forking workers.
    #[serde(default)]
    pub preload: bool,
}

fn default_boot_timeout() -> i64 {
    60
}
fn default_max_concurrent() -> i32 {
    2
}

impl Default for BootPolicy {
    fn default() -> Self {
        BootPolicy {
            timeout_seconds: default_boot_timeout(),
            max_concurrent: default_max_concurrent(),
            preload: false,
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestPolicy {
    /// App-server worker/request timeout, in seconds.
    #[serde(default = "default_request_timeout")]
    #[schemars(range(min = 1, max = MAX_SECONDS))]
    pub timeout_seconds: i64,
}

fn default_request_timeout() -> i64 {
    30
}

impl Default for RequestPolicy {
    fn default() -> Self {
        RequestPolicy {
            timeout_seconds: default_request_timeout(),
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShutdownPolicy {
    /// preStop sleep so endpoints stop routing to the pod before SIGTERM, in seconds.
    #[serde(default = "default_drain")]
    #[schemars(range(min = 0, max = MAX_DRAIN_SECONDS))]
    pub drain_seconds: i64,
    /// Time the app server gets after SIGTERM to finish in-flight requests, in seconds.
    #[serde(default = "default_graceful_timeout")]
    #[schemars(range(min = 1, max = MAX_SECONDS))]
    pub graceful_timeout_seconds: i64,
}

fn default_drain() -> i64 {
    5
}
fn default_graceful_timeout() -> i64 {
    30
}

impl Default for ShutdownPolicy {
    fn default() -> Self {
        ShutdownPolicy {
            drain_seconds: default_drain(),
            graceful_timeout_seconds: default_graceful_timeout(),
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitPolicy {
    /// Command run once per template revision in a Job with the app container's image and env.
    #[schemars(length(min = 1))]
    pub command: Vec<String>,
    /// Deadline of the Job, in seconds.
    #[serde(default = "default_init_timeout")]
    #[schemars(range(min = 1, max = MAX_SECONDS))]
    pub timeout_seconds: i64,
    /// Retries of the Job's pod before the revision is marked failed.
    #[serde(default = "default_init_backoff")]
    #[schemars(range(min = 0, max = MAX_INIT_BACKOFF))]
    pub backoff_limit: i32,
}

fn default_init_timeout() -> i64 {
    300
}
fn default_init_backoff() -> i32 {
    1
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicy {
    /// Boot failures of one revision within `windowSeconds` that open the circuit.
    #[serde(default = "default_boot_failure_threshold")]
    #[schemars(range(min = 1, max = MAX_COUNT))]
    pub boot_failure_threshold: i32,
    /// Window over which aborts are counted, in seconds.
    #[serde(default = "default_window")]
    #[schemars(range(min = 1, max = MAX_SECONDS))]
    pub window_seconds: i64,
}

fn default_boot_failure_threshold() -> i32 {
    3
}
fn default_window() -> i64 {
    600
}

impl Default for FailurePolicy {
    fn default() -> Self {
        FailurePolicy {
            boot_failure_threshold: default_boot_failure_threshold(),
            window_seconds: default_window(),
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "string(self.maxUnavailable).matches('^([0-9]+|100%|[1-9]?[0-9]%)$')"
).message("spec.policy.disruption.maxUnavailable must be a count of 0 or more or a percentage from 0% to 100%").field_path(".maxUnavailable"))]
pub struct DisruptionPolicy {
    /// PodDisruptionBudget `maxUnavailable` (number or percentage) during voluntary disruptions.
    #[serde(default = "default_max_unavailable")]
    pub max_unavailable: IntOrString,
    /// Whether the pool has a PodDisruptionBudget. `false` leaves node drains free to evict all
    /// its pods at once, and spares kube-controller-manager's disruption controller, which
    /// matches every pod event against every budget of the namespace. A budget whose
    /// `maxUnavailable` covers all the pool's replicas protects nothing and is not made either.
    #[serde(default = "default_budget")]
    pub budget: bool,
}

fn default_budget() -> bool {
    true
}

fn default_max_unavailable() -> IntOrString {
    IntOrString::Int(1)
}

impl Default for DisruptionPolicy {
    fn default() -> Self {
        DisruptionPolicy {
            max_unavailable: default_max_unavailable(),
            budget: default_budget(),
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogPolicy {
    /// Read the tail of a terminated container's log, and sample the log of booting or unready
    /// pods, for the hints and the worker timeouts that only the app server's log shows.
    #[serde(default = "default_read_logs")]
    pub read: bool,
}

fn default_read_logs() -> bool {
    true
}

impl Default for LogPolicy {
    fn default() -> Self {
        LogPolicy {
            read: default_read_logs(),
        }
    }
}
