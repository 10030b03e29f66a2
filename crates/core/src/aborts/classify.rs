//! Classifies why a worker container aborted, from what the kubelet writes: container states,
//! pod status and conditions, and the kubelet's `Killing` / `Unhealthy` / `BackOff` Events. Pure.

use jiff::SignedDuration;
use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

use crate::aborts::podview::{ContainerView, PodView, State, Termination};
use crate::api::Runtime;

pub use crate::api::Reason;

/// One classified abort of one container (or of the pod, for eviction and scheduling).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Abort {
    pub pod: String,
    pub container: Option<String>,
    pub reason: Reason,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    pub restart_count: Option<i32>,
    pub message: Option<String>,
    /// When the container last terminated, if it did.
    #[serde(skip)]
    pub finished_at: Option<jiff::Timestamp>,
    /// A boot failure known only from the run ending inside its boot window: no app-server
    /// exit code says more, so neither the settle time nor gunicorn's advice applies as to exit 3.
    #[serde(skip)]
    pub by_boot_window: bool,
    /// The Job whose run ended: a plain program run to completion.
    #[serde(skip)]
    pub job: Option<String>,
}

/// A kubelet Event about a pod, reduced to what classification needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeletEvent {
    pub pod: String,
    /// From the Event's `fieldPath` (`spec.containers{app}`), when it names one.
    pub container: Option<String>,
    pub reason: String,
    pub message: String,
    /// When the kubelet first and last reported it (a series spans several occurrences).
    pub seen: Option<(jiff::Timestamp, jiff::Timestamp)>,
}

/// The kubelet prefixes an Event it aggregated from similar ones with this.
const COMBINED: &str = "(combined from similar events): ";

/// Event times have whole seconds; the kubelet reports a kill just before the exit it causes.
const EVENT_SLACK: SignedDuration = SignedDuration::from_secs(2);

impl KubeletEvent {
    /// The Event could be about a run between `started` and `finished`: its times overlap the
    /// run's, or either is unknown. A probe kill of an earlier run explains no later exit.
    pub fn during(
        &self,
        started: Option<jiff::Timestamp>,
        finished: Option<jiff::Timestamp>,
    ) -> bool {
        let Some((first, last)) = self.seen else {
            return true;
        };
        let begun_after = finished.is_some_and(|f| first > f + EVENT_SLACK);
        let over_before = started.is_some_and(|s| last < s - EVENT_SLACK);
        !begun_after && !over_before
    }

    /// The message without the kubelet's aggregation prefix.
    pub fn text(&self) -> &str {
        self.message.strip_prefix(COMBINED).unwrap_or(&self.message)
    }

    /// The container a `fieldPath` such as `spec.containers{app}` or
    /// `spec.initContainers{migrate}` names.
    pub fn container_from_field_path(field_path: &str) -> Option<String> {
        let inner = field_path
            .strip_prefix("spec.containers{")
            .or_else(|| field_path.strip_prefix("spec.initContainers{"))?
            .strip_suffix('}')?;
        Some(inner.to_string())
    }
}

/// Name of the signal behind an exit code above 128.
pub fn signal_name(exit_code: i32) -> Option<String> {
    let n = exit_code
        .checked_sub(128)
        .filter(|n| (1..=64).contains(n))?;
    let name = match n {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return Some(format!("signal {n}")),
    };
    Some(name.to_string())
}

/// The kubelet's Events about this container during this run.
fn about_run<'a>(
    events: &'a [KubeletEvent],
    pod: &'a str,
    container: &'a str,
    run: &'a Termination,
) -> impl DoubleEndedIterator<Item = &'a KubeletEvent> {
    events.iter().filter(move |e| {
        e.pod == pod
            && e.container.as_deref().is_none_or(|c| c == container)
            && e.during(run.started_at, run.finished_at)
    })
}

fn killed_by_probe(
    events: &[KubeletEvent],
    pod: &str,
    container: &str,
    run: &Termination,
    probe: &str,
) -> bool {
    let needle = format!("failed {probe} probe");
    about_run(events, pod, container, run)
        .any(|e| e.reason == "Killing" && e.text().contains(&needle))
}

/// The kubelet's last "<Probe> probe failed: …" message for this container.
fn probe_failure(
    events: &[KubeletEvent],
    pod: &str,
    container: &str,
    run: &Termination,
    probe: &str,
) -> Option<String> {
    let prefix = format!("{probe} probe failed");
    about_run(events, pod, container, run)
        .rev()
        .find(|e| e.reason == "Unhealthy" && e.text().starts_with(&prefix))
        .map(|e| e.text().to_string())
}

fn waiting_abort(pod: &str, container: &ContainerView) -> Option<Abort> {
    let State::Waiting { reason, message } = &container.state else {
        return None;
    };
    let reason = match reason.as_deref()? {
        "CrashLoopBackOff" => Reason::CrashLoop,
        "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" => Reason::ImagePullFailed,
        "CreateContainerConfigError" | "CreateContainerError" => Reason::ConfigError,
        _ => return None,
    };
    Some(Abort {
        pod: pod.to_string(),
        container: Some(container.name.clone()),
        reason,
        exit_code: None,
        signal: None,
        restart_count: Some(container.restart_count),
        message: message.clone(),
        // A crash loop began when the container last exited.
        finished_at: container
            .last_terminated
            .as_ref()
            .and_then(|t| t.finished_at),
        by_boot_window: false,
        job: None,
    })
}

/// The termination before the last restart and the current one, when the container has not been
/// restarted since (each run is told apart by its restart count).
fn termination_aborts(
    runtime: Runtime,
    pod: &PodView,
    container: &ContainerView,
    events: &[KubeletEvent],
    boot_window: Option<SignedDuration>,
) -> Vec<Abort> {
    let run = |terminated, restart_count, current| Run {
        terminated,
        restart_count,
        current,
        boot_window,
    };
    let previous = container.last_terminated.as_ref().and_then(|t| {
        let index = container.restart_count.saturating_sub(1).max(0);
        termination_abort(runtime, pod, container, events, run(t, index, false))
    });
    let current = match &container.state {
        State::Terminated(t) => termination_abort(
            runtime,
            pod,
            container,
            events,
            run(t, container.restart_count, true),
        ),
        _ => None,
    };
    previous.into_iter().chain(current).collect()
}

/// One run of a container that ended.
struct Run<'a> {
    terminated: &'a Termination,
    /// Which run it was: the container's restart count when it ended.
    restart_count: i32,
    /// It ended last and the container was not restarted since.
    current: bool,
    boot_window: Option<SignedDuration>,
}

impl Run<'_> {
    /// How long the run lasted, when it ended inside its boot window.
    fn ended_booting(&self) -> Option<SignedDuration> {
        let t = self.terminated;
        let lasted = t.finished_at?.duration_since(t.started_at?);
        (lasted < self.boot_window?).then_some(lasted)
    }
}

fn termination_abort(
    runtime: Runtime,
    pod: &PodView,
    container: &ContainerView,
    events: &[KubeletEvent],
    run: Run<'_>,
) -> Option<Abort> {
    let Run {
        terminated,
        restart_count,
        current,
        ..
    } = run;
    let code = terminated.exit_code;
    // The run that ends because its pod is being deleted: SIGTERM answered with 0 or 143 is a
    // shutdown, not an abort, also when the kubelet calls it OOMKilled (the cgroup's OOM counter
    // counts the whole life of the pod, kubernetes/kubernetes#140716).
    let shutting_down = current && pod.deleting;
    if shutting_down && matches!(code, 0 | 143) {
        return None;
    }
    // The run an eviction ended is the eviction, counted once on the pod.
    let evicted = current && pod.reason.as_deref() == Some("Evicted");
    if evicted && terminated.reason.as_deref() != Some("OOMKilled") {
        return None;
    }
    let app_server = matches!(runtime, Runtime::Gunicorn | Runtime::Uvicorn);
    let probe_kill = |probe: &str| {
        killed_by_probe(
            events,
            &pod.name,
            &container.name,
            terminated,
            &probe.to_lowercase(),
        )
        .then(|| probe_failure(events, &pod.name, &container.name, terminated, probe))
    };
    let mut evidence = None;
    let mut by_boot_window = false;
    // The app server's own boot-failure codes come first: a probe kill ends in SIGTERM, which
    // gunicorn and uvicorn answer with 0 (or 143, or 137 after the grace period), never 3 or 4.
    let reason = if terminated.reason.as_deref() == Some("OOMKilled") {
        Reason::OOMKilled
    } else if app_server && code == 3 {
        Reason::BootFailed
    } else if runtime == Runtime::Gunicorn && code == 4 {
        Reason::AppLoadFailed
    } else if let Some(failure) = probe_kill("Startup") {
        evidence = failure;
        Reason::StartupTimeout
    } else if let Some(failure) = probe_kill("Liveness") {
        evidence = failure;
        Reason::LivenessTimeout
    } else if code == 137 && shutting_down {
        Reason::GracePeriodExceeded
    } else if (129..=192).contains(&code) {
        // 128 + a signal number (1–64); a code above that is the program's own.
        Reason::Signaled
    } else if let Some(lasted) = run.ended_booting() {
        // uvicorn's exit 1 on an import error, celery's, any worker's: it never finished booting.
        evidence = Some(format!(
            "exited {code} {}s after it started, inside its {}s boot window",
            lasted.as_secs(),
            run.boot_window.map_or(0, |w| w.as_secs())
        ));
        by_boot_window = true;
        Reason::BootFailed
    } else {
        Reason::UnexpectedExit
    };
    Some(Abort {
        pod: pod.name.to_string(),
        container: Some(container.name.clone()),
        reason,
        exit_code: Some(code),
        signal: signal_name(code),
        restart_count: Some(restart_count),
        message: evidence
            .or_else(|| terminated.message.clone())
            .or_else(|| terminated.reason.clone()),
        finished_at: terminated.finished_at,
        by_boot_window,
        job: None,
    })
}

/// Every abort visible on a pod: pod-level ones first, then those of its init containers, then
/// those of its containers, each in status order. A container's boot window is its own startup
/// probe's, read from the pod, so every reader of one exit gives it one verdict.
pub fn classify(runtime: Runtime, pod: &PodView, events: &[KubeletEvent]) -> Vec<Abort> {
    let mut aborts = Vec::new();
    if pod.reason.as_deref() == Some("Evicted") {
        aborts.push(Abort {
            pod: pod.name.to_string(),
            container: None,
            reason: Reason::Evicted,
            exit_code: None,
            signal: None,
            restart_count: None,
            message: pod.message.clone(),
            finished_at: None,
            by_boot_window: false,
            job: None,
        });
    }
    if let Some(unschedulable) = &pod.unschedulable {
        aborts.push(Abort {
            pod: pod.name.to_string(),
            container: None,
            reason: Reason::Unschedulable,
            exit_code: None,
            signal: None,
            restart_count: None,
            message: unschedulable.message.clone(),
            finished_at: None,
            by_boot_window: false,
            job: None,
        });
    }
    // Init containers run before the app server: plain programs (migrations, fetches), whose
    // exit 0 is their job done.
    for container in &pod.init_containers {
        aborts.extend(
            termination_aborts(Runtime::Generic, pod, container, events, None)
                .into_iter()
                .filter(|abort| abort.exit_code != Some(0)),
        );
        aborts.extend(waiting_abort(&pod.name, container));
    }
    for container in &pod.containers {
        if let Some(job) = &pod.job {
            // A Job's pod (the pool's init Job among them) runs to completion: its exit 0 is the
            // job done, any other exit that run's failure.
            aborts.extend(
                termination_aborts(Runtime::Generic, pod, container, events, None)
                    .into_iter()
                    .filter(|abort| abort.exit_code != Some(0))
                    .map(|mut abort| {
                        let what = abort.message.take().unwrap_or_default();
                        abort.message = Some(format!("a run of Job {job} failed: {what}"));
                        abort.job = Some(job.to_string());
                        abort
                    }),
            );
        } else {
            let window = container.boot_window;
            aborts.extend(termination_aborts(runtime, pod, container, events, window));
        }
        aborts.extend(waiting_abort(&pod.name, container));
    }
    aborts
}

/// [`classify`] for a whole `Pod`, as `kubectl get pod -o json` prints it.
pub fn classify_pod(runtime: Runtime, pod: &Pod, events: &[KubeletEvent]) -> Vec<Abort> {
    classify(runtime, &PodView::from(pod), events)
}
