//! `kubectl workerpool audit`: the derivation rules a Deployment no pool manages breaks, each with
//! the Deployment's own numbers and the value that fixes it.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use serde::Serialize;

use super::workload::{self, AppServer};
use crate::api::{ProbeTiming, Runtime, Source};
use crate::pool::{celery, policy};

/// The kubelet's grace period when a pod sets none.
pub const KUBELET_DEFAULT_GRACE_SECONDS: i64 = 30;
/// gunicorn's `--graceful-timeout` when nothing sets one.
pub const GUNICORN_DEFAULT_GRACEFUL_SECONDS: i64 = 30;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Audit {
    pub namespace: String,
    pub name: String,
    pub runtime: String,
    pub container: String,
    /// The longest a pod took from its app container's start to Ready, among the pods read.
    pub longest_boot_seconds: Option<i64>,
    pub findings: Vec<Finding>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// A stable name for the rule, for scripts.
    pub rule: &'static str,
    pub message: String,
    pub fix: String,
}

/// The audit of one Deployment; None when no pool should judge it: a WorkerPool owns it, or
/// none of its containers runs gunicorn, uvicorn or a celery worker (and `forced` names no
/// runtime).
pub fn audit(deployment: &Deployment, pods: &[Pod], forced: Option<Runtime>) -> Option<Audit> {
    if workload::owned_by_pool(deployment) {
        return None;
    }
    let pod_spec = deployment.spec.as_ref()?.template.spec.as_ref()?;
    let app = workload::app_server(pod_spec, forced)?;
    let longest_boot = longest_boot_seconds(pods, &app.container.name);
    Some(Audit {
        namespace: deployment.metadata.namespace.clone().unwrap_or_default(),
        name: deployment.metadata.name.clone().unwrap_or_default(),
        runtime: app.runtime.as_str().to_string(),
        container: app.container.name.clone(),
        longest_boot_seconds: longest_boot,
        findings: findings(pod_spec, app, longest_boot),
    })
}

/// Seconds from the app container's start to the pod's Ready, the longest among `pods` that
/// became Ready in their container's current run.
pub fn longest_boot_seconds(pods: &[Pod], container: &str) -> Option<i64> {
    pods.iter()
        .filter_map(|pod| {
            let status = pod.status.as_ref()?;
            let started = status
                .container_statuses
                .as_deref()?
                .iter()
                .find(|c| c.name == container)?
                .state
                .as_ref()?
                .running
                .as_ref()?
                .started_at
                .as_ref()?
                .0;
            let ready: Timestamp = status
                .conditions
                .as_deref()?
                .iter()
                .find(|c| c.type_ == "Ready" && c.status == "True")?
                .last_transition_time
                .as_ref()?
                .0;
            (ready >= started).then(|| ready.duration_since(started).as_secs())
        })
        .max()
}

/// Every rule the template breaks, in the order a shutdown, a boot and a request meet them.
pub fn findings(pod: &PodSpec, app: AppServer<'_>, longest_boot: Option<i64>) -> Vec<Finding> {
    let container = app.container;
    let mut out = Vec::new();
    out.extend(grace_period(pod, app));
    if let Some(boot) = longest_boot {
        out.extend(startup_window(container, boot));
    }
    if app.runtime == Runtime::Gunicorn {
        let flags = policy::explicit_flags(Runtime::Gunicorn, container);
        let timeout = flags
            .worker_timeout
            .unwrap_or(policy::GUNICORN_DEFAULT_TIMEOUT_SECONDS);
        if let (Some(boot), false, true) = (longest_boot, flags.preload, timeout > 0)
            && timeout < boot
        {
            out.push(Finding {
                rule: "gunicorn-timeout-boot",
                message: format!(
                    "gunicorn --timeout {timeout} is shorter than the longest boot its pods took ({boot}s) without --preload: each worker imports the app under the timeout, and gunicorn kills the ones that import too slowly"
                ),
                fix: format!("--preload, or --timeout {boot} or more"),
            });
        }
        out.extend(liveness_before_timeout(container, timeout));
        out.extend(heartbeat_on_disk(
            pod,
            container,
            flags.worker_tmp_dir.as_deref(),
        ));
    }
    if app.runtime == Runtime::Celery {
        let options = celery::worker_options(container);
        if options.forks()
            && options.concurrency.is_none()
            && celery::concurrency_for(container).is_none()
        {
            out.push(Finding {
                rule: "celery-node-cpus",
                message: "celery starts one pool child per CPU of the node (no --concurrency, no CPU limit or request): on a large node a small container forks dozens of children".into(),
                fix: "--concurrency N, or a CPU limit (a pool derives one child per whole CPU)".into(),
            });
        }
    }
    if policy::memory_limit(container).is_none() {
        out.push(Finding {
            rule: "no-memory-limit",
            message: format!(
                "container {} has no memory limit: a leaking worker takes the node's memory, and the kernel, not the pod, decides who dies",
                container.name
            ),
            fix: "resources.limits.memory".into(),
        });
    }
    out
}

/// What the app server waits for on SIGTERM, and what it is called: None when it waits with no
/// limit at all.
fn graceful_wait(app: AppServer<'_>) -> (Option<i64>, String) {
    let container = app.container;
    match app.runtime {
        Runtime::Gunicorn => {
            match policy::explicit_flags(Runtime::Gunicorn, container).graceful_timeout {
                Some(set) => (Some(set), format!("gunicorn --graceful-timeout {set}s")),
                None => (
                    Some(GUNICORN_DEFAULT_GRACEFUL_SECONDS),
                    format!(
                        "gunicorn's default --graceful-timeout {GUNICORN_DEFAULT_GRACEFUL_SECONDS}s"
                    ),
                ),
            }
        }
        Runtime::Uvicorn => {
            match policy::explicit_flags(Runtime::Uvicorn, container).graceful_timeout {
                Some(set) => (
                    Some(set),
                    format!("uvicorn --timeout-graceful-shutdown {set}s"),
                ),
                None => (
                    None,
                    "uvicorn, which waits for open connections with no limit (no --timeout-graceful-shutdown)".into(),
                ),
            }
        }
        Runtime::Celery => match celery::whole(celery::worker_options(container).time_limit) {
            Some(limit) => (
                Some(limit),
                format!("celery's warm shutdown, which waits for running tasks up to --time-limit {limit}s"),
            ),
            None => (
                None,
                "celery's warm shutdown, which waits for running tasks with no limit (no --time-limit)".into(),
            ),
        },
        Runtime::Generic => (None, String::new()),
    }
}

fn grace_period(pod: &PodSpec, app: AppServer<'_>) -> Option<Finding> {
    let grace = pod
        .termination_grace_period_seconds
        .unwrap_or(KUBELET_DEFAULT_GRACE_SECONDS);
    let hook = app
        .container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref());
    let pre_stop = hook.and_then(policy::hook_seconds).unwrap_or(0);
    let pre_stop_name = match hook {
        Some(_) => format!("the preStop hook's {pre_stop}s"),
        None => "no preStop hook (0s)".into(),
    };
    let (wait, wait_name) = graceful_wait(app);
    match wait {
        Some(wait) if grace < pre_stop + wait => Some(Finding {
            rule: "grace-period",
            message: format!(
                "terminationGracePeriodSeconds {grace} is shorter than {pre_stop_name} + {wait_name} = {}s: the kubelet SIGKILLs workers mid-shutdown",
                pre_stop + wait
            ),
            fix: format!(
                "terminationGracePeriodSeconds: {}",
                pre_stop + wait + policy::GRACE_MARGIN_SECONDS
            ),
        }),
        None if app.runtime != Runtime::Generic => Some(Finding {
            rule: "grace-period",
            message: format!(
                "{wait_name}: whatever is still running when terminationGracePeriodSeconds {grace} ends is SIGKILLed"
            ),
            fix: match app.runtime {
                Runtime::Celery => format!(
                    "--time-limit no longer than {}",
                    (grace - pre_stop - policy::GRACE_MARGIN_SECONDS).max(1)
                ),
                _ => format!(
                    "--timeout-graceful-shutdown {}",
                    (grace - pre_stop - policy::GRACE_MARGIN_SECONDS).max(1)
                ),
            },
        }),
        _ => None,
    }
}

/// The window a boot gets before the kubelet kills it: the startup probe's, else the liveness
/// probe's (which then runs from the start).
fn startup_window(container: &Container, boot: i64) -> Option<Finding> {
    let (name, probe) = match (&container.startup_probe, &container.liveness_probe) {
        (Some(probe), _) => ("startupProbe", probe),
        (None, Some(probe)) => ("livenessProbe (there is no startupProbe)", probe),
        (None, None) => return None,
    };
    let window = ProbeTiming::of(probe, Source::Template).window_seconds();
    (window < boot).then(|| {
        let derived = policy::startup_timing(boot);
        Finding {
            rule: "startup-window",
            message: format!(
                "{name} allows {window}s (initialDelay + period × failureThreshold), shorter than the longest boot its pods took ({boot}s): a slower boot is killed before it ends"
            ),
            fix: format!(
                "a startupProbe with periodSeconds {} and failureThreshold {}",
                derived.period_seconds, derived.failure_threshold
            ),
        }
    })
}

fn liveness_before_timeout(container: &Container, app_timeout: i64) -> Option<Finding> {
    let probe = container.liveness_probe.as_ref()?;
    if app_timeout <= 0 {
        return None;
    }
    let timing = ProbeTiming::of(probe, Source::Template);
    let reach = i64::from(timing.period_seconds) * i64::from(timing.failure_threshold)
        + i64::from(timing.timeout_seconds);
    (reach <= app_timeout).then(|| {
        let derived = policy::liveness_timing(app_timeout);
        Finding {
            rule: "liveness-before-timeout",
            message: format!(
                "livenessProbe fires after {reach}s (period × failureThreshold + timeout), not after gunicorn's --timeout {app_timeout}s: one slow request restarts the whole container"
            ),
            fix: format!(
                "livenessProbe periodSeconds {}, failureThreshold {}, timeoutSeconds {}",
                derived.period_seconds, derived.failure_threshold, derived.timeout_seconds
            ),
        }
    })
}

/// gunicorn's workers touch a file in `--worker-tmp-dir` as their heartbeat; on a disk-backed
/// filesystem the write can block long enough for a false WORKER TIMEOUT.
fn heartbeat_on_disk(pod: &PodSpec, container: &Container, dir: Option<&str>) -> Option<Finding> {
    let in_memory = |dir: &str| {
        dir == policy::WORKER_TMP_DIR
            || dir.starts_with("/dev/shm/")
            || container.volume_mounts.iter().flatten().any(|m| {
                dir.starts_with(m.mount_path.trim_end_matches('/'))
                    && pod.volumes.iter().flatten().any(|v| {
                        v.name == m.name
                            && v.empty_dir
                                .as_ref()
                                .is_some_and(|e| e.medium.as_deref() == Some("Memory"))
                    })
            })
    };
    if dir.is_some_and(in_memory) {
        return None;
    }
    Some(Finding {
        rule: "heartbeat-on-disk",
        message: match dir {
            Some(dir) => format!(
                "gunicorn's workers heartbeat through a file in --worker-tmp-dir {dir}, which is not in memory: a slow disk makes false WORKER TIMEOUTs"
            ),
            None => "gunicorn's workers heartbeat through a file in the default temp dir, on the container's disk: a slow disk makes false WORKER TIMEOUTs, and a read-only root filesystem has none".into(),
        },
        fix: format!("--worker-tmp-dir {}", policy::WORKER_TMP_DIR),
    })
}
