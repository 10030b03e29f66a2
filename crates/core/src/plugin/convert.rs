//! `kubectl workerpool convert`: the WorkerPool that replaces a Deployment. Its policy is read
//! from the Deployment's own numbers where it has them; the values the operator derives instead
//! of copying (probes, grace period, preStop hook, rollout strategy, app-server flags) are left
//! out of the template, and each one that changes is said in a comment.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{audit, workload};
use crate::api::{
    EffectiveSettings, Health, HealthCheck, MAX_POOL_NAME, MAX_SECONDS, ProbeTiming, Runtime,
    Source, WorkerPool, WorkerPoolSpec,
};
use crate::pool::{celery, policy};
use crate::yaml;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("deployment {0} has no pod template")]
    NoTemplate(String),
    #[error(
        "the pool cannot be named {0}: the operator names its own Deployment after the pool, and deployment {0} is the one being replaced; pass --name"
    )]
    SameName(String),
    #[error("--name {0}: a pool name is a DNS label of at most {MAX_POOL_NAME} characters")]
    BadName(String),
    #[error("the converted pool is not valid: {0}")]
    Invalid(String),
}

/// Where a policy value came from, said beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sourced<T> {
    pub value: T,
    pub from: String,
}

fn sourced<T>(value: T, from: impl Into<String>) -> Sourced<T> {
    Sourced {
        value,
        from: from.into(),
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Converted {
    pub pool: WorkerPool,
    pub boot_timeout: Sourced<i64>,
    pub max_concurrent: Sourced<i32>,
    pub request_timeout: Sourced<i64>,
    pub drain: Sourced<i64>,
    pub graceful_timeout: Sourced<i64>,
    pub health_from: String,
    /// Each value the pool's pods will have that the Deployment's do not, said as `was → will be`.
    pub changes: Vec<String>,
    /// The rules the pool still reports, from values kept in the template.
    pub conflicts: Vec<String>,
}

/// A name that is none of the Deployment's: the pool's own Deployment takes the pool's name.
pub fn default_pool_name(deployment: &str) -> String {
    let mut name = format!("{deployment}-pool");
    if name.len() > MAX_POOL_NAME {
        name = format!(
            "{}-pool",
            &deployment[..MAX_POOL_NAME - 5].trim_end_matches('-')
        );
    }
    name
}

fn timing_text(t: &ProbeTiming) -> String {
    let mut text = format!(
        "every {}s, {} failures, timeout {}s",
        t.period_seconds, t.failure_threshold, t.timeout_seconds
    );
    if t.initial_delay_seconds > 0 {
        text.push_str(&format!(", after {}s", t.initial_delay_seconds));
    }
    text
}

fn probe_change(name: &str, before: Option<&Probe>, after: Option<&ProbeTiming>) -> Option<String> {
    let before = before.map(|p| ProbeTiming::of(p, Source::Template));
    let text = |t: Option<&ProbeTiming>| t.map_or_else(|| "none".to_string(), timing_text);
    let same = match (&before, after) {
        (Some(b), Some(a)) => {
            (
                b.period_seconds,
                b.failure_threshold,
                b.timeout_seconds,
                b.initial_delay_seconds,
            ) == (
                a.period_seconds,
                a.failure_threshold,
                a.timeout_seconds,
                a.initial_delay_seconds,
            )
        }
        (None, None) => true,
        _ => false,
    };
    (!same).then(|| format!("{name}: {} → {}", text(before.as_ref()), text(after)))
}

/// The health check the Deployment's probes use (readiness first), else the default one on the
/// app container's port.
fn health_of(container: &Container) -> (Health, String) {
    let probes = [
        ("readinessProbe", &container.readiness_probe),
        ("livenessProbe", &container.liveness_probe),
        ("startupProbe", &container.startup_probe),
    ];
    for (name, probe) in probes {
        let Some(probe) = probe else { continue };
        if let Some(http) = &probe.http_get {
            return (
                Health {
                    check: HealthCheck::Http,
                    path: http.path.clone().unwrap_or_else(|| "/".into()),
                    port: http.port.clone(),
                    command: Vec::new(),
                },
                format!("from the {name}"),
            );
        }
        if let Some(tcp) = &probe.tcp_socket {
            return (
                Health {
                    check: HealthCheck::Tcp,
                    port: tcp.port.clone(),
                    ..Health::default()
                },
                format!("from the {name}"),
            );
        }
        if let Some(command) = probe.exec.as_ref().and_then(|e| e.command.clone()) {
            return (
                Health {
                    check: HealthCheck::Exec,
                    command,
                    ..Health::default()
                },
                format!("from the {name}"),
            );
        }
    }
    let ports = container.ports.as_deref().unwrap_or_default();
    let default = Health::default();
    if ports.iter().any(|p| p.name.as_deref() == Some("http")) || ports.len() != 1 {
        return (default, "the default".into());
    }
    let port = ports[0].name.clone().map_or(
        IntOrString::Int(ports[0].container_port),
        IntOrString::String,
    );
    (
        Health { port, ..default },
        "the default path on the container's only port".into(),
    )
}

/// The WorkerPool that replaces `deployment`, and what changes when it does.
pub fn convert(
    deployment: &Deployment,
    pods: &[Pod],
    pool_name: Option<&str>,
    forced: Option<Runtime>,
) -> Result<Converted, ConvertError> {
    let deployment_name = deployment.metadata.name.clone().unwrap_or_default();
    let spec = deployment
        .spec
        .as_ref()
        .ok_or_else(|| ConvertError::NoTemplate(deployment_name.clone()))?;
    let pod_spec = spec
        .template
        .spec
        .as_ref()
        .ok_or_else(|| ConvertError::NoTemplate(deployment_name.clone()))?;
    let name = match pool_name {
        Some(name) if name == deployment_name => {
            return Err(ConvertError::SameName(name.into()));
        }
        Some(name)
            if name.len() > MAX_POOL_NAME
                || !crate::api::is_dns_subdomain(name)
                || name.contains('.') =>
        {
            return Err(ConvertError::BadName(name.into()));
        }
        Some(name) => name.to_string(),
        None => default_pool_name(&deployment_name),
    };
    let app = workload::app_server(pod_spec, forced);
    let runtime = app.map_or(Runtime::Generic, |a| a.runtime);
    let container = app
        .map(|a| a.container)
        .or_else(|| pod_spec.containers.first())
        .ok_or_else(|| ConvertError::NoTemplate(deployment_name.clone()))?;
    let first = pod_spec.containers.first().map(|c| c.name.as_str());

    // The policy, from the Deployment's numbers.
    let flags = policy::explicit_flags(runtime, container);
    let longest_boot = audit::longest_boot_seconds(pods, &container.name);
    let probe_window = container
        .startup_probe
        .as_ref()
        .map(|p| ("the startupProbe's window", p))
        .or_else(|| {
            container
                .liveness_probe
                .as_ref()
                .filter(|p| p.initial_delay_seconds.unwrap_or(0) > 0)
                .map(|p| ("the livenessProbe's window", p))
        })
        .map(|(from, p)| sourced(ProbeTiming::of(p, Source::Template).window_seconds(), from));
    let boot_timeout = match (probe_window, longest_boot) {
        (Some(window), Some(boot)) if boot > window.value => sourced(
            boot,
            "the longest boot its pods took, longer than its probes allow",
        ),
        (Some(window), _) => window,
        (None, Some(boot)) if boot > 60 => sourced(boot, "the longest boot its pods took"),
        _ => sourced(60, "default"),
    };
    let boot_timeout = Sourced {
        value: boot_timeout.value.clamp(1, MAX_SECONDS),
        ..boot_timeout
    };
    let max_concurrent = match spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_surge.as_ref())
    {
        Some(IntOrString::Int(n)) if *n >= 1 => sourced(*n, "the rollout's maxSurge"),
        Some(IntOrString::String(percent)) => {
            sourced(2, format!("default (the rollout's maxSurge was {percent})"))
        }
        _ => sourced(2, "default"),
    };
    let request_timeout = match runtime {
        Runtime::Gunicorn => match flags.worker_timeout.filter(|t| *t > 0) {
            Some(t) => sourced(t, "gunicorn --timeout"),
            None => sourced(30, "gunicorn's default --timeout"),
        },
        Runtime::Celery => match celery::whole(celery::worker_options(container).time_limit) {
            Some(t) if t >= 1 => sourced(t, "celery --time-limit"),
            _ => sourced(30, "default"),
        },
        _ => sourced(30, "default"),
    };
    let hook = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref());
    let drain = match (runtime, hook.and_then(policy::hook_seconds)) {
        (_, Some(seconds)) => sourced(seconds, "the preStop hook"),
        (Runtime::Celery, None) => sourced(0, "celery has no endpoints to leave"),
        (_, None) => sourced(5, "default: endpoints stop routing before SIGTERM"),
    };
    let graceful_timeout = match (runtime, flags.graceful_timeout) {
        (Runtime::Gunicorn, Some(t)) => sourced(t, "gunicorn --graceful-timeout"),
        (Runtime::Uvicorn, Some(t)) => sourced(t, "uvicorn --timeout-graceful-shutdown"),
        _ => {
            let grace = pod_spec
                .termination_grace_period_seconds
                .unwrap_or(audit::KUBELET_DEFAULT_GRACE_SECONDS);
            let left = grace - drain.value - policy::GRACE_MARGIN_SECONDS;
            if left >= 1 && left != 30 {
                sourced(
                    left,
                    "what the grace period leaves after the drain and margin",
                )
            } else {
                sourced(30, "default")
            }
        }
    };
    let (health, health_from) = health_of(container);

    // The template, without what the operator derives.
    let mut template = spec.template.clone();
    if let Some(meta) = template.metadata.as_mut() {
        meta.creation_timestamp = None;
        if let Some(labels) = meta.labels.as_mut() {
            labels.remove(crate::api::REVISION_LABEL);
        }
    }
    if let Some(pod) = template.spec.as_mut() {
        drop_server_defaults(pod);
        pod.termination_grace_period_seconds = None;
        if let Some(app) = pod.containers.iter_mut().find(|c| c.name == container.name) {
            app.startup_probe = None;
            app.liveness_probe = None;
            app.readiness_probe = None;
            if let Some(lifecycle) = app.lifecycle.as_mut() {
                lifecycle.pre_stop = None;
                if lifecycle.post_start.is_none() && lifecycle.stop_signal.is_none() {
                    app.lifecycle = None;
                }
            }
        }
    }

    let mut pool_spec = WorkerPoolSpec {
        replicas: spec.replicas.unwrap_or(1),
        runtime,
        container: (Some(container.name.as_str()) != first).then(|| container.name.clone()),
        template,
        health,
        policy: Default::default(),
    };
    let p = &mut pool_spec.policy;
    p.boot.timeout_seconds = boot_timeout.value;
    p.boot.max_concurrent = max_concurrent.value;
    p.requests.timeout_seconds = request_timeout.value;
    p.shutdown.drain_seconds = drain.value;
    p.shutdown.graceful_timeout_seconds = graceful_timeout.value;

    let valid = policy::validate(&pool_spec).map_err(|e| ConvertError::Invalid(e.to_string()))?;
    let settings = policy::settle(&valid);
    let mut changes = changes(deployment, container, &settings.effective);
    if !settings.gunicorn_args.is_empty() {
        changes.push(format!(
            "GUNICORN_CMD_ARGS: {} (flags on the command line still win)",
            settings.gunicorn_args.join(" ")
        ));
    }
    for (name, value) in &settings.app_env {
        changes.push(format!("{name}: {value}"));
    }
    let conflicts = settings.conflicts.iter().map(ToString::to_string).collect();

    let mut pool = WorkerPool::new(&name, pool_spec);
    pool.metadata.namespace = deployment.metadata.namespace.clone();
    Ok(Converted {
        pool,
        boot_timeout,
        max_concurrent,
        request_timeout,
        drain,
        graceful_timeout,
        health_from,
        changes,
        conflicts,
    })
}

/// Leaves out the values the API server filled in because the Deployment did not set them: it
/// fills them in again for the pool, and the printed pool shows what the user wrote.
fn drop_server_defaults(pod: &mut k8s_openapi::api::core::v1::PodSpec) {
    let clear = |field: &mut Option<String>, default: &str| {
        if field.as_deref() == Some(default) {
            *field = None;
        }
    };
    clear(&mut pod.dns_policy, "ClusterFirst");
    clear(&mut pod.restart_policy, "Always");
    clear(&mut pod.scheduler_name, "default-scheduler");
    if pod
        .security_context
        .as_ref()
        .is_some_and(|c| *c == Default::default())
    {
        pod.security_context = None;
    }
    for container in pod
        .containers
        .iter_mut()
        .chain(pod.init_containers.iter_mut().flatten())
    {
        clear(
            &mut container.termination_message_path,
            "/dev/termination-log",
        );
        clear(&mut container.termination_message_policy, "File");
        // `Always` for an image without a tag or tagged `latest`, else `IfNotPresent`.
        let image = container.image.as_deref().unwrap_or_default();
        let tag = image
            .rsplit('/')
            .next()
            .and_then(|last| last.split_once(':'))
            .map(|(_, tag)| tag);
        let pull_default = match tag {
            None | Some("latest") if !image.contains('@') => "Always",
            _ => "IfNotPresent",
        };
        clear(&mut container.image_pull_policy, pull_default);
        for port in container.ports.iter_mut().flatten() {
            clear(&mut port.protocol, "TCP");
        }
    }
}

/// Each derived value that differs from the Deployment's.
fn changes(
    deployment: &Deployment,
    container: &Container,
    after: &EffectiveSettings,
) -> Vec<String> {
    let mut out = Vec::new();
    let pod = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref());
    let grace = pod
        .and_then(|p| p.termination_grace_period_seconds)
        .unwrap_or(audit::KUBELET_DEFAULT_GRACE_SECONDS);
    if grace != after.termination_grace_period_seconds {
        out.push(format!(
            "terminationGracePeriodSeconds: {grace} → {}",
            after.termination_grace_period_seconds
        ));
    }
    let hook = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref());
    let before_hook = match hook {
        Some(h) => policy::hook_seconds(h).map_or("a hook".into(), |s| format!("sleep {s}s")),
        None => "none".into(),
    };
    let after_hook = match after.pre_stop_sleep_seconds {
        Some(s) if s > 0 => format!("sleep {s}s"),
        _ => "none".into(),
    };
    if before_hook != after_hook {
        out.push(format!("preStop: {before_hook} → {after_hook}"));
    }
    out.extend(probe_change(
        "startupProbe",
        container.startup_probe.as_ref(),
        after.startup_probe.as_ref(),
    ));
    out.extend(probe_change(
        "readinessProbe",
        container.readiness_probe.as_ref(),
        after.readiness_probe.as_ref(),
    ));
    out.extend(probe_change(
        "livenessProbe",
        container.liveness_probe.as_ref(),
        after.liveness_probe.as_ref(),
    ));
    let rolling = deployment
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let text = |v: Option<&IntOrString>| match v {
        Some(IntOrString::Int(n)) => n.to_string(),
        Some(IntOrString::String(s)) => s.clone(),
        None => "25%".into(),
    };
    let before = format!(
        "maxSurge {}, maxUnavailable {}",
        text(rolling.and_then(|r| r.max_surge.as_ref())),
        text(rolling.and_then(|r| r.max_unavailable.as_ref()))
    );
    let now = format!(
        "maxSurge {}, maxUnavailable {}",
        after.max_surge, after.max_unavailable
    );
    if before != now {
        out.push(format!("rollout: {before} → {now}"));
    }
    out
}

/// Indents every line of `text` by `spaces`.
fn indent(text: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// The pool as YAML, each policy value with where it came from, the changes in a comment above.
pub fn to_yaml(converted: &Converted, from: &str) -> Result<String, serde_json::Error> {
    let pool = &converted.pool;
    let spec = &pool.spec;
    let mut out =
        format!("# A WorkerPool that replaces {from}, written by kubectl workerpool convert.\n");
    if converted.changes.is_empty() {
        out.push_str("# The operator derives the same numbers the Deployment has.\n");
    } else {
        out.push_str("# What the operator derives differently from the Deployment:\n");
        for change in &converted.changes {
            out.push_str(&format!("#   {change}\n"));
        }
    }
    out.push_str(&format!(
        "#   the first apply starts {} pod(s) and adds more as they become Ready\n",
        policy::first_apply_replicas(spec)
    ));
    for conflict in &converted.conflicts {
        out.push_str(&format!(
            "# Kept from the template, and still reported: {conflict}\n"
        ));
    }
    out.push_str("apiVersion: workerpool.dev/v1alpha1\nkind: WorkerPool\nmetadata:\n");
    out.push_str(&format!(
        "  name: {}\n",
        yaml::scalar(pool.metadata.name.as_deref().unwrap_or_default())
    ));
    if let Some(namespace) = &pool.metadata.namespace {
        out.push_str(&format!("  namespace: {}\n", yaml::scalar(namespace)));
    }
    out.push_str("spec:\n");
    out.push_str(&format!("  replicas: {}\n", spec.replicas));
    out.push_str(&format!("  runtime: {}\n", spec.runtime.as_str()));
    if let Some(container) = &spec.container {
        out.push_str(&format!("  container: {}\n", yaml::scalar(container)));
    }
    out.push_str(&format!("  health:  # {}\n", converted.health_from));
    out.push_str(&indent(&yaml::to_string(&spec.health)?, 4));
    let line = |name: &str, value: String, from: &str| format!("      {name}: {value}  # {from}\n");
    out.push_str("  policy:\n    boot:\n");
    out.push_str(&line(
        "timeoutSeconds",
        converted.boot_timeout.value.to_string(),
        &converted.boot_timeout.from,
    ));
    out.push_str(&line(
        "maxConcurrent",
        converted.max_concurrent.value.to_string(),
        &converted.max_concurrent.from,
    ));
    out.push_str("    requests:\n");
    out.push_str(&line(
        "timeoutSeconds",
        converted.request_timeout.value.to_string(),
        &converted.request_timeout.from,
    ));
    out.push_str("    shutdown:\n");
    out.push_str(&line(
        "drainSeconds",
        converted.drain.value.to_string(),
        &converted.drain.from,
    ));
    out.push_str(&line(
        "gracefulTimeoutSeconds",
        converted.graceful_timeout.value.to_string(),
        &converted.graceful_timeout.from,
    ));
    out.push_str("  template:  # the Deployment's, without the probes, grace period and preStop hook the operator derives\n");
    out.push_str(&indent(&yaml::to_string(&spec.template)?, 4));
    Ok(out)
}
