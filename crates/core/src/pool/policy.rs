//! The policy engine: validates a `WorkerPoolSpec` and turns its short policy into the numbers that
//! must agree with each other (grace period, preStop, probes, app-server timeouts, rollout).
//!
//! Pure: no clock, no client. [`validate`] is the only way to get a [`ValidPool`], and
//! [`settle`] the only way to get the [`Settings`] the object builders use.

use super::celery;
use k8s_openapi::api::core::v1::{Container, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::{
    DisruptionBudget, EffectiveSettings, Health, HealthCheck, MAX_COUNT, MAX_DRAIN_SECONDS,
    MAX_INIT_BACKOFF, MAX_SECONDS, ProbeTiming, Runtime, Source, WorkerPoolSpec,
};

/// Seconds added to drain + graceful timeout for the grace period: time for the app server to
/// exit after its own graceful timeout and for the kubelet to notice, before it sends SIGKILL.
pub const GRACE_MARGIN_SECONDS: i64 = 5;
/// After a liveness or startup kill, the container's grace period (preStop included), at most:
/// the worker stopped answering, so there is no drain to wait for, only time to log why.
pub const PROBE_KILL_GRACE_SECONDS: i64 = 10;
/// Startup probe period; shorter for very short boot timeouts so the window still covers them.
pub const STARTUP_PERIOD_SECONDS: i64 = 5;
/// Readiness takes a pod out of rotation within `period × failures` = 4 s (plus one timeout).
pub const READINESS_PERIOD_SECONDS: i32 = 2;
pub const READINESS_FAILURE_THRESHOLD: i32 = 2;
pub const READINESS_TIMEOUT_SECONDS: i32 = 2;
pub const LIVENESS_PERIOD_SECONDS: i64 = 10;
pub const LIVENESS_TIMEOUT_SECONDS: i32 = 5;
pub const LIVENESS_MIN_FAILURES: i64 = 3;
pub const PROBE_TIMEOUT_SECONDS: i32 = 3;

/// One thing wrong with a spec, with the path of the field to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a spec, in field order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct InvalidSpec(pub Vec<FieldError>);

/// A spec that passed [`validate`]: the app container exists and every number is in range.
/// It borrows the spec: every reconcile validates, and the pod template is the larger part.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ValidPool<'a> {
    spec: &'a WorkerPoolSpec,
    container_index: usize,
}

impl<'a> ValidPool<'a> {
    pub fn spec(&self) -> &'a WorkerPoolSpec {
        self.spec
    }

    pub fn pod_spec(&self) -> &'a PodSpec {
        match self.spec.template.spec.as_ref() {
            Some(spec) => spec,
            None => unreachable!("validate() rejects a template without spec"),
        }
    }

    pub fn app_container(&self) -> &'a Container {
        &self.pod_spec().containers[self.container_index]
    }

    pub fn container_index(&self) -> usize {
        self.container_index
    }
}

fn check_range(errors: &mut Vec<FieldError>, path: &str, value: i64, min: i64, max: i64) {
    if value < min || value > max {
        errors.push(FieldError {
            path: path.into(),
            message: format!("must be between {min} and {max}, got {value}"),
        });
    }
}

/// Checks everything admission checks (schema bounds and CEL rules) plus what only the operator
/// can see, such as a named health port missing from the app container.
pub fn validate(spec: &WorkerPoolSpec) -> Result<ValidPool<'_>, InvalidSpec> {
    let mut errors = Vec::new();
    let p = &spec.policy;
    check_range(
        &mut errors,
        "spec.replicas",
        spec.replicas.into(),
        0,
        i32::MAX.into(),
    );
    check_range(
        &mut errors,
        "spec.policy.boot.timeoutSeconds",
        p.boot.timeout_seconds,
        1,
        MAX_SECONDS,
    );
    check_range(
        &mut errors,
        "spec.policy.boot.maxConcurrent",
        p.boot.max_concurrent.into(),
        1,
        MAX_COUNT.into(),
    );
    check_range(
        &mut errors,
        "spec.policy.requests.timeoutSeconds",
        p.requests.timeout_seconds,
        1,
        MAX_SECONDS,
    );
    check_range(
        &mut errors,
        "spec.policy.shutdown.drainSeconds",
        p.shutdown.drain_seconds,
        0,
        MAX_DRAIN_SECONDS,
    );
    check_range(
        &mut errors,
        "spec.policy.shutdown.gracefulTimeoutSeconds",
        p.shutdown.graceful_timeout_seconds,
        1,
        MAX_SECONDS,
    );
    check_range(
        &mut errors,
        "spec.policy.failure.bootFailureThreshold",
        p.failure.boot_failure_threshold.into(),
        1,
        MAX_COUNT.into(),
    );
    check_range(
        &mut errors,
        "spec.policy.failure.windowSeconds",
        p.failure.window_seconds,
        1,
        MAX_SECONDS,
    );
    if let Some(init) = &p.init {
        if init.command.is_empty() {
            errors.push(FieldError {
                path: "spec.policy.init.command".into(),
                message: "must list the command to run, e.g. [python, manage.py, migrate]".into(),
            });
        }
        check_range(
            &mut errors,
            "spec.policy.init.timeoutSeconds",
            init.timeout_seconds,
            1,
            MAX_SECONDS,
        );
        check_range(
            &mut errors,
            "spec.policy.init.backoffLimit",
            init.backoff_limit.into(),
            0,
            MAX_INIT_BACKOFF.into(),
        );
    }
    if p.boot.preload && spec.runtime != Runtime::Gunicorn {
        errors.push(FieldError {
            path: "spec.policy.boot.preload".into(),
            message: format!("is a gunicorn option but runtime is {}", spec.runtime),
        });
    }
    match &p.disruption.max_unavailable {
        IntOrString::Int(n) if *n < 0 => errors.push(FieldError {
            path: "spec.policy.disruption.maxUnavailable".into(),
            message: format!("must not be negative, got {n}"),
        }),
        IntOrString::String(s) if parse_percent(s).is_none() => errors.push(FieldError {
            path: "spec.policy.disruption.maxUnavailable".into(),
            message: format!("must be a number or a percentage like \"25%\", got {s:?}"),
        }),
        _ => {}
    }
    let health = &spec.health;
    match health.check {
        HealthCheck::Exec if health.command.is_empty() => errors.push(FieldError {
            path: "spec.health.command".into(),
            message: "is required when spec.health.check is exec".into(),
        }),
        HealthCheck::Http if !health.path.starts_with('/') => errors.push(FieldError {
            path: "spec.health.path".into(),
            message: format!("must start with '/', got {:?}", health.path),
        }),
        _ => {}
    }

    let container_index = match spec.template.spec.as_ref().map(|s| &s.containers) {
        None => {
            errors.push(FieldError {
                path: "spec.template.spec".into(),
                message: "is required: the pod template must list the app container".into(),
            });
            None
        }
        Some(containers) if containers.is_empty() => {
            errors.push(FieldError {
                path: "spec.template.spec.containers".into(),
                message: "must list at least one container".into(),
            });
            None
        }
        Some(containers) => match &spec.container {
            None => Some(0),
            Some(name) => {
                let found = containers.iter().position(|c| &c.name == name);
                if found.is_none() {
                    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
                    errors.push(FieldError {
                        path: "spec.container".into(),
                        message: format!(
                            "names no container of spec.template.spec.containers (has: {})",
                            names.join(", ")
                        ),
                    });
                }
                found
            }
        },
    };
    if let (Some(index), Some(pod)) = (container_index, spec.template.spec.as_ref()) {
        check_health_port(&mut errors, spec, &pod.containers[index]);
    }

    match container_index {
        Some(container_index) if errors.is_empty() => Ok(ValidPool {
            spec,
            container_index,
        }),
        _ => Err(InvalidSpec(errors)),
    }
}

/// A pool with no health check the operator could probe gets no probes (readiness then means
/// running): a generic worker with no `health` and no port of that name, and a celery worker
/// without an `exec` check (it serves nothing a network probe could reach).
pub fn unprobed(spec: &WorkerPoolSpec, app: &Container) -> bool {
    match spec.runtime {
        Runtime::Generic => {
            spec.health == Health::default()
                && !app
                    .ports
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|p| p.name.as_deref() == Some("http"))
        }
        Runtime::Celery => spec.health.check != HealthCheck::Exec,
        Runtime::Gunicorn | Runtime::Uvicorn => false,
    }
}

/// A named health port must exist on the app container, unless every probe is set explicitly.
fn check_health_port(errors: &mut Vec<FieldError>, spec: &WorkerPoolSpec, app: &Container) {
    let all_explicit = app.startup_probe.is_some()
        && app.readiness_probe.is_some()
        && app.liveness_probe.is_some();
    if all_explicit || spec.health.check == HealthCheck::Exec || unprobed(spec, app) {
        return;
    }
    match &spec.health.port {
        IntOrString::String(name) => {
            let ports = app.ports.as_deref().unwrap_or_default();
            if !ports
                .iter()
                .any(|p| p.name.as_deref() == Some(name.as_str()))
            {
                errors.push(FieldError {
                    path: "spec.health.port".into(),
                    message: format!(
                        "container {:?} has no port named {name:?}; name the port in the template, set a port number, or use check: tcp/exec",
                        app.name
                    ),
                });
            }
        }
        IntOrString::Int(n) if !(1..=65535).contains(n) => errors.push(FieldError {
            path: "spec.health.port".into(),
            message: format!("must be between 1 and 65535, got {n}"),
        }),
        IntOrString::Int(_) => {}
    }
}

/// Whether the pool gets a PodDisruptionBudget. The disruption controller allows
/// `replicas − maxUnavailable` evictions, a percentage rounded up, so a `maxUnavailable` that
/// covers every replica allows every eviction: such a budget protects nothing and only adds to
/// the work the disruption controller does on each pod event of the namespace. Judged on
/// `spec.replicas`, not on a ramp's step, so that a ramp neither makes nor removes it.
pub fn disruption_budget(spec: &WorkerPoolSpec) -> DisruptionBudget {
    let disruption = &spec.policy.disruption;
    if !disruption.budget {
        return DisruptionBudget::Disabled;
    }
    let replicas = i64::from(spec.replicas.max(0));
    let may_go = match &disruption.max_unavailable {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(s) => {
            let percent = i64::from(parse_percent(s).unwrap_or(100));
            (percent * replicas + 99) / 100
        }
    };
    match may_go >= replicas {
        true => DisruptionBudget::NothingToProtect,
        false => DisruptionBudget::Applied,
    }
}

fn parse_percent(s: &str) -> Option<u32> {
    s.strip_suffix('%')?
        .parse::<u32>()
        .ok()
        .filter(|p| *p <= 100)
}

/// A value from the template that breaks a derivation rule; names both numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Flags found in the app container's command line or in its own `GUNICORN_CMD_ARGS` / `UVICORN_*`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExplicitFlags {
    pub worker_timeout: Option<i64>,
    /// gunicorn's `--worker-tmp-dir`, where each worker's heartbeat file lives.
    pub worker_tmp_dir: Option<String>,
    pub graceful_timeout: Option<i64>,
    pub preload: bool,
    /// gunicorn's `-k`/`--worker-class`, as written.
    pub worker_class: Option<String>,
    /// gunicorn's `--threads`.
    pub threads: Option<i64>,
    /// uvicorn's worker processes: `--workers`, else `UVICORN_WORKERS`, else `WEB_CONCURRENCY`.
    pub workers: Option<Workers>,
    /// uvicorn's `--timeout-worker-healthcheck` (or `UVICORN_TIMEOUT_WORKER_HEALTHCHECK`).
    pub worker_healthcheck_timeout: Option<i64>,
}

/// How many worker processes an app server runs, as far as the pod spec tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workers {
    Count(i64),
    /// Taken from a ConfigMap, a Secret or the downward API: not known from the spec.
    FromReference,
}

/// What gunicorn's `--timeout` means for a worker class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerKind {
    /// `sync`: one request at a time, so a request that outlives `--timeout` is killed with its
    /// worker.
    Sync,
    /// `gthread`: requests run on threads while the worker's main loop keeps checking in.
    Threads,
    /// `gevent`, `eventlet`: requests run on greenlets while the worker's hub keeps checking in.
    Greenlets,
    /// `tornado`, `asgi`, uvicorn's and aiohttp's workers: an event loop checks in between tasks.
    EventLoop,
}

/// gunicorn's effective worker class: its name and, when the name is one gunicorn or a
/// well-known package ships, what `--timeout` means for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerClass {
    pub name: String,
    pub kind: Option<WorkerKind>,
}

impl WorkerClass {
    /// The class gunicorn runs: `-k` as written (`egg:gunicorn#` prefix allowed), `sync` when
    /// unset, and `gthread` for `sync` with more than one thread (gunicorn switches it itself).
    pub fn of(flags: &ExplicitFlags) -> WorkerClass {
        let written = flags.worker_class.as_deref().unwrap_or("sync");
        let short = written.strip_prefix("egg:gunicorn#").unwrap_or(written);
        let kind = worker_kind(short);
        if kind == Some(WorkerKind::Sync) && flags.threads.is_some_and(|t| t > 1) {
            return WorkerClass {
                name: "gthread".into(),
                kind: Some(WorkerKind::Threads),
            };
        }
        WorkerClass {
            name: short.to_string(),
            kind,
        }
    }

    /// `--timeout` bounds a worker's silence, not one request's length.
    pub fn timeout_is_a_heartbeat(&self) -> bool {
        matches!(
            self.kind,
            Some(WorkerKind::Threads | WorkerKind::Greenlets | WorkerKind::EventLoop)
        )
    }
}

/// gunicorn's own worker classes (by short name or module path), uvicorn's `UvicornWorker`
/// (from `uvicorn.workers` or `uvicorn-worker`) and aiohttp's; None for any other class.
fn worker_kind(class: &str) -> Option<WorkerKind> {
    let last = class.rsplit('.').next().unwrap_or(class);
    match (class, last) {
        ("sync", _) | (_, "SyncWorker") => Some(WorkerKind::Sync),
        ("gthread", _) | (_, "ThreadWorker") => Some(WorkerKind::Threads),
        ("gevent" | "gevent_wsgi" | "gevent_pywsgi" | "eventlet", _)
        | (_, "GeventWorker" | "GeventPyWSGIWorker" | "EventletWorker") => {
            Some(WorkerKind::Greenlets)
        }
        ("tornado" | "asgi", _)
        | (
            _,
            "TornadoWorker"
            | "ASGIWorker"
            | "UvicornWorker"
            | "UvicornH11Worker"
            | "GunicornWebWorker"
            | "GunicornUVLoopWebWorker",
        ) => Some(WorkerKind::EventLoop),
        _ => None,
    }
}

/// Everything the object builders apply, and what `status.effective` publishes.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub effective: EffectiveSettings,
    /// Derived probes, applied only where the template has none; none for an [`unprobed`] pool.
    pub startup_probe: Option<Probe>,
    pub readiness_probe: Option<Probe>,
    pub liveness_probe: Option<Probe>,
    /// Derived app-server flags for `GUNICORN_CMD_ARGS` (gunicorn only), before merging.
    pub gunicorn_args: Vec<String>,
    /// Derived `UVICORN_*` environment (uvicorn only).
    pub app_env: Vec<(String, String)>,
    pub conflicts: Vec<Conflict>,
}

/// The app-server worker timeout the policy asks for: gunicorn counts a worker's app import
/// against `--timeout` unless the app is preloaded in the master.
pub fn derived_worker_timeout(spec: &WorkerPoolSpec) -> i64 {
    let p = &spec.policy;
    if p.boot.preload {
        p.requests.timeout_seconds
    } else {
        p.requests.timeout_seconds.max(p.boot.timeout_seconds)
    }
}

fn to_i32(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// Startup window covering the whole boot: `period × failures ≥ boot.timeoutSeconds`.
pub fn startup_timing(boot_timeout: i64) -> ProbeTiming {
    let period = STARTUP_PERIOD_SECONDS.min(boot_timeout).max(1);
    startup_timing_with_period(boot_timeout, period)
}

/// Checks every `period` seconds, as many as the boot timeout holds (rounded up).
fn startup_timing_with_period(boot_timeout: i64, period: i64) -> ProbeTiming {
    let failures = (boot_timeout + period - 1) / period;
    ProbeTiming {
        period_seconds: to_i32(period),
        failure_threshold: to_i32(failures.max(1)),
        timeout_seconds: to_i32(period.min(PROBE_TIMEOUT_SECONDS.into())),
        initial_delay_seconds: 0,
        source: Source::Policy,
    }
}

/// Liveness that can only fire after the app server's own timeout: `period × failures > timeout`.
pub fn liveness_timing(app_timeout: i64) -> ProbeTiming {
    let failures = (app_timeout / LIVENESS_PERIOD_SECONDS + 1).max(LIVENESS_MIN_FAILURES);
    ProbeTiming {
        period_seconds: to_i32(LIVENESS_PERIOD_SECONDS),
        failure_threshold: to_i32(failures),
        timeout_seconds: LIVENESS_TIMEOUT_SECONDS,
        initial_delay_seconds: 0,
        source: Source::Policy,
    }
}

/// A celery worker's startup probe: its check starts a Python process that imports the app and
/// asks the broker, which takes seconds, so each check may take its whole period (10 s).
pub fn celery_startup_timing(boot_timeout: i64) -> ProbeTiming {
    let period = CELERY_STARTUP_PERIOD_SECONDS.min(boot_timeout).max(1);
    ProbeTiming {
        timeout_seconds: to_i32(period),
        ..startup_timing_with_period(boot_timeout, period)
    }
}

/// A celery worker's liveness: a check every minute, failing three times in a row, so only a
/// worker that stays unanswering for minutes is restarted, not a fleet whose broker blinked.
pub fn celery_liveness_timing() -> ProbeTiming {
    ProbeTiming {
        period_seconds: CELERY_LIVENESS_PERIOD_SECONDS,
        failure_threshold: CELERY_LIVENESS_FAILURES,
        timeout_seconds: CELERY_LIVENESS_TIMEOUT_SECONDS,
        initial_delay_seconds: 0,
        source: Source::Policy,
    }
}

/// See [`celery_liveness_timing`]. `celery inspect ping` waits a second for replies by default.
pub const CELERY_LIVENESS_PERIOD_SECONDS: i32 = 60;
const CELERY_STARTUP_PERIOD_SECONDS: i64 = 10;
pub const CELERY_LIVENESS_FAILURES: i32 = 3;
pub const CELERY_LIVENESS_TIMEOUT_SECONDS: i32 = 10;

pub fn readiness_timing() -> ProbeTiming {
    ProbeTiming {
        period_seconds: READINESS_PERIOD_SECONDS,
        failure_threshold: READINESS_FAILURE_THRESHOLD,
        timeout_seconds: READINESS_TIMEOUT_SECONDS,
        initial_delay_seconds: 0,
        source: Source::Policy,
    }
}

fn probe_from(spec: &WorkerPoolSpec, timing: ProbeTiming) -> Probe {
    use k8s_openapi::api::core::v1::{ExecAction, HTTPGetAction, TCPSocketAction};
    let health = &spec.health;
    let mut probe = Probe {
        period_seconds: Some(timing.period_seconds),
        failure_threshold: Some(timing.failure_threshold),
        timeout_seconds: Some(timing.timeout_seconds),
        success_threshold: Some(1),
        ..Probe::default()
    };
    match health.check {
        HealthCheck::Http => {
            probe.http_get = Some(HTTPGetAction {
                path: Some(health.path.clone()),
                port: health.port.clone(),
                ..HTTPGetAction::default()
            })
        }
        HealthCheck::Tcp => {
            probe.tcp_socket = Some(TCPSocketAction {
                port: health.port.clone(),
                ..TCPSocketAction::default()
            })
        }
        HealthCheck::Exec => {
            probe.exec = Some(ExecAction {
                command: Some(health.command.clone()),
            })
        }
    }
    probe
}

/// Splits a command line (or a shell `-c` string inside it) into words.
fn words(parts: &[String]) -> Vec<&str> {
    parts.iter().flat_map(|p| p.split_whitespace()).collect()
}

/// Value of `--name N`, `--name=N` (or a short alias) in a list of words; the last one wins.
fn flag_text<'a>(words: &[&'a str], long: &str, short: Option<&str>) -> Option<&'a str> {
    let mut found = None;
    let mut iter = words.iter().peekable();
    while let Some(word) = iter.next() {
        if let Some(v) = word
            .strip_prefix(long)
            .and_then(|rest| rest.strip_prefix('='))
        {
            found = Some(v);
        } else if (*word == long || short == Some(*word))
            && let Some(next) = iter.peek()
        {
            found = Some(**next);
        }
    }
    found
}

/// [`flag_text`] as a number, when it is one.
fn flag_value(words: &[&str], long: &str, short: Option<&str>) -> Option<i64> {
    flag_text(words, long, short).and_then(|v| v.parse().ok())
}

fn env_value<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
    container
        .env
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

/// gunicorn's `--worker-tmp-dir` unless the user sets one.
pub const WORKER_TMP_DIR: &str = "/dev/shm";

/// gunicorn's `--timeout` when nothing sets one.
pub const GUNICORN_DEFAULT_TIMEOUT_SECONDS: i64 = 30;

/// App-server flags the user wrote: the command line beats the container's own env, which beats
/// what we derive (gunicorn reads `GUNICORN_CMD_ARGS` before the command line).
pub fn explicit_flags(runtime: Runtime, container: &Container) -> ExplicitFlags {
    let mut cmdline: Vec<String> = container.command.clone().unwrap_or_default();
    cmdline.extend(container.args.clone().unwrap_or_default());
    let cmd_words = words(&cmdline);
    match runtime {
        Runtime::Gunicorn => {
            let env_words: Vec<&str> = env_value(container, "GUNICORN_CMD_ARGS")
                .map(|v| v.split_whitespace().collect())
                .unwrap_or_default();
            let text = |long, short| {
                flag_text(&cmd_words, long, short).or_else(|| flag_text(&env_words, long, short))
            };
            let pick = |long, short| {
                flag_value(&cmd_words, long, short).or_else(|| flag_value(&env_words, long, short))
            };
            ExplicitFlags {
                worker_timeout: pick("--timeout", Some("-t")),
                worker_tmp_dir: text("--worker-tmp-dir", None).map(str::to_string),
                graceful_timeout: pick("--graceful-timeout", None),
                preload: cmd_words.contains(&"--preload") || env_words.contains(&"--preload"),
                worker_class: text("--worker-class", Some("-k")).map(str::to_string),
                threads: pick("--threads", None),
                ..ExplicitFlags::default()
            }
        }
        Runtime::Uvicorn => {
            // click reads `UVICORN_<OPTION>` for every option the command line leaves unset.
            let env_number = |name| env_value(container, name).and_then(|v| v.trim().parse().ok());
            let workers = flag_value(&cmd_words, "--workers", None)
                .or_else(|| env_number("UVICORN_WORKERS"))
                .or_else(|| env_number("WEB_CONCURRENCY"))
                .map(Workers::Count)
                .or_else(|| {
                    ["UVICORN_WORKERS", "WEB_CONCURRENCY"]
                        .iter()
                        .any(|name| env_from_reference(container, name))
                        .then_some(Workers::FromReference)
                });
            ExplicitFlags {
                graceful_timeout: flag_value(&cmd_words, "--timeout-graceful-shutdown", None)
                    .or_else(|| env_number("UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN")),
                workers,
                worker_healthcheck_timeout: flag_value(
                    &cmd_words,
                    "--timeout-worker-healthcheck",
                    None,
                )
                .or_else(|| env_number("UVICORN_TIMEOUT_WORKER_HEALTHCHECK")),
                ..ExplicitFlags::default()
            }
        }
        Runtime::Celery | Runtime::Generic => ExplicitFlags::default(),
    }
}

/// The container sets `name` from a ConfigMap, a Secret or the downward API.
fn env_from_reference(container: &Container, name: &str) -> bool {
    container
        .env
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|e| e.name == name && e.value_from.is_some())
}

/// uvicorn's worker processes are watched by its supervisor only when there are more than one
/// (or when the count comes from elsewhere and may be).
pub fn supervised(flags: &ExplicitFlags) -> bool {
    match flags.workers {
        Some(Workers::Count(n)) => n > 1,
        Some(Workers::FromReference) => true,
        None => false,
    }
}

/// uvicorn's `--timeout-worker-healthcheck` when nothing sets one (uvicorn 0.37 and later;
/// before, the same 5 s was fixed).
pub const UVICORN_DEFAULT_HEALTHCHECK_SECONDS: i64 = 5;

/// How long a preStop hook waits, when it says: the `sleep` action, or an exec hook that runs
/// `sleep N` (directly or as a shell's first command). None for anything else (an HTTP call, a
/// script).
pub fn hook_seconds(hook: &k8s_openapi::api::core::v1::LifecycleHandler) -> Option<i64> {
    if let Some(sleep) = &hook.sleep {
        return Some(sleep.seconds);
    }
    let command = hook.exec.as_ref()?.command.as_deref()?;
    let is_sleep = |word: &str| word.rsplit('/').next() == Some("sleep");
    let seconds = |word: &str| {
        let digits = word.strip_suffix('s').unwrap_or(word);
        digits.parse::<i64>().ok().filter(|n| *n >= 0)
    };
    match command {
        [sleep, n] if is_sleep(sleep) => seconds(n),
        [shell, flag, script]
            if flag == "-c" && shell.rsplit('/').next().is_some_and(|s| s.ends_with("sh")) =>
        {
            let mut words = script
                .split(|c: char| c.is_whitespace() || c == ';' || c == '&')
                .filter(|w| !w.is_empty());
            match (words.next(), words.next()) {
                (Some(sleep), Some(n)) if is_sleep(sleep) => seconds(n),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Turns a valid pool into the numbers to apply, keeping every value set in the template and
/// reporting the ones that break a rule.
pub fn settle(pool: &ValidPool<'_>) -> Settings {
    let spec = pool.spec();
    let p = &spec.policy;
    let app = pool.app_container();
    let flags = explicit_flags(spec.runtime, app);
    let mut conflicts = Vec::new();

    let derived_timeout = derived_worker_timeout(spec);
    let worker_timeout = match spec.runtime {
        Runtime::Gunicorn => Some(flags.worker_timeout.unwrap_or(derived_timeout)),
        _ => None,
    };
    let preloaded = p.boot.preload || flags.preload;
    let worker_class = (spec.runtime == Runtime::Gunicorn).then(|| WorkerClass::of(&flags));
    if let (Some(set), Some(_)) = (flags.worker_timeout, worker_timeout) {
        if set == 0 {
            conflicts.push(Conflict {
                field: "gunicorn --timeout".into(),
                message: format!(
                    "--timeout 0 turns gunicorn's worker timeout off: a hung worker is never replaced, and policy.requests.timeoutSeconds {} bounds no request",
                    p.requests.timeout_seconds
                ),
            });
        } else if set < p.requests.timeout_seconds {
            conflicts.push(Conflict {
                field: "gunicorn --timeout".into(),
                message: format!(
                    "--timeout {set} is shorter than policy.requests.timeoutSeconds {}: gunicorn kills workers serving requests the policy allows",
                    p.requests.timeout_seconds
                ),
            });
        } else if !preloaded && set < p.boot.timeout_seconds {
            conflicts.push(Conflict {
                field: "gunicorn --timeout".into(),
                message: format!(
                    "--timeout {set} is shorter than policy.boot.timeoutSeconds {} without --preload: gunicorn kills workers while they import the app",
                    p.boot.timeout_seconds
                ),
            });
        }
    }

    if let Some(class) = worker_class.as_ref().filter(|c| c.timeout_is_a_heartbeat()) {
        let timeout = worker_timeout.unwrap_or(derived_timeout);
        conflicts.push(Conflict {
            field: "gunicorn --worker-class".into(),
            message: heartbeat_message(class, timeout, p.requests.timeout_seconds),
        });
    }

    // uvicorn's supervisor pings each worker process and kills one that does not answer in time;
    // a worker still starting (a fresh interpreter importing the app) answers late.
    let supervised = spec.runtime == Runtime::Uvicorn && supervised(&flags);
    let healthcheck_timeout = supervised.then(|| {
        flags
            .worker_healthcheck_timeout
            .unwrap_or(p.boot.timeout_seconds)
    });
    if let (true, Some(set)) = (supervised, flags.worker_healthcheck_timeout)
        && set < p.boot.timeout_seconds
    {
        conflicts.push(Conflict {
            field: "uvicorn --timeout-worker-healthcheck".into(),
            message: format!(
                "--timeout-worker-healthcheck {set} is shorter than policy.boot.timeoutSeconds {}: uvicorn's supervisor kills a worker process that has not answered its ping within {set}s, so a slow start is killed and restarted while the container keeps running",
                p.boot.timeout_seconds
            ),
        });
    }

    if let Some(conflict) = app
        .lifecycle
        .as_ref()
        .and_then(|l| l.stop_signal.as_deref())
        .and_then(|signal| {
            stop_signal_conflict(spec.runtime, &app.name, signal, StopSignalSource::Template)
        })
    {
        conflicts.push(conflict);
    }

    let graceful_timeout = match spec.runtime {
        Runtime::Generic => p.shutdown.graceful_timeout_seconds,
        _ => flags
            .graceful_timeout
            .unwrap_or(p.shutdown.graceful_timeout_seconds),
    };

    // What the user set, by the name they set it with, for the messages.
    let graceful_name = match (spec.runtime, flags.graceful_timeout) {
        (Runtime::Gunicorn, Some(_)) => "gunicorn --graceful-timeout",
        (Runtime::Uvicorn, Some(_)) => "uvicorn --timeout-graceful-shutdown",
        _ => "policy.shutdown.gracefulTimeoutSeconds",
    };

    // The template's own preStop hook is the drain, however it waits. A celery worker has no
    // endpoints to leave, so it gets none.
    let policy_drain = match spec.runtime {
        Runtime::Celery => 0,
        _ => p.shutdown.drain_seconds,
    };
    let hook = app.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref());
    let (pre_stop_sleep, explicit_pre_stop) = match hook {
        Some(hook) => (hook_seconds(hook), true),
        None => (Some(policy_drain), false),
    };
    if let (true, Some(sleep)) = (explicit_pre_stop, pre_stop_sleep)
        && sleep < policy_drain
    {
        conflicts.push(Conflict {
            field: "preStop".into(),
            message: format!(
                "the preStop hook waits {sleep}s, shorter than policy.shutdown.drainSeconds {}: endpoints may still route to a terminating pod",
                p.shutdown.drain_seconds
            ),
        });
    }
    let drain = pre_stop_sleep.unwrap_or(policy_drain);
    let drain_name = match (explicit_pre_stop, pre_stop_sleep) {
        (true, Some(_)) => format!("the preStop hook's {drain}s"),
        (true, None) => format!(
            "policy.shutdown.drainSeconds {drain}s (counted for a preStop hook whose length is unknown)"
        ),
        (false, _) => format!("drain {drain}s"),
    };
    // Derived from the effective drain and graceful timeout, wherever they were set.
    let pod = pool.pod_spec();
    let (grace, grace_source) = match pod.termination_grace_period_seconds {
        Some(g) => (g, Source::Template),
        None => (
            drain + graceful_timeout + GRACE_MARGIN_SECONDS,
            Source::Policy,
        ),
    };
    if grace <= drain && explicit_pre_stop {
        conflicts.push(Conflict {
            field: "terminationGracePeriodSeconds".into(),
            message: format!(
                "terminationGracePeriodSeconds {grace} is no longer than {drain_name}: the preStop hook alone outlasts it, and the kubelet SIGKILLs the pod before the app server is told to stop"
            ),
        });
    } else if grace < drain + graceful_timeout {
        conflicts.push(Conflict {
            field: "terminationGracePeriodSeconds".into(),
            message: format!(
                "terminationGracePeriodSeconds {grace} is shorter than {drain_name} + {graceful_name} {graceful_timeout}s = {}: the kubelet will SIGKILL workers mid-shutdown",
                drain + graceful_timeout
            ),
        });
    }

    let celery = (spec.runtime == Runtime::Celery).then(|| {
        let shutdown = celery::Shutdown {
            graceful_seconds: graceful_timeout,
            graceful_name,
            grace_seconds: grace,
        };
        celery::settle(app, p.requests.timeout_seconds, &shutdown)
    });
    if let Some(celery) = &celery {
        conflicts.extend(celery.conflicts.iter().cloned());
    }

    // The init Job runs the app container alone with the pod's init containers and native
    // sidecars; a sidecar among the containers cannot come along (it would never exit).
    if spec.policy.init.is_some() {
        let left_out: Vec<&str> = pool
            .pod_spec()
            .containers
            .iter()
            .filter(|c| c.name != app.name)
            .map(|c| c.name.as_str())
            .collect();
        if !left_out.is_empty() {
            conflicts.push(Conflict {
                field: "policy.init".into(),
                message: format!(
                    "the init Job runs without container{} {}: a sidecar in containers never exits, so a Job cannot wait for it; if the migration needs it (a database proxy), make it a native sidecar (initContainers with restartPolicy: Always), which the init Job runs too",
                    if left_out.len() > 1 { "s" } else { "" },
                    left_out.join(", ")
                ),
            });
        }
    }

    // A probe kill gets a short grace period of its own, never longer than the pod's.
    let probe_kill_grace = PROBE_KILL_GRACE_SECONDS.min(grace).max(1);

    // A probe the template sets is kept; the others are derived, unless nothing can be probed.
    let derive_probes = !unprobed(spec, app);
    let timing = |explicit: &Option<Probe>, derived: ProbeTiming| match explicit {
        Some(probe) => Some(ProbeTiming::of(probe, Source::Template)),
        None => derive_probes.then_some(derived),
    };
    let derived_startup = match spec.runtime {
        Runtime::Celery => celery_startup_timing(p.boot.timeout_seconds),
        _ => startup_timing(p.boot.timeout_seconds),
    };
    let startup = timing(&app.startup_probe, derived_startup);
    if let Some(startup) = startup.filter(|t| t.source == Source::Template)
        && startup.window_seconds() < p.boot.timeout_seconds
    {
        conflicts.push(Conflict {
            field: "startupProbe".into(),
            message: format!(
                "startupProbe allows {}s (initialDelay + period × failureThreshold), shorter than policy.boot.timeoutSeconds {}: pods are killed while booting",
                startup.window_seconds(),
                p.boot.timeout_seconds
            ),
        });
    }

    let app_timeout = worker_timeout.unwrap_or(p.requests.timeout_seconds);
    // A celery worker's main process answers the health check while its children run tasks;
    // what it depends on is the broker, whose blip must not restart the fleet.
    let derived_liveness = match spec.runtime {
        Runtime::Celery => celery_liveness_timing(),
        _ => liveness_timing(app_timeout),
    };
    let liveness = timing(&app.liveness_probe, derived_liveness);
    let liveness_reach = liveness.map_or(0, |l| {
        i64::from(l.period_seconds) * i64::from(l.failure_threshold) + i64::from(l.timeout_seconds)
    });
    if liveness.is_some_and(|l| l.source == Source::Template)
        && spec.runtime != Runtime::Celery
        && liveness_reach <= app_timeout
    {
        conflicts.push(Conflict {
            field: "livenessProbe".into(),
            message: format!(
                "livenessProbe fires after {liveness_reach}s (period × failureThreshold + timeout), not after the app server's timeout {app_timeout}s: one slow request restarts the container"
            ),
        });
    }

    // A celery worker serves no traffic: nothing to be ready for.
    let derive_readiness = spec.runtime != Runtime::Celery;
    let readiness = match &app.readiness_probe {
        Some(probe) => Some(ProbeTiming::of(probe, Source::Template)),
        None => (derive_probes && derive_readiness).then(readiness_timing),
    };

    let mut gunicorn_args = Vec::new();
    let mut app_env = Vec::new();
    match spec.runtime {
        Runtime::Gunicorn => {
            gunicorn_args.push(format!("--timeout={derived_timeout}"));
            gunicorn_args.push(format!(
                "--graceful-timeout={}",
                p.shutdown.graceful_timeout_seconds
            ));
            if p.boot.preload {
                gunicorn_args.push("--preload".into());
            }
            // Workers heartbeat by touching a file there; on a disk or overlay filesystem that
            // can block long enough for a false WORKER TIMEOUT, and a read-only root filesystem
            // has no temp dir at all. /dev/shm is a RAM-backed tmpfs in every container.
            if flags.worker_tmp_dir.is_none() {
                gunicorn_args.push(format!("--worker-tmp-dir={WORKER_TMP_DIR}"));
            }
        }
        Runtime::Uvicorn => {
            app_env.push((
                "UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN".into(),
                p.shutdown.graceful_timeout_seconds.to_string(),
            ));
            // An environment variable, not a flag: uvicorn before 0.37 has no such option and
            // ignores the variable, where it would refuse the flag.
            if supervised && flags.worker_healthcheck_timeout.is_none() {
                app_env.push((
                    "UVICORN_TIMEOUT_WORKER_HEALTHCHECK".into(),
                    p.boot.timeout_seconds.to_string(),
                ));
            }
        }
        Runtime::Celery => {
            app_env.extend(celery.as_ref().map(|c| c.env.clone()).unwrap_or_default());
        }
        Runtime::Generic => {}
    }

    Settings {
        effective: EffectiveSettings {
            termination_grace_period_seconds: grace,
            termination_grace_period_source: grace_source,
            probe_kill_grace_period_seconds: (derive_probes
                && (app.startup_probe.is_none() || app.liveness_probe.is_none()))
            .then_some(probe_kill_grace),
            pre_stop_sleep_seconds: pre_stop_sleep,
            startup_probe: startup,
            readiness_probe: readiness,
            liveness_probe: liveness,
            worker_timeout_seconds: worker_timeout,
            worker_class: worker_class.map(|c| c.name),
            worker_healthcheck_timeout_seconds: healthcheck_timeout,
            graceful_timeout_seconds: (spec.runtime != Runtime::Generic)
                .then_some(graceful_timeout),
            max_surge: p.boot.max_concurrent,
            max_unavailable: 0,
            disruption_budget: disruption_budget(spec),
            concurrency: celery.as_ref().and_then(|c| c.concurrency),
            concurrency_source: celery.as_ref().and_then(|c| c.concurrency_source),
            task_time_limit_seconds: celery.as_ref().and_then(|c| c.time_limit_seconds),
            max_memory_per_child_kib: celery.as_ref().and_then(|c| c.max_memory_per_child_kib),
        },
        startup_probe: derive_probes.then(|| Probe {
            termination_grace_period_seconds: Some(probe_kill_grace),
            ..probe_from(spec, derived_startup)
        }),
        readiness_probe: (derive_probes && derive_readiness)
            .then(|| probe_from(spec, readiness_timing())),
        liveness_probe: derive_probes.then(|| Probe {
            termination_grace_period_seconds: Some(probe_kill_grace),
            ..probe_from(spec, derived_liveness)
        }),
        gunicorn_args,
        app_env,
        conflicts,
    }
}

/// Where a stop signal was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignalSource<'a> {
    /// The template's `lifecycle.stopSignal`.
    Template,
    /// What the kubelet reports a running pod's container is stopped with (the image's
    /// `STOPSIGNAL` unless the spec sets one).
    Reported { pod: &'a str },
}

/// A stop signal on which the app server does not drain: `None` for one it shuts down
/// gracefully on. gunicorn drains only on SIGTERM (SIGINT and SIGQUIT are its quick shutdown,
/// SIGHUP reloads); uvicorn drains on SIGTERM and SIGINT and does not handle SIGQUIT (one process
/// dies at once, a supervisor of several ignores it until the grace period's SIGKILL). Of any
/// other worker only SIGKILL is known to drop its work.
pub fn stop_signal_conflict(
    runtime: Runtime,
    container: &str,
    signal: &str,
    source: StopSignalSource<'_>,
) -> Option<Conflict> {
    let upper = signal.trim().to_ascii_uppercase();
    let name = match upper.strip_prefix("SIG") {
        Some(_) => upper.clone(),
        None => format!("SIG{upper}"),
    };
    let effect = match (runtime, name.as_str()) {
        (_, "SIGTERM") => return None,
        (_, "SIGKILL") => "the app server is killed at once, with no shutdown at all",
        (Runtime::Gunicorn, "SIGINT" | "SIGQUIT") => {
            "gunicorn's quick shutdown: its workers are killed at once"
        }
        (Runtime::Gunicorn, "SIGHUP") => {
            "gunicorn reloads its workers instead of stopping, and the kubelet SIGKILLs it when the grace period ends"
        }
        (Runtime::Gunicorn, _) => {
            "gunicorn does not stop on it, and the kubelet SIGKILLs it when the grace period ends"
        }
        (Runtime::Uvicorn, "SIGINT") => return None,
        (Runtime::Uvicorn, _) => {
            "uvicorn does not handle it: one process dies at once, and a supervisor of several ignores it until the kubelet's SIGKILL at the end of the grace period"
        }
        // SIGINT is celery's warm shutdown too (a second one turns it cold).
        (Runtime::Celery, "SIGINT") => return None,
        (Runtime::Celery, "SIGQUIT") => {
            "celery's cold shutdown: the tasks still running are terminated at once"
        }
        (Runtime::Celery, "SIGHUP") => {
            "celery restarts the worker instead of stopping, and the kubelet SIGKILLs it when the grace period ends"
        }
        (Runtime::Celery, _) => {
            "celery does not stop on it, and the kubelet SIGKILLs it and its tasks when the grace period ends"
        }
        (Runtime::Generic, _) => return None,
    };
    let (field, found) = match source {
        StopSignalSource::Template => (
            "lifecycle.stopSignal".to_string(),
            format!("container {container:?} sets lifecycle.stopSignal {name}"),
        ),
        StopSignalSource::Reported { pod } => (
            "stopSignal".to_string(),
            format!(
                "pod {pod} reports that container {container:?} is stopped with {name} (the image's STOPSIGNAL)"
            ),
        ),
    };
    let fix = match source {
        StopSignalSource::Template => "set lifecycle.stopSignal: SIGTERM or remove it",
        StopSignalSource::Reported { .. } => {
            "build the image with STOPSIGNAL SIGTERM, or set lifecycle.stopSignal: SIGTERM (with spec.os.name: linux) where the cluster has the ContainerStopSignals feature"
        }
    };
    Some(Conflict {
        field,
        message: format!(
            "{found}: {effect}, so every rollout and scale-down drops in-flight requests without an abort to show for it; {fix}"
        ),
    })
}

/// The first pod, by name, whose app container is reported stopped with a signal its app server
/// does not drain on; `reported` gives each pod's name and signal.
pub fn reported_stop_signal<'a>(
    runtime: Runtime,
    app: &str,
    reported: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<Conflict> {
    let mut reported: Vec<(&str, &str)> = reported.into_iter().collect();
    reported.sort_unstable();
    reported.into_iter().find_map(|(pod, signal)| {
        stop_signal_conflict(runtime, app, signal, StopSignalSource::Reported { pod })
    })
}

/// What `--timeout` and `policy.requests.timeoutSeconds` mean for a worker class whose
/// `--timeout` is a heartbeat, and what does bound a request there.
fn heartbeat_message(class: &WorkerClass, timeout: i64, requests: i64) -> String {
    let (runs_on, bound) = match class.kind {
        Some(WorkerKind::Threads) => (
            "a thread",
            "per-call timeouts in the app (a database statement_timeout, HTTP client timeouts)",
        ),
        Some(WorkerKind::Greenlets) => (
            "a greenlet",
            "per-call timeouts in the app (a database statement_timeout, HTTP client timeouts, gevent.Timeout or eventlet.Timeout)",
        ),
        _ => (
            "a task of the event loop",
            "the app itself (asyncio.timeout or a timeout middleware, a database statement_timeout)",
        ),
    };
    format!(
        "worker class {}: gunicorn's --timeout {timeout}s is a heartbeat of the worker process, not a bound on a request: a slow request runs on {runs_on} while the worker keeps checking in, so policy.requests.timeoutSeconds {requests} only sets --timeout and the liveness probe's patience; bound requests with {bound}; a load balancer's upstream timeout drops the client but not the work",
        class.name
    )
}

/// A container's memory limit, as its spec writes it.
pub fn memory_limit(container: &Container) -> Option<&str> {
    let limits = container.resources.as_ref()?.limits.as_ref()?;
    limits.get("memory").map(|q| q.0.as_str())
}

/// What is valid but likely to hurt: an app server without a memory limit, whose workers each
/// grow on their own, takes the node's memory when it runs out instead of its own container's.
pub fn advice(pool: &ValidPool<'_>) -> Vec<String> {
    let app = pool.app_container();
    match pool.spec().runtime {
        Runtime::Gunicorn | Runtime::Uvicorn if memory_limit(app).is_none() => vec![format!(
            "container {:?} sets no resources.limits.memory: each {} worker grows on its own, and \
             without a limit running out of memory takes the node's memory (and other pods) \
             instead of one container; set a limit the workers fit in",
            app.name,
            pool.spec().runtime
        )],
        _ => Vec::new(),
    }
}

/// Replicas of the Deployment on first apply: the first ramp step.
pub fn first_apply_replicas(spec: &WorkerPoolSpec) -> i32 {
    crate::pool::ramp::next_target(spec.replicas, spec.policy.boot.max_concurrent, None)
}
