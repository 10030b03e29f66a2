//! Turns a pool's pods, the kubelet Events about them and sampled log tails into aborts for the
//! ledger, each with a stable identity. Pure: the controller supplies the pods, Events, logs and
//! the time.

use jiff::{SignedDuration, Timestamp};

use crate::aborts::classify::{self, Abort, KubeletEvent, Reason};
use crate::aborts::ledger::{self, Identity, Observed};
use crate::aborts::loghints::{self, LogFindings};
use crate::aborts::podview::{ContainerView, PodView, State};
use crate::api::{AbortRecord, AbortSummary, Runtime, Window};

/// A termination younger than this may still be waiting for the kubelet's `Killing` Event that
/// tells a probe kill from a plain exit, so it is classified a little later.
pub const SETTLE: SignedDuration = SignedDuration::from_secs(5);

/// How often the log of one unhealthy pod is sampled.
pub const SAMPLE_INTERVAL: SignedDuration = SignedDuration::from_secs(30);

/// Where the log that explains an abort is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogTail {
    pub pod: String,
    pub container: String,
    /// The log of the run that ended (`previous=true`) rather than the current one.
    pub previous: bool,
}

/// An abort to record, and the log tail to read for its hint, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub observed: Observed,
    pub log: Option<LogTail>,
    /// A probe kill would explain it: the kubelet's Events about the pod could name another reason.
    pub probe_kill_possible: bool,
}

/// What the pods show now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodFindings {
    pub found: Vec<Found>,
    /// Look again after this long: a termination is still settling.
    pub settle_after: Option<SignedDuration>,
    /// `(pod, identity)` of each termination still settling: the kubelet's Events may already
    /// show it was a probe kill.
    pub settling: Vec<(String, String)>,
}

/// The sooner of two optional delays.
pub fn earliest(a: Option<SignedDuration>, b: Option<SignedDuration>) -> Option<SignedDuration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What to do about an abort, when the log says nothing more specific.
pub fn advice(reason: Reason) -> &'static str {
    match reason {
        Reason::BootFailed => {
            "the app server exited 3 because a worker failed to boot; the container log shows the import or configuration error"
        }
        Reason::AppLoadFailed => {
            "gunicorn could not load the application (exit 4); check the app module path and its imports"
        }
        Reason::OOMKilled => {
            "the container went over its memory limit; raise resources.limits.memory or run fewer workers per pod"
        }
        Reason::StartupTimeout => {
            "boot took longer than policy.boot.timeoutSeconds; raise it, or lower policy.boot.maxConcurrent if boots slow each other down"
        }
        Reason::LivenessTimeout => {
            "the health endpoint stopped answering for the whole liveness window; look for blocked or busy workers"
        }
        Reason::WorkerTimeout => {
            "a worker outlived the app server's --timeout and was killed; during boot raise policy.boot.timeoutSeconds or use preload, while serving look for slow requests"
        }
        Reason::GracePeriodExceeded => {
            "shutdown outlived terminationGracePeriodSeconds and was SIGKILLed; if PID 1 is a shell script, start the app server with exec so it receives SIGTERM"
        }
        Reason::CrashLoop => {
            "the container keeps exiting and the kubelet is backing off its restarts"
        }
        Reason::ImagePullFailed => "check the image name, the tag and imagePullSecrets",
        Reason::ConfigError => "a ConfigMap, Secret or key the container refers to is missing",
        Reason::Evicted => {
            "the node reclaimed resources; set requests that match the pod's real usage"
        }
        Reason::Unschedulable => "no node fits the pod's requests, node selector or tolerations",
        Reason::Signaled => "the process was killed by a signal Kubernetes did not send",
        Reason::UnexpectedExit => {
            "the worker process exited on its own; the container log says why"
        }
        Reason::BrokerUnreachable => {
            "the celery worker cannot reach its broker and consumes nothing; check the broker's address, credentials and network policy"
        }
    }
}

/// [`advice`] for one abort: a boot failure known from how short the run was is no exit 3.
fn advice_for(abort: &Abort) -> &'static str {
    if abort.job.is_some() {
        return "the Job's run failed; kubectl logs on the pod says why. A pool's init Job that fails keeps the old revision serving (Stalled, reason InitFailed) until the pool changes";
    }
    match abort.reason {
        Reason::BootFailed if abort.by_boot_window => {
            "the container exited before it finished booting; its previous log (kubectl logs --previous) shows why"
        }
        reason => advice(reason),
    }
}

/// Identity of an abort: terminations by restart count, so each run is counted once; waiting
/// states and pod-level aborts once per pod (a crash loop is one `CrashLoop`, plus each exit).
pub fn identity(pod_uid: &str, abort: &Abort) -> Identity {
    match (&abort.container, abort.exit_code) {
        (Some(container), Some(_)) => {
            Identity::run(pod_uid, container, abort.restart_count.unwrap_or(0))
        }
        (container, _) => Identity::state(pod_uid, container.as_deref(), abort.reason.as_str()),
    }
}

fn record(abort: &Abort, at: Timestamp, hint: Option<String>) -> AbortRecord {
    AbortRecord {
        pod: abort.pod.clone(),
        container: abort.container.clone().unwrap_or_default(),
        reason: abort.reason.to_string(),
        exit_code: abort.exit_code,
        signal: abort.signal.clone(),
        restart_count: abort.restart_count.unwrap_or(0),
        time: Some(at.to_string()),
        message: abort.message.clone(),
        hint: Some(hint.unwrap_or_else(|| advice_for(abort).to_string())),
        inferred: false,
    }
}

/// Probe kills are known only from the Event; OOM kills and the app server's boot-failure exits
/// are certain from the status alone (no Event changes them, and a crash loop may replace the
/// termination before it would settle), and so is a SIGKILL at the end of a pod's grace period,
/// which must be counted before the kubelet removes the pod a moment later. A probe kill ends in
/// SIGTERM and then SIGKILL, so death by any other signal cannot be one.
fn needs_settling(abort: &Abort) -> bool {
    // A boot failure known only from how short the run was could still be a startup-probe kill.
    let certain_boot_failure = abort.reason == Reason::BootFailed && !abort.by_boot_window;
    let not_a_kubelet_signal =
        abort.reason == Reason::Signaled && !matches!(abort.exit_code, Some(137 | 143));
    !certain_boot_failure
        && !not_a_kubelet_signal
        && !matches!(
            abort.reason,
            Reason::OOMKilled
                | Reason::AppLoadFailed
                | Reason::StartupTimeout
                | Reason::LivenessTimeout
                | Reason::GracePeriodExceeded
        )
}

/// Every abort the pods show, except terminations still settling.
pub fn pod_aborts(
    runtime: Runtime,
    pods: &[&PodView],
    events: &[KubeletEvent],
    now: Timestamp,
) -> PodFindings {
    let mut findings = PodFindings::default();
    for pod in pods {
        for abort in classify::classify(runtime, pod, events) {
            let at = abort.finished_at.unwrap_or(now);
            if abort.exit_code.is_some() && needs_settling(&abort) {
                let age = now.duration_since(at);
                if age < SETTLE {
                    let wait = SETTLE - age;
                    findings.settle_after =
                        Some(findings.settle_after.map_or(wait, |w| w.min(wait)));
                    findings
                        .settling
                        .push((abort.pod.clone(), identity(&pod.uid, &abort).to_string()));
                    continue;
                }
            }
            let log = match (&abort.container, abort.exit_code) {
                (Some(container), Some(_)) => Some(LogTail {
                    pod: abort.pod.clone(),
                    container: container.clone(),
                    previous: restarted(pod, container),
                }),
                _ => None,
            };
            findings.found.push(Found {
                probe_kill_possible: abort.exit_code.is_some() && needs_settling(&abort),
                observed: Observed {
                    identity: identity(&pod.uid, &abort),
                    at,
                    revision: pod.revision.clone().map(String::from),
                    record: record(&abort, at, None),
                },
                log,
            });
        }
    }
    findings
}

/// Runs inferred at most per container and reconcile: more than a window can hold at any
/// back-off the kubelet uses, and a bound on what a hostile restart count can cost.
const MAX_INFERRED_RUNS: i32 = 256;

/// Runs that ended while no operator watched: the status shows only the last run that ended, so
/// a container restarted more often than the runs counted had others end unseen. They are
/// counted when they are known to have ended inside the window (after a run counted there, or in
/// a pod created there), each with the reason the run after them is given now (still settling,
/// it may yet turn out a probe kill: the runs before it ended too long ago to tell), and marked
/// inferred. A crash loop faster than the settle time is counted this way, one run behind.
pub fn unseen_runs(
    runtime: Runtime,
    pods: &[&PodView],
    events: &[KubeletEvent],
    old: Option<&AbortSummary>,
    now: Timestamp,
    window_seconds: i64,
) -> Vec<Observed> {
    let window = Window::new(now, window_seconds);
    let mut inferred = Vec::new();
    for pod in pods {
        let created_in_window = pod.created.is_some_and(|created| window.contains(created));
        let mut classified: Option<Vec<Abort>> = None;
        for container in &pod.containers {
            let Some(seen) = container.last_terminated.as_ref() else {
                continue;
            };
            // The run the status shows in `lastState`; every run before it ended unseen or counted.
            let shown = container.restart_count.saturating_sub(1);
            let source = ledger::container_source(&pod.uid, &container.name);
            let first = ledger::run_after_counted(old, &source, now, window_seconds)
                .or(created_in_window.then_some(0));
            let Some(first) = first.map(|f| f.max(shown.saturating_sub(MAX_INFERRED_RUNS))) else {
                continue;
            };
            if first >= shown {
                continue;
            }
            let aborts = classified.get_or_insert_with(|| classify::classify(runtime, pod, events));
            let Some(next) = aborts.iter().find(|a| {
                a.container.as_deref() == Some(container.name.as_str())
                    && a.restart_count == Some(shown)
                    && a.exit_code.is_some()
            }) else {
                continue;
            };
            // They ended before the run after them started.
            let at = seen.started_at.or(seen.finished_at).unwrap_or(now);
            let next_hint = advice_for(next).to_string();
            for run in first..shown {
                let mut record = record(next, at, None);
                record.exit_code = None;
                record.signal = None;
                record.restart_count = run;
                record.inferred = true;
                record.message = Some(format!(
                    "ended while no operator watched; the restart count shows it, and the run after it ended {}",
                    next.reason
                ));
                record.hint = Some(format!(
                    "inferred from the restart count, with the reason of the run after it: {next_hint}"
                ));
                inferred.push(Observed {
                    identity: Identity::run(&pod.uid, &container.name, run),
                    at,
                    revision: pod.revision.clone().map(String::from),
                    record,
                });
            }
        }
    }
    inferred
}

/// The termination is in `lastState` (the container was restarted), not in `state`.
fn restarted(pod: &PodView, container: &str) -> bool {
    pod.container(container)
        .is_some_and(|c| c.last_terminated.is_some())
}

/// What to do about an abort: what its log says, else the advice for its reason.
pub fn hint(abort: &Abort, log: Option<&LogFindings>, limits: &WorkerLimits) -> String {
    log.and_then(|findings| limits.log_hint(abort.reason, findings))
        .unwrap_or_else(|| advice_for(abort).to_string())
}

/// Puts what the log says in front of the generic advice.
pub fn with_log_hint(
    mut observed: Observed,
    findings: &LogFindings,
    limits: &WorkerLimits,
) -> Observed {
    let hint = match Reason::named(&observed.record.reason) {
        Some(reason) => limits.log_hint(reason, findings),
        None => loghints::hint(findings),
    };
    if let Some(hint) = hint {
        observed.record.hint = Some(hint);
    }
    observed
}

/// Containers of running pods that are booting or failing readiness: their log is the only place
/// worker timeouts and worker OOM kills show up.
pub fn unhealthy_containers(pod: &PodView) -> Vec<&ContainerView> {
    if pod.deleting || pod.phase.as_deref() != Some("Running") {
        return Vec::new();
    }
    pod.containers
        .iter()
        .filter(|c| !c.ready && c.state == State::Running)
        .collect()
}

/// A step of a pod's start that no look at its pool reads: nothing ended, failed or waits on an
/// error, no init container is reported, the pod is not shutting down and not every container
/// is ready yet. Being created, containers being created and running unready are such steps.
fn is_quiet_start(pod: &PodView) -> bool {
    let phase_starting = matches!(pod.phase.as_deref(), None | Some("Pending" | "Running"));
    let containers_starting = pod.containers.iter().all(|c| {
        c.restart_count == 0
            && c.last_terminated.is_none()
            && match &c.state {
                State::Unknown => true,
                // Its log is sampled from a known start: see `first_sample_due`.
                State::Running => c.running_since.is_some(),
                State::Waiting { reason, .. } => reason.as_deref() == Some("ContainerCreating"),
                State::Terminated(_) => false,
            }
    });
    phase_starting
        && containers_starting
        && !pod.all_containers_ready()
        && !pod.deleting
        && pod.init_containers.is_empty()
        && pod.reason.is_none()
        && pod.message.is_none()
        && pod.unschedulable.is_none()
}

/// A step of the shutdown of a pod already shutting down that no look reads: its containers only
/// stopped as a shutdown stops them (exit 0, or 143 for SIGTERM: no abort, see
/// [`classify::classify`]) or turned unready; nothing else of them or of the pod changed.
fn is_quiet_stop(old: &PodView, now: &PodView) -> bool {
    let stopped_cleanly = |before: &[ContainerView], after: &[ContainerView]| {
        after.iter().all(|c| {
            before.iter().find(|b| b.name == c.name).is_some_and(|b| {
                (c.restart_count, &c.last_terminated) == (b.restart_count, &b.last_terminated)
                    && (c.state == b.state
                        || matches!(&c.state, State::Terminated(t) if matches!(t.exit_code, 0 | 143)))
            })
        })
    };
    old.deleting
        && now.deleting
        && (&old.reason, &old.message, &old.unschedulable)
            == (&now.reason, &now.message, &now.unschedulable)
        && stopped_cleanly(&old.containers, &now.containers)
        && stopped_cleanly(&old.init_containers, &now.init_containers)
}

/// Whether a pod's move from `old` (None: it is new) to `now` changes nothing a look at its pool
/// reads at once: both are quiet steps of the same pod's start, or it is a quiet step of its
/// shutdown. A container left booting is still sampled: see [`first_sample_due`].
pub fn is_quiet_move(old: Option<&PodView>, now: &PodView) -> bool {
    let Some(old) = old else {
        return is_quiet_start(now);
    };
    // A stop signal is read once reported (the kubelet reports it as the container starts).
    let same_signal = |c: &ContainerView| {
        old.container(&c.name)
            .and_then(|o| o.stop_signal.as_deref())
            == c.stop_signal.as_deref()
    };
    let same_pod = (
        &old.uid,
        &old.pool,
        &old.revision,
        old.runtime,
        &old.job,
        old.created,
    ) == (
        &now.uid,
        &now.pool,
        &now.revision,
        now.runtime,
        &now.job,
        now.created,
    ) && now.containers.iter().all(same_signal);
    same_pod && ((is_quiet_start(old) && is_quiet_start(now)) || is_quiet_stop(old, now))
}

/// Whether a pod's removal changes nothing a look reads: it was shutting down, and a pod
/// shutting down is read only for how its containers stop, each of which was read (or quiet).
pub fn is_quiet_removal(last: &PodView) -> bool {
    last.deleting
}

/// When the first log sample of the pod's booting containers falls due (see [`SAMPLE_INTERVAL`]):
/// a look is owed then if one is still booting. None when nothing boots (a quiet start's running
/// containers all have a start time).
pub fn first_sample_due(pod: &PodView) -> Option<Timestamp> {
    unhealthy_containers(pod)
        .iter()
        .filter_map(|c| c.running_since)
        .map(|since| since + SAMPLE_INTERVAL)
        .min()
}

/// Pods still running their init containers, for the pool's status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Initializing {
    pub pods: usize,
    /// Of those, pods whose init container keeps failing or cannot start.
    pub stuck: usize,
    /// Why the first stuck pod (by name) is stuck.
    pub why: Option<String>,
}

/// Why an init container keeps its pod from starting, if it does.
fn init_stuck(pod: &PodView) -> Option<String> {
    pod.init_containers.iter().find_map(|c| {
        let waiting = match &c.state {
            State::Waiting { reason, .. } => reason.as_deref().filter(|r| *r != "PodInitializing"),
            _ => None,
        };
        let failed = c.last_terminated.as_ref().filter(|t| t.exit_code != 0);
        if waiting.is_none() && failed.is_none() {
            return None;
        }
        let mut why = format!("pod {} init container {}", pod.name, c.name);
        if let Some(reason) = waiting {
            why.push_str(&format!(" {reason}"));
        }
        if let Some(t) = failed {
            why.push_str(&format!(" after exit {}", t.exit_code));
        }
        match c.restart_count {
            0 => {}
            1 => why.push_str(", restarted once"),
            n => why.push_str(&format!(", restarted {n} times")),
        }
        Some(why)
    })
}

/// The pods whose app containers wait for init containers (`PodInitializing`), and which of
/// them are stuck there.
pub fn initializing(pods: &[&PodView]) -> Option<Initializing> {
    let mut waiting: Vec<&PodView> = pods
        .iter()
        .copied()
        .filter(|p| !p.deleting && !p.init_containers.is_empty())
        .filter(|p| {
            p.containers.iter().any(|c| {
                matches!(&c.state, State::Waiting { reason: Some(r), .. } if r == "PodInitializing")
            })
        })
        .collect();
    if waiting.is_empty() {
        return None;
    }
    waiting.sort_by(|a, b| a.name.cmp(&b.name));
    let stuck: Vec<String> = waiting.iter().filter_map(|p| init_stuck(p)).collect();
    Some(Initializing {
        pods: waiting.len(),
        stuck: stuck.len(),
        why: stuck.into_iter().next(),
    })
}

/// How long every container of a pod must have run since it last started before the pool counts
/// as Ready: a worker that crashes a few seconds into serving fails readiness neither before nor
/// after its first crash, and must not pass `kubectl wait` in between.
pub const STABLE_AFTER: SignedDuration = SignedDuration::from_secs(15);

/// How long a container that ended twice or more within the window must run before its pod
/// counts again: the exits stopped, rather than a gap between two of them.
pub const RECOVERED_AFTER: SignedDuration = SignedDuration::from_secs(60);

/// Whether the pool's pods stay up: nothing about them is Ready while they do not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stability {
    /// Pods with a container that ended twice or more, each end inside the window of the one
    /// before and the latest inside the window now, and that has not run [`RECOVERED_AFTER`]
    /// since.
    pub crash_looping: usize,
    /// What the first of them (by name) shows.
    pub why: Option<String>,
    /// Pods with a container started less than [`STABLE_AFTER`] ago.
    pub starting: usize,
    /// When to look again: as the first crash-looping pod recovers, and once every starting pod
    /// has run long enough (the pool can turn Ready only then; each pod passing the mark on the
    /// way would change no more than a count in a message).
    pub stable_in: Option<SignedDuration>,
    /// Pods of the pool's Deployment seen with every container ready, not shutting down.
    pub ready: usize,
}

impl Stability {
    pub fn is_stable(&self) -> bool {
        self.crash_looping == 0 && self.starting == 0
    }
}

/// [`Stability`] of the pods, from the ledger after this reconcile.
pub fn stability(
    pods: &[&PodView],
    summary: &AbortSummary,
    now: Timestamp,
    window_seconds: i64,
) -> Stability {
    let mut stability = Stability::default();
    let mut all_started_in: Option<SignedDuration> = None;
    let mut live: Vec<&PodView> = pods.iter().copied().filter(|p| !p.deleting).collect();
    live.sort_by(|a, b| a.name.cmp(&b.name));
    stability.ready = live
        .iter()
        .filter(|p| p.job.is_none() && p.all_containers_ready())
        .count();
    for pod in live {
        let repeated = pod.containers.iter().find_map(|c| {
            let source = ledger::container_source(&pod.uid, &c.name);
            let entry = ledger::counted_in_window(summary, &source, now, window_seconds)?;
            let runs = entry.runs.len() + usize::from(entry.runs_through.is_some());
            // Recovered: running for a while since the last of its exits.
            let ran = c.running_since.map(|since| now.duration_since(since));
            if ran.is_some_and(|ran| ran >= RECOVERED_AFTER) {
                return None;
            }
            (runs >= 2).then(|| (c, entry.runs.len(), entry.runs_through.is_some(), ran))
        });
        if let Some((container, runs, more, ran)) = repeated {
            stability.crash_looping += 1;
            if let Some(ran) = ran {
                let left = RECOVERED_AFTER - ran;
                stability.stable_in = Some(stability.stable_in.map_or(left, |l| l.min(left)));
            }
            if stability.why.is_none() {
                let last = summary
                    .last
                    .as_ref()
                    .filter(|l| *l.pod == *pod.name && l.container == container.name)
                    .map(|l| format!(", latest {}", l.reason))
                    .unwrap_or_default();
                stability.why = Some(format!(
                    "pod {} container {} ended {}{runs} times within {}s of each other{last}",
                    pod.name,
                    container.name,
                    if more { "more than " } else { "" },
                    window_seconds
                ));
            }
            continue;
        }
        let youngest = pod
            .containers
            .iter()
            .filter_map(|c| c.running_since)
            .map(|since| now.duration_since(since))
            .min();
        if let Some(ran) = youngest.filter(|ran| *ran < STABLE_AFTER) {
            stability.starting += 1;
            let left = STABLE_AFTER - ran;
            all_started_in = Some(all_started_in.map_or(left, |l| l.max(left)));
        }
    }
    stability.stable_in = earliest(stability.stable_in, all_started_in);
    stability
}

/// What the hints of worker-level aborts name, from the pool's effective settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerLimits {
    /// gunicorn's effective `--timeout`.
    pub timeout_seconds: Option<i64>,
    /// uvicorn's effective `--timeout-worker-healthcheck`.
    pub healthcheck_timeout_seconds: Option<i64>,
    /// The container's memory limit, as its spec writes it.
    pub memory_limit: Option<String>,
    /// The pod's `terminationGracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
    /// celery's effective `--time-limit`.
    pub task_time_limit_seconds: Option<i64>,
}

impl WorkerLimits {
    /// Why a celery worker outlived its grace period: its warm shutdown waited for tasks.
    fn warm_shutdown_cut(&self) -> String {
        let grace = self.grace_period_seconds.map_or_else(
            || "terminationGracePeriodSeconds".to_string(),
            |g| format!("terminationGracePeriodSeconds {g}s"),
        );
        let tasks = self.task_time_limit_seconds.map_or_else(
            || "as long as the longest task runs".to_string(),
            |t| format!("up to the task time limit, {t}s"),
        );
        format!(
            "celery's warm shutdown was still waiting for running tasks when the kubelet SIGKILLed \
             it at the end of {grace}; tasks may run {tasks}, so those still running were killed \
             (and lost unless acks_late): raise policy.shutdown.gracefulTimeoutSeconds to the \
             time limit, or lower the time limit"
        )
    }

    /// The hint of a termination whose log says `findings`.
    fn log_hint(&self, reason: Reason, findings: &LogFindings) -> Option<String> {
        if reason == Reason::GracePeriodExceeded && findings.warm_shutdown {
            return Some(self.warm_shutdown_cut());
        }
        loghints::hint(findings)
    }
}

/// Who killed a worker inside a running container, as its log says.
#[derive(Clone, Debug, PartialEq, Eq)]
enum WorkerKill {
    /// gunicorn's `WORKER TIMEOUT`.
    GunicornTimeout,
    /// A SIGKILL gunicorn did not send: the kernel's OOM killer.
    OutOfMemory,
    /// uvicorn's supervisor replaced an unresponsive worker process.
    UvicornHealthcheck,
    /// A celery pool child SIGKILLed with no hard time limit before it: the OOM killer.
    ChildOutOfMemory,
    /// billiard killed a celery pool child whose task hit the hard time limit.
    TimeLimit { task: String, limit: String },
}

impl WorkerLimits {
    fn hint(&self, kill: &WorkerKill, pid: u32) -> String {
        let limit = || {
            self.memory_limit
                .as_ref()
                .map_or_else(String::new, |m| format!(" of its {m} memory limit"))
        };
        match kill {
            WorkerKill::UvicornHealthcheck => {
                let timeout = self.healthcheck_timeout_seconds.map_or_else(
                    || "--timeout-worker-healthcheck".to_string(),
                    |t| format!("--timeout-worker-healthcheck {t}s"),
                );
                format!(
                    "uvicorn's supervisor replaced worker process {pid}: it did not answer a ping \
                     within {timeout} (the supervisor SIGKILLed it) or had exited on its own. A start \
                     slower than that (a fresh interpreter importing the app): set \
                     UVICORN_TIMEOUT_WORKER_HEALTHCHECK to policy.boot.timeoutSeconds or more (the \
                     operator derives it unless the template sets it); a worker that exited: its \
                     traceback is in the log above this line"
                )
            }
            WorkerKill::GunicornTimeout => {
                let timeout = self
                    .timeout_seconds
                    .map_or_else(|| "--timeout".to_string(), |t| format!("--timeout {t}s"));
                format!(
                    "gunicorn killed worker pid {pid}: it did not check in within {timeout} (the \
                     \"Perhaps out of memory?\" gunicorn prints with that SIGKILL is its own kill, not \
                     an OOM). A boot slower than that: preload the app (policy.boot.preload), raise \
                     policy.boot.timeoutSeconds or boot fewer pods at once (policy.boot.maxConcurrent); \
                     a slow request: raise policy.requests.timeoutSeconds"
                )
            }
            WorkerKill::OutOfMemory => format!(
                "worker pid {pid} was sent SIGKILL with no WORKER TIMEOUT before it: the kernel's \
                 OOM killer, while the container kept running; the workers use too much{}: \
                 raise the limit or run fewer workers",
                limit()
            ),
            WorkerKill::ChildOutOfMemory => format!(
                "celery pool child pid {pid} was SIGKILLed with no hard time limit before it: the \
                 kernel's OOM killer, while the worker kept running; the children use too much{}: \
                 lower --concurrency, set --max-memory-per-child (derived from the memory limit \
                 unless set) or raise the limit",
                limit()
            ),
            WorkerKill::TimeLimit { task, limit } => format!(
                "celery's hard time limit ({limit}) for task {task}: billiard killed pool child pid \
                 {pid}, which ran it (not an OOM). A task that needs longer: raise \
                 policy.requests.timeoutSeconds (the derived --time-limit) and \
                 policy.shutdown.gracefulTimeoutSeconds with it, or split the task"
            ),
        }
    }
}

/// One worker of an app server killed while its container kept running, or (no pid) a lasting
/// state its log shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerAbort {
    pub abort: Abort,
    pub pid: Option<u32>,
    pub hint: String,
}

/// Worker-level aborts in a container's log: every gunicorn `WORKER TIMEOUT`, every worker
/// SIGKILL ("Perhaps out of memory?") not caused by a timeout, every worker process uvicorn's
/// supervisor replaced, every celery pool child killed by the OOM killer or for a hard time
/// limit, by the worker's pid; and a celery worker that keeps failing to reach its broker.
pub fn worker_aborts(
    pod: &PodView,
    container: &str,
    findings: &LogFindings,
    limits: &WorkerLimits,
) -> Vec<WorkerAbort> {
    let restart_count = pod.container(container).map_or(0, |c| c.restart_count);
    let of = |pids: &[u32], kill: WorkerKill| {
        pids.iter()
            .map(|pid| (kill.clone(), *pid))
            .collect::<Vec<_>>()
    };
    let abort = |reason, message: String| Abort {
        pod: pod.name.to_string(),
        container: Some(container.to_string()),
        reason,
        exit_code: None,
        signal: None,
        restart_count: Some(restart_count),
        message: Some(message),
        finished_at: None,
        by_boot_window: false,
        job: None,
    };
    let time_limits = findings.time_limit_kills.iter().map(|k| {
        let kill = WorkerKill::TimeLimit {
            task: k.task.clone(),
            limit: k.limit.clone(),
        };
        (kill, k.pid)
    });
    let mut aborts: Vec<WorkerAbort> = [
        of(&findings.worker_timeout_pids, WorkerKill::GunicornTimeout),
        of(&findings.worker_oom_pids, WorkerKill::OutOfMemory),
        of(
            &findings.replaced_worker_pids,
            WorkerKill::UvicornHealthcheck,
        ),
        of(&findings.child_oom_pids, WorkerKill::ChildOutOfMemory),
        time_limits.collect(),
    ]
    .into_iter()
    .flatten()
    .map(|(kill, pid)| {
        let reason = match kill {
            WorkerKill::OutOfMemory | WorkerKill::ChildOutOfMemory => Reason::OOMKilled,
            WorkerKill::GunicornTimeout
            | WorkerKill::UvicornHealthcheck
            | WorkerKill::TimeLimit { .. } => Reason::WorkerTimeout,
        };
        WorkerAbort {
            abort: abort(reason, format!("worker pid {pid}")),
            pid: Some(pid),
            hint: limits.hint(&kill, pid),
        }
    })
    .collect();
    // One failed attempt is a blip celery retries; a tail of them is a worker consuming nothing.
    if let Some(broker) = findings
        .broker_unreachable
        .as_ref()
        .filter(|b| b.attempts >= BROKER_ATTEMPTS)
    {
        aborts.push(WorkerAbort {
            abort: abort(
                Reason::BrokerUnreachable,
                format!("cannot connect to {}", broker.broker),
            ),
            pid: None,
            hint: broker_hint(broker),
        });
    }
    aborts
}

/// Failed broker connections in one log tail that make a [`Reason::BrokerUnreachable`].
pub const BROKER_ATTEMPTS: u32 = 2;

fn broker_hint(broker: &loghints::BrokerFailure) -> String {
    format!(
        "celery cannot reach its broker {} ({}; {} attempts in the log): the worker runs and \
         consumes nothing. Check the broker's address and credentials, that it is up, and that \
         a NetworkPolicy lets the pod reach it",
        broker.broker, broker.error, broker.attempts
    )
}

/// The broker state a run's log shows, on the same container as `ended` (a termination).
pub fn broker_state(ended: &Observed, findings: &LogFindings) -> Option<Observed> {
    let broker = findings
        .broker_unreachable
        .as_ref()
        .filter(|b| b.attempts >= BROKER_ATTEMPTS)?;
    let reason = Reason::BrokerUnreachable.as_str();
    let mut record = ended.record.clone();
    record.reason = reason.to_string();
    record.exit_code = None;
    record.signal = None;
    record.message = Some(format!("cannot connect to {}", broker.broker));
    record.hint = Some(broker_hint(broker));
    Some(Observed {
        identity: Identity {
            source: ended.identity.source.clone(),
            occurrence: ledger::Occurrence::State(reason.to_string()),
        },
        at: ended.at,
        revision: ended.revision.clone(),
        record,
    })
}

/// [`worker_aborts`] of a running container's log tail, for the ledger.
pub fn log_aborts(
    pod: &PodView,
    container: &str,
    log: &str,
    limits: &WorkerLimits,
    now: Timestamp,
) -> Vec<Observed> {
    worker_aborts(pod, container, &loghints::scan(log), limits)
        .into_iter()
        .map(|worker| Observed {
            identity: match worker.pid {
                Some(pid) => Identity::worker(
                    &pod.uid,
                    container,
                    worker.abort.restart_count.unwrap_or(0),
                    pid,
                ),
                None => Identity::state(&pod.uid, Some(container), worker.abort.reason.as_str()),
            },
            at: now,
            revision: pod.revision.clone().map(String::from),
            record: record(&worker.abort, now, Some(worker.hint)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aborts::podview::Termination;
    use serde_json::json;

    fn abort(container: Option<&str>, exit_code: Option<i32>, reason: Reason) -> Abort {
        Abort {
            pod: "api-1".into(),
            container: container.map(str::to_string),
            reason,
            exit_code,
            signal: None,
            restart_count: Some(4),
            message: None,
            finished_at: None,
            by_boot_window: false,
            job: None,
        }
    }

    #[test]
    fn only_what_a_probe_kill_could_explain_waits_to_settle() {
        let signaled = |code| Abort {
            exit_code: Some(code),
            ..abort(Some("app"), Some(code), Reason::Signaled)
        };
        assert!(
            !needs_settling(&signaled(134)),
            "SIGABRT is never the kubelet's"
        );
        assert!(
            needs_settling(&signaled(143)),
            "SIGTERM may be a probe kill"
        );
        assert!(needs_settling(&signaled(137)), "so may SIGKILL");
        assert!(needs_settling(&abort(
            Some("app"),
            Some(2),
            Reason::UnexpectedExit
        )));
        assert!(!needs_settling(&abort(
            Some("app"),
            Some(137),
            Reason::OOMKilled
        )));
    }

    #[test]
    fn identities_count_runs_once_and_states_once_per_pod() {
        assert_eq!(
            identity("u", &abort(Some("app"), Some(3), Reason::BootFailed)).to_string(),
            "u/app/4"
        );
        assert_eq!(
            identity("u", &abort(Some("app"), None, Reason::CrashLoop)).to_string(),
            "u/app/CrashLoop"
        );
        assert_eq!(
            identity("u", &abort(None, None, Reason::Evicted)).to_string(),
            "u/Evicted"
        );
    }

    #[test]
    fn only_running_unready_containers_of_live_pods_are_sampled() {
        let pod = |phase: &str, ready: bool, deleting: bool| -> PodView {
            let mut value = json!({
                "metadata": {"name": "api-1", "uid": "u"},
                "status": {"phase": phase, "containerStatuses": [
                    {"name": "app", "image": "x", "imageID": "", "ready": ready, "restartCount": 0,
                     "state": {"running": {"startedAt": "2026-11-22T10:00:00Z"}}}
                ]}
            });
            if deleting {
                value["metadata"]["deletionTimestamp"] = json!("2026-11-22T10:00:05Z");
            }
            let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(value).expect("pod");
            PodView::from(&pod)
        };
        assert_eq!(
            unhealthy_containers(&pod("Running", false, false))
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["app"]
        );
        assert!(unhealthy_containers(&pod("Running", true, false)).is_empty());
        assert!(unhealthy_containers(&pod("Running", false, true)).is_empty());
        assert!(unhealthy_containers(&pod("Pending", false, false)).is_empty());
    }

    /// A pod of two containers as its watch shows it step by step.
    fn starting_pod(phase: Option<&str>, containers: &[(&str, bool)]) -> PodView {
        let at = Timestamp::from_second(1_800_000_000).expect("time");
        PodView {
            name: "api-1".into(),
            uid: "u".into(),
            pool: Some("api".into()),
            phase: phase.map(Into::into),
            containers: containers
                .iter()
                .enumerate()
                .map(|(i, (state, ready))| ContainerView {
                    name: format!("c{i}"),
                    ready: *ready,
                    state: match *state {
                        "running" => State::Running,
                        reason => State::Waiting {
                            reason: Some(reason.into()),
                            message: None,
                        },
                    },
                    running_since: (*state == "running").then_some(at),
                    ..ContainerView::default()
                })
                .collect(),
            ..PodView::default()
        }
    }

    #[test]
    fn the_steps_of_a_start_are_quiet_until_the_pod_is_ready() {
        let created = starting_pod(None, &[]);
        let creating = starting_pod(Some("Pending"), &[("ContainerCreating", false)]);
        let booting = starting_pod(Some("Running"), &[("running", false)]);
        let ready = starting_pod(Some("Running"), &[("running", true)]);
        assert!(is_quiet_move(None, &created), "a new pod");
        assert!(is_quiet_move(Some(&created), &creating));
        assert!(is_quiet_move(Some(&creating), &booting));
        assert!(!is_quiet_move(Some(&booting), &ready), "it became ready");
        assert!(!is_quiet_move(None, &ready), "new and ready at once");
        // A sidecar ready before the app: the pod is not counted ready yet.
        let sidecar_ready = starting_pod(Some("Running"), &[("running", false), ("running", true)]);
        let both = starting_pod(Some("Running"), &[("running", true), ("running", true)]);
        assert!(is_quiet_move(Some(&creating), &sidecar_ready));
        assert!(!is_quiet_move(Some(&sidecar_ready), &both));
    }

    #[test]
    fn errors_ends_init_containers_and_shutdown_are_never_quiet() {
        let booting = starting_pod(Some("Running"), &[("running", false)]);
        let mut moves = Vec::new();
        for reason in [
            "CrashLoopBackOff",
            "ImagePullBackOff",
            "CreateContainerConfigError",
        ] {
            moves.push((reason, starting_pod(Some("Pending"), &[(reason, false)])));
        }
        let mut restarted = booting.clone();
        restarted.containers[0].restart_count = 1;
        moves.push(("restarted", restarted));
        let mut ended = booting.clone();
        ended.containers[0].state = State::Terminated(Box::new(Termination {
            exit_code: 3,
            reason: Some("Error".into()),
            message: None,
            started_at: None,
            finished_at: None,
        }));
        moves.push(("ended", ended));
        let mut deleting = booting.clone();
        deleting.deleting = true;
        moves.push(("deleting", deleting));
        let mut initializing = booting.clone();
        initializing.init_containers = vec![ContainerView {
            name: "migrate".into(),
            state: State::Running,
            ..ContainerView::default()
        }];
        moves.push(("init containers", initializing));
        let mut unschedulable = starting_pod(Some("Pending"), &[]);
        unschedulable.unschedulable = Some(crate::aborts::podview::Unschedulable::default());
        moves.push(("unschedulable", unschedulable));
        let mut evicted = booting.clone();
        evicted.phase = Some("Failed".into());
        evicted.reason = Some("Evicted".into());
        moves.push(("evicted", evicted));
        let mut signalled = booting.clone();
        signalled.containers[0].stop_signal = Some("SIGINT".into());
        moves.push(("a stop signal reported", signalled));
        let mut replaced = booting.clone();
        replaced.uid = "another".into();
        moves.push(("another pod of the same name", replaced));
        for (what, pod) in &moves {
            assert!(!is_quiet_move(Some(&booting), pod), "{what}");
            assert!(!is_quiet_move(Some(pod), &booting), "back from {what}");
        }
    }

    #[test]
    fn a_shutdown_that_stops_cleanly_is_quiet_after_it_began_and_its_pod_leaves_quietly() {
        let serving = starting_pod(Some("Running"), &[("running", true)]);
        let mut stopping = serving.clone();
        stopping.deleting = true;
        assert!(
            !is_quiet_move(Some(&serving), &stopping),
            "the shutdown beginning is read"
        );
        let mut unready = stopping.clone();
        unready.containers[0].ready = false;
        assert!(is_quiet_move(Some(&stopping), &unready));
        let stopped = |exit_code| {
            let mut pod = unready.clone();
            pod.phase = Some("Failed".into());
            pod.containers[0].state = State::Terminated(Box::new(Termination {
                exit_code,
                reason: Some("Error".into()),
                message: None,
                started_at: None,
                finished_at: None,
            }));
            pod
        };
        assert!(is_quiet_move(Some(&unready), &stopped(143)), "SIGTERM");
        assert!(is_quiet_move(Some(&unready), &stopped(0)));
        assert!(
            !is_quiet_move(Some(&unready), &stopped(137)),
            "killed at the end of the grace period"
        );
        assert!(!is_quiet_move(Some(&unready), &stopped(1)), "an error");
        let mut restarted = stopped(143);
        restarted.containers[0].restart_count = 1;
        assert!(!is_quiet_move(Some(&unready), &restarted));
        assert!(is_quiet_removal(&stopped(137)), "its end was read before");
        assert!(
            !is_quiet_removal(&serving),
            "a pod gone without shutting down is read"
        );
    }

    #[test]
    fn a_booting_container_owes_a_look_when_its_first_sample_falls_due() {
        let booting = starting_pod(Some("Running"), &[("running", false)]);
        let since = booting.containers[0].running_since.expect("running");
        assert_eq!(first_sample_due(&booting), Some(since + SAMPLE_INTERVAL));
        let ready = starting_pod(Some("Running"), &[("running", true)]);
        assert_eq!(first_sample_due(&ready), None);
        let creating = starting_pod(Some("Pending"), &[("ContainerCreating", false)]);
        assert_eq!(first_sample_due(&creating), None);
        let mut unknown_start = booting.clone();
        unknown_start.containers[0].running_since = None;
        assert!(
            !is_quiet_move(Some(&booting), &unknown_start),
            "a run with no start time is looked at now"
        );
    }

    #[test]
    fn advice_names_what_to_change() {
        assert!(advice(Reason::GracePeriodExceeded).contains("exec"));
        assert!(advice(Reason::StartupTimeout).contains("policy.boot.timeoutSeconds"));
        assert!(advice(Reason::OOMKilled).contains("resources.limits.memory"));
        let early_exit = Abort {
            by_boot_window: true,
            ..abort(Some("app"), Some(1), Reason::BootFailed)
        };
        assert!(advice_for(&early_exit).contains("before it finished booting"));
        let exit_3 = abort(Some("app"), Some(3), Reason::BootFailed);
        assert!(advice_for(&exit_3).contains("exited 3"));
    }

    #[test]
    fn pods_waiting_for_init_containers_and_the_stuck_ones() {
        let app = ContainerView {
            name: "app".into(),
            state: State::Waiting {
                reason: Some("PodInitializing".into()),
                message: None,
            },
            ..ContainerView::default()
        };
        let init = |state: State, failed: bool| ContainerView {
            name: "migrate".into(),
            state,
            restart_count: i32::from(failed),
            last_terminated: failed.then(|| {
                Box::new(Termination {
                    exit_code: 2,
                    reason: Some("Error".into()),
                    message: None,
                    started_at: None,
                    finished_at: None,
                })
            }),
            ..ContainerView::default()
        };
        let pod = |name: &str, init: ContainerView| PodView {
            name: name.into(),
            containers: vec![app.clone()],
            init_containers: vec![init],
            ..PodView::default()
        };
        let running = pod("api-a", init(State::Running, false));
        let retrying = pod("api-c", init(State::Running, true));
        let pulling = pod(
            "api-b",
            init(
                State::Waiting {
                    reason: Some("ImagePullBackOff".into()),
                    message: None,
                },
                false,
            ),
        );
        let leaving = PodView {
            deleting: true,
            ..pod("api-d", init(State::Running, true))
        };
        let started = PodView {
            containers: vec![ContainerView {
                state: State::Running,
                ..app.clone()
            }],
            ..pod("api-e", init(State::Running, false))
        };
        assert_eq!(
            initializing(&[&retrying, &running, &pulling, &leaving, &started]),
            Some(Initializing {
                pods: 3,
                stuck: 2,
                why: Some("pod api-b init container migrate ImagePullBackOff".into()),
            })
        );
        assert_eq!(
            init_stuck(&retrying).as_deref(),
            Some("pod api-c init container migrate after exit 2, restarted once")
        );
        assert_eq!(initializing(&[&started]), None);
    }

    /// A gunicorn pod crash-looping on exit 3, restarted `restarts` times, created at `created`
    /// and with its last run ended at second `ended` of 10:00.
    fn crash_looping(restarts: i32, created: &str, ended: i64) -> PodView {
        let value = json!({
            "metadata": {"name": "api-1", "uid": "u", "creationTimestamp": created,
                         "labels": {"pod-template-hash": "rev1"}},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "app", "image": "x", "imageID": "", "ready": false, "restartCount": restarts,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 3, "reason": "Error",
                     "startedAt": format!("2026-11-22T10:{:02}:{:02}Z", (ended - 3) / 60, (ended - 3) % 60),
                     "finishedAt": format!("2026-11-22T10:{:02}:{:02}Z", ended / 60, ended % 60)}}}
            ]}
        });
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(value).expect("pod");
        PodView::from(&pod)
    }

    fn counted_runs(summary: &AbortSummary) -> Vec<i32> {
        let source = &summary.counted[0];
        assert_eq!(source.runs_through, None);
        source.runs.clone()
    }

    /// What one reconcile at `now` counts of `pod`, with the unseen runs.
    fn reconcile(
        old: Option<&AbortSummary>,
        pod: &PodView,
        now: Timestamp,
    ) -> (AbortSummary, Vec<AbortRecord>) {
        let found = pod_aborts(Runtime::Gunicorn, &[pod], &[], now).found;
        let mut observed = unseen_runs(Runtime::Gunicorn, &[pod], &[], old, now, 600);
        observed.extend(found.into_iter().map(|f| f.observed));
        ledger::record(old, observed, now, 600)
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(
            "2026-11-22T10:00:00Z"
                .parse::<Timestamp>()
                .expect("time")
                .as_second()
                + secs,
        )
        .expect("time")
    }

    #[test]
    fn runs_that_ended_while_no_operator_watched_are_counted_once_and_marked_inferred() {
        let old_pod = "2026-11-22T08:00:00Z";
        // Runs 0, 1 and 2 were seen; then the operator was away while runs 3 to 9 ended.
        let mut summary = None;
        for restarts in 1..=3 {
            let pod = crash_looping(restarts, old_pod, 10 * i64::from(restarts));
            summary = Some(reconcile(summary.as_ref(), &pod, at(10 * i64::from(restarts) + 1)).0);
        }
        let seen = summary.expect("ledger");
        assert_eq!(counted_runs(&seen), [0, 1, 2]);
        let back = crash_looping(11, old_pod, 200);
        let (after, fresh) = reconcile(Some(&seen), &back, at(201));
        assert_eq!(counted_runs(&after), (0..=10).collect::<Vec<_>>());
        assert_eq!(fresh.len(), 8, "runs 3 to 9 inferred, run 10 seen");
        let inferred: Vec<i32> = fresh
            .iter()
            .filter(|r| r.inferred)
            .map(|r| r.restart_count)
            .collect();
        assert_eq!(inferred, (3..=9).collect::<Vec<_>>());
        for record in fresh.iter().filter(|r| r.inferred) {
            assert_eq!(
                record.reason, "BootFailed",
                "the reason of the run after them"
            );
            assert_eq!(record.exit_code, None, "no exit code was seen");
            assert!(
                record
                    .message
                    .as_deref()
                    .is_some_and(|m| m.contains("no operator watched")),
                "{record:?}"
            );
        }
        let last = after.last.as_ref().expect("last");
        assert!(!last.inferred, "the run seen is the latest");
        assert_eq!(after.counts[0].count, 11, "counted = restart count");
        // Read again (a relist, another operator): nothing new.
        let (again, fresh) = reconcile(Some(&after), &back, at(203));
        assert!(fresh.is_empty(), "{fresh:?}");
        assert_eq!(again.counts, after.counts);
    }

    #[test]
    fn unseen_runs_are_inferred_only_when_they_ended_inside_the_window() {
        // A pod created inside the window: all its runs did.
        let young = crash_looping(4, "2026-11-22T10:00:00Z", 100);
        let (summary, fresh) = reconcile(None, &young, at(101));
        assert_eq!(fresh.iter().filter(|r| r.inferred).count(), 3);
        assert_eq!(counted_runs(&summary), [0, 1, 2, 3]);
        // An older pod first seen now: its earlier runs may have ended long ago.
        let old = crash_looping(4, "2026-11-22T08:00:00Z", 100);
        let runs = |fresh: &[AbortRecord]| fresh.iter().filter(|r| r.reason != "CrashLoop").count();
        let (summary, fresh) = reconcile(None, &old, at(101));
        assert_eq!(runs(&fresh), 1, "only the run seen: {fresh:?}");
        assert_eq!(counted_runs(&summary), [3]);
        // A ledger whose runs of this container left the window says nothing about the gap.
        let later = crash_looping(9, "2026-11-22T08:00:00Z", 1000);
        let (summary, fresh) = reconcile(Some(&summary), &later, at(1001));
        assert_eq!(runs(&fresh), 1, "{fresh:?}");
        assert_eq!(counted_runs(&summary), [8]);
    }

    #[test]
    fn a_hostile_restart_count_infers_a_bounded_number_of_runs() {
        let pod = crash_looping(i32::MAX, "2026-11-22T10:00:00Z", 100);
        let unseen = unseen_runs(Runtime::Gunicorn, &[&pod], &[], None, at(101), 600);
        assert_eq!(unseen.len(), MAX_INFERRED_RUNS as usize);
    }

    #[test]
    fn a_container_that_ended_twice_inside_the_window_is_crash_looping() {
        let created = "2026-11-22T08:00:00Z";
        let (once, _) = reconcile(None, &crash_looping(1, created, 10), at(11));
        let pod = crash_looping(1, created, 10);
        assert!(
            stability(&[&pod], &once, at(11), 600).is_stable(),
            "one abort is occasional"
        );
        let pod = crash_looping(2, created, 40);
        let (twice, _) = reconcile(Some(&once), &pod, at(41));
        let unstable = stability(&[&pod], &twice, at(41), 600);
        assert_eq!(unstable.crash_looping, 1);
        assert_eq!(
            unstable.why.as_deref(),
            Some(
                "pod api-1 container app ended 2 times within 600s of each other, latest BootFailed"
            )
        );
        // Once the latest end left the window, the pod is stable again.
        assert!(stability(&[&pod], &twice, at(41 + 601), 600).is_stable());
        // So it is once it has run a minute since its last exit.
        let mut serving = pod.clone();
        serving.containers[0].state = State::Running;
        serving.containers[0].running_since = Some(at(45));
        let recovering = stability(&[&serving], &twice, at(100), 600);
        assert_eq!(recovering.crash_looping, 1);
        assert_eq!(recovering.stable_in, Some(SignedDuration::from_secs(5)));
        assert!(stability(&[&serving], &twice, at(105), 600).is_stable());
        // A pod being deleted is no longer the pool's concern.
        let leaving = PodView {
            deleting: true,
            ..pod
        };
        assert!(stability(&[&leaving], &twice, at(41), 600).is_stable());
    }

    #[test]
    fn a_pod_counts_as_stable_once_its_containers_ran_long_enough() {
        let pod = PodView {
            name: "api-1".into(),
            containers: vec![ContainerView {
                name: "app".into(),
                ready: true,
                state: State::Running,
                running_since: Some(at(0)),
                ..ContainerView::default()
            }],
            ..PodView::default()
        };
        let summary = AbortSummary::default();
        let young = stability(&[&pod], &summary, at(5), 600);
        assert_eq!(
            (young.starting, young.stable_in),
            (1, Some(SignedDuration::from_secs(10)))
        );
        assert!(stability(&[&pod], &summary, at(15), 600).is_stable());
        let mut later = pod.clone();
        later.name = "api-2".into();
        later.containers[0].running_since = Some(at(3));
        let both = stability(&[&pod, &later], &summary, at(5), 600);
        assert_eq!(
            (both.starting, both.stable_in),
            (2, Some(SignedDuration::from_secs(13))),
            "looked at again once both have run 15 s, not as each does"
        );
    }

    #[test]
    fn a_crash_loop_faster_than_the_settle_time_is_counted_one_run_behind() {
        // A plain program's exit could still turn out a probe kill for 5 s; this one restarts
        // sooner, so the run the status shows is always settling.
        let created = "2026-11-22T08:00:00Z";
        let reconcile_generic = |old: Option<&AbortSummary>, pod: &PodView, now: Timestamp| {
            let found = pod_aborts(Runtime::Generic, &[pod], &[], now).found;
            let mut observed = unseen_runs(Runtime::Generic, &[pod], &[], old, now, 600);
            observed.extend(found.into_iter().map(|f| f.observed));
            ledger::record(old, observed, now, 600)
        };
        let (first, _) = reconcile_generic(None, &crash_looping(1, created, 10), at(20));
        assert_eq!(counted_runs(&first), [0]);
        let mut summary = first;
        for restarts in 2..=5 {
            let ended = 20 + 4 * i64::from(restarts);
            let pod = crash_looping(restarts, created, ended);
            let found = pod_aborts(Runtime::Generic, &[&pod], &[], at(ended + 2)).found;
            assert!(
                found
                    .iter()
                    .all(|f| f.observed.record.reason == "CrashLoop"),
                "the run shown is still settling: {found:?}"
            );
            summary = reconcile_generic(Some(&summary), &pod, at(ended + 2)).0;
            let expected: Vec<i32> = (0..restarts - 1).collect();
            assert_eq!(counted_runs(&summary), expected, "one run behind");
        }
    }
}
