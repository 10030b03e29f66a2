//! `kubectl workerpool get`: a pool, its init Job, its pods with their last abort, and the pool's
//! recent Warning Events, as one tree.

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

use super::age;
use crate::aborts::classify::KubeletEvent;
use crate::api::condition;
use crate::api::{Reason, WorkerPool};
use crate::diagnose;

/// A Warning Event about the pool, as the API server lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolEvent {
    pub reason: String,
    pub message: String,
    pub count: i32,
    pub last_seen: Option<Timestamp>,
}

/// Everything `get` reads about one pool.
pub struct Observed<'a> {
    pub pool: &'a WorkerPool,
    pub pods: &'a [Pod],
    pub jobs: &'a [Job],
    /// The kubelet's Events about the pods (probe failures, kills), for their aborts.
    pub pod_events: &'a [KubeletEvent],
    pub warnings: &'a [PoolEvent],
    pub now: Timestamp,
}

/// How many of the pool's Warning Events the tree ends with, newest first.
pub const WARNINGS_SHOWN: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolTree {
    pub name: String,
    pub namespace: String,
    pub runtime: String,
    pub phase: String,
    /// Why the pool is not Ready, from the condition that says (Stalled before Ready).
    pub message: Option<String>,
    pub desired: i32,
    pub ready: i32,
    pub ramp_target: Option<i32>,
    pub revision: Option<String>,
    pub circuit_open: bool,
    pub circuit_message: Option<String>,
    pub init: Option<InitRow>,
    pub pods: Vec<PodRow>,
    pub warnings: Vec<EventRow>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InitRow {
    pub job: String,
    pub revision: String,
    pub phase: String,
    /// From the Job's start to its completion, or to now while it runs.
    pub duration_seconds: Option<i64>,
    pub message: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRow {
    pub name: String,
    pub revision: Option<String>,
    /// Ready containers of all containers, as `kubectl get pods` counts them.
    pub ready: String,
    pub restarts: i32,
    pub age_seconds: Option<i64>,
    /// What `kubectl get pods` shows as STATUS.
    pub state: String,
    pub healthy: bool,
    pub last_abort: Option<AbortRow>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AbortRow {
    pub reason: String,
    pub container: Option<String>,
    pub exit_code: Option<i32>,
    pub ago_seconds: Option<i64>,
    pub hint: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRow {
    pub reason: String,
    pub message: String,
    pub count: i32,
    pub ago_seconds: Option<i64>,
}

fn seconds_between(from: Timestamp, to: Timestamp) -> i64 {
    to.duration_since(from).as_secs()
}

/// The tree of one pool from what was read.
pub fn build(observed: &Observed<'_>) -> PoolTree {
    let pool = observed.pool;
    let status = pool.status.as_ref();
    let conditions = status.map(|s| &s.conditions[..]).unwrap_or_default();
    let is_true = |kind: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == kind && c.status == "True")
    };
    let message = is_true(condition::STALLED)
        .or_else(|| {
            conditions
                .iter()
                .find(|c| c.type_ == condition::READY && c.status != "True")
        })
        .map(|c| diagnose::printable(&format!("{}: {}", c.reason, c.message)));
    let ago = |at: Option<Timestamp>| at.map(|at| seconds_between(at, observed.now));

    let init = status.and_then(|s| s.init.as_ref()).map(|init| {
        let job = observed
            .jobs
            .iter()
            .find(|j| j.metadata.name.as_deref() == Some(init.job.as_str()));
        let started = job
            .and_then(|j| j.status.as_ref()?.start_time.as_ref())
            .map(|t| t.0);
        let ended = job
            .and_then(|j| j.status.as_ref()?.completion_time.as_ref())
            .map(|t| t.0);
        InitRow {
            job: init.job.clone(),
            revision: init.revision.clone(),
            phase: format!("{:?}", init.phase),
            duration_seconds: started.map(|s| seconds_between(s, ended.unwrap_or(observed.now))),
            message: init.message.as_deref().map(diagnose::printable),
        }
    });

    let runtime = pool.spec.runtime;
    let last_recorded = status.and_then(|s| s.aborts.as_ref()?.last.as_ref());
    let mut pods: Vec<PodRow> = observed
        .pods
        .iter()
        .map(|pod| {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let statuses = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_deref())
                .unwrap_or_default();
            let total = pod.spec.as_ref().map_or(0, |s| s.containers.len());
            let ready = statuses.iter().filter(|c| c.ready).count();
            let restarts = statuses.iter().map(|c| c.restart_count).sum();
            let findings = diagnose::diagnose(
                std::slice::from_ref(pod),
                observed.pod_events,
                Some(runtime),
                &[],
            )
            .unwrap_or_default();
            // The newest; of a crash loop and the run that ended before it, the run says why.
            let last_abort = findings
                .into_iter()
                .max_by_key(|f| (f.abort.finished_at, f.abort.reason != Reason::CrashLoop))
                .map(|f| {
                    // The operator's own record has what the log said; the pod alone does not.
                    let recorded = last_recorded.filter(|r| {
                        r.pod == name
                            && Some(r.container.as_str()) == f.abort.container.as_deref()
                            && r.reason == f.abort.reason.as_str()
                    });
                    AbortRow {
                        reason: f.abort.reason.to_string(),
                        container: f.abort.container.clone(),
                        exit_code: f.abort.exit_code,
                        ago_seconds: ago(f.abort.finished_at),
                        hint: recorded
                            .and_then(|r| r.hint.clone())
                            .or(f.hint)
                            .map(|h| diagnose::printable(&h)),
                    }
                });
            let (state, healthy) = pod_state(pod, ready == total && total > 0);
            PodRow {
                revision: pod
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(crate::api::REVISION_LABEL))
                    .cloned(),
                name,
                ready: format!("{ready}/{total}"),
                restarts,
                age_seconds: ago(pod.metadata.creation_timestamp.as_ref().map(|t| t.0)),
                state,
                healthy,
                last_abort,
            }
        })
        .collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));

    let mut warnings: Vec<&PoolEvent> = observed.warnings.iter().collect();
    warnings.sort_by_key(|e| std::cmp::Reverse(e.last_seen));
    let warnings = warnings
        .into_iter()
        .take(WARNINGS_SHOWN)
        .map(|e| EventRow {
            reason: e.reason.clone(),
            message: diagnose::printable(&e.message),
            count: e.count.max(1),
            ago_seconds: ago(e.last_seen),
        })
        .collect();

    PoolTree {
        name: pool.metadata.name.clone().unwrap_or_default(),
        namespace: pool.metadata.namespace.clone().unwrap_or_default(),
        runtime: runtime.as_str().to_string(),
        phase: status
            .and_then(|s| s.phase)
            .map_or("Unknown", |p| p.as_str())
            .to_string(),
        message,
        desired: pool.spec.replicas,
        ready: status.map_or(0, |s| s.ready_replicas),
        ramp_target: status.and_then(|s| s.ramp_target),
        revision: status.and_then(|s| s.revision.clone()),
        circuit_open: status
            .and_then(|s| s.circuit.as_ref())
            .is_some_and(|c| c.open),
        circuit_message: status
            .and_then(|s| s.circuit.as_ref())
            .filter(|c| c.open)
            .and_then(|c| c.message.as_deref())
            .map(diagnose::printable),
        init,
        pods,
        warnings,
    }
}

/// A pod's STATUS as `kubectl get pods` words it (the first waiting or terminated reason of its
/// containers, else its phase), and whether it is serving.
fn pod_state(pod: &Pod, all_ready: bool) -> (String, bool) {
    if pod.metadata.deletion_timestamp.is_some() {
        return ("Terminating".into(), false);
    }
    let status = pod.status.as_ref();
    let reason_of = |statuses: Option<&Vec<k8s_openapi::api::core::v1::ContainerStatus>>| {
        statuses.into_iter().flatten().find_map(|c| {
            let state = c.state.as_ref()?;
            state
                .waiting
                .as_ref()
                .and_then(|w| w.reason.clone())
                .or_else(|| state.terminated.as_ref().and_then(|t| t.reason.clone()))
        })
    };
    if let Some(reason) = reason_of(status.and_then(|s| s.init_container_statuses.as_ref())) {
        return (format!("Init:{reason}"), false);
    }
    if let Some(reason) = reason_of(status.and_then(|s| s.container_statuses.as_ref())) {
        return (reason, false);
    }
    if let Some(reason) = status.and_then(|s| s.reason.clone()) {
        return (reason, false);
    }
    let phase = status
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".into());
    let healthy = phase == "Running" && all_ready;
    (phase, healthy)
}

/// How the tree is drawn: colour and symbols on a terminal, plain words elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    pub colour: bool,
}

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

#[derive(Clone, Copy)]
enum Health {
    Good,
    Bad,
    Pending,
}

impl Style {
    fn mark(self, health: Health, text: &str) -> String {
        if !self.colour {
            return text.to_string();
        }
        let (colour, symbol) = match health {
            Health::Good => (GREEN, "✔"),
            Health::Bad => (RED, "✖"),
            Health::Pending => (YELLOW, "◌"),
        };
        format!("{colour}{symbol} {text}{RESET}")
    }

    fn dim(self, text: &str) -> String {
        if self.colour {
            format!("{DIM}{text}{RESET}")
        } else {
            text.to_string()
        }
    }
}

fn phase_health(phase: &str) -> Health {
    match phase {
        "Ready" => Health::Good,
        "Degraded" | "Stalled" => Health::Bad,
        _ => Health::Pending,
    }
}

/// The tree as text, the way `kubectl argo rollouts get` lays one out.
pub fn render(tree: &PoolTree, style: Style) -> String {
    let mut out = String::new();
    let mut field = |name: &str, value: String| {
        out.push_str(&format!("{:<12}{value}\n", format!("{name}:")));
    };
    field("Name", tree.name.clone());
    field("Namespace", tree.namespace.clone());
    field("Runtime", tree.runtime.clone());
    field("Status", style.mark(phase_health(&tree.phase), &tree.phase));
    if let Some(message) = &tree.message {
        field("Message", message.clone());
    }
    let mut replicas = format!("desired {}, ready {}", tree.desired, tree.ready);
    if let Some(target) = tree.ramp_target.filter(|t| *t != tree.desired) {
        replicas.push_str(&format!(", ramp target {target}"));
    }
    field("Replicas", replicas);
    if let Some(revision) = &tree.revision {
        field("Revision", revision.clone());
    }
    // The circuit's message is often the Stalled condition's: said once.
    let circuit = match (&tree.circuit_message, tree.circuit_open) {
        (_, false) => "closed".to_string(),
        (Some(m), true)
            if !tree
                .message
                .as_deref()
                .is_some_and(|t| t.contains(m.as_str())) =>
        {
            style.mark(Health::Bad, &format!("open: {m}"))
        }
        (_, true) => style.mark(Health::Bad, "open"),
    };
    field("Circuit", circuit);

    // Rows: (tree prefix + name, kind, status, age, info), then lines under a row.
    struct Row {
        name: String,
        kind: &'static str,
        status: String,
        age: String,
        info: String,
        under: Vec<String>,
    }
    let mut rows = Vec::new();
    if let Some(init) = &tree.init {
        let health = match init.phase.as_str() {
            "Succeeded" => Health::Good,
            "Failed" => Health::Bad,
            _ => Health::Pending,
        };
        let verb = if init.phase == "Running" {
            "running for"
        } else {
            "ran"
        };
        rows.push(Row {
            name: init.job.clone(),
            kind: "Job",
            status: style.mark(health, &init.phase),
            age: String::new(),
            info: init
                .duration_seconds
                .map(|d| format!("{verb} {}", age(d)))
                .unwrap_or_default(),
            under: init.message.iter().cloned().collect(),
        });
    }
    for pod in &tree.pods {
        let health = if pod.healthy {
            Health::Good
        } else if pod.state == "Running"
            || pod.state == "Pending"
            || pod.state == "ContainerCreating"
        {
            Health::Pending
        } else {
            Health::Bad
        };
        let mut info = format!("ready:{}", pod.ready);
        if pod.restarts > 0 {
            info.push_str(&format!(",restarts:{}", pod.restarts));
        }
        let under = pod
            .last_abort
            .iter()
            .map(|a| {
                let mut line = format!("last abort: {}", a.reason);
                if let Some(container) = &a.container {
                    line.push_str(&format!(" ({container}"));
                    if let Some(code) = a.exit_code {
                        line.push_str(&format!(", exit {code}"));
                    }
                    line.push(')');
                }
                if let Some(ago_seconds) = a.ago_seconds {
                    line.push_str(&format!(", {} ago", age(ago_seconds)));
                }
                if let Some(hint) = &a.hint {
                    line.push_str(&format!(": {hint}"));
                }
                line
            })
            .collect();
        rows.push(Row {
            name: pod.name.clone(),
            kind: "Pod",
            status: style.mark(health, &pod.state),
            age: pod.age_seconds.map(age).unwrap_or_default(),
            info,
            under,
        });
    }

    let last = rows.len();
    let named: Vec<String> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            format!(
                "{}{}",
                if i + 1 == last {
                    "└──"
                } else {
                    "├──"
                },
                r.name
            )
        })
        .collect();
    let name_width = named
        .iter()
        .map(|n| n.chars().count())
        .chain([tree.name.chars().count(), 4])
        .max()
        .unwrap_or(4);
    let status_width = rows
        .iter()
        .map(|r| visible_width(&r.status))
        .chain([visible_width(&tree.phase), 6])
        .max()
        .unwrap_or(6);
    let pad = |text: &str, width: usize| {
        let fill = width.saturating_sub(visible_width(text));
        format!("{text}{}", " ".repeat(fill))
    };
    out.push('\n');
    out.push_str(&format!(
        "{}  {:<10}  {}  {:>4}  INFO\n",
        pad("NAME", name_width),
        "KIND",
        pad("STATUS", status_width),
        "AGE"
    ));
    out.push_str(
        format!(
            "{}  {:<10}  {}",
            pad(&tree.name, name_width),
            "WorkerPool",
            style.mark(phase_health(&tree.phase), &tree.phase)
        )
        .trim_end(),
    );
    out.push('\n');
    for (i, (row, name)) in rows.iter().zip(&named).enumerate() {
        out.push_str(
            format!(
                "{}  {:<10}  {}  {:>4}  {}",
                pad(name, name_width),
                row.kind,
                pad(&row.status, status_width),
                row.age,
                row.info
            )
            .trim_end(),
        );
        out.push('\n');
        let stem = if i + 1 == last { "   " } else { "│  " };
        for line in &row.under {
            out.push_str(&format!("{stem}└ {}\n", style.dim(line)));
        }
    }

    if !tree.warnings.is_empty() {
        out.push_str("\nWarning Events:\n");
        for event in &tree.warnings {
            let count = if event.count > 1 {
                format!(" (x{})", event.count)
            } else {
                String::new()
            };
            let when = event.ago_seconds.map(age).unwrap_or_else(|| "?".into());
            out.push_str(&format!(
                "  {when:>4}  {}{count}  {}\n",
                event.reason, event.message
            ));
        }
    }
    out
}

/// Columns a string takes on a terminal: colour codes take none.
fn visible_width(text: &str) -> usize {
    let mut width = 0;
    let mut in_escape = false;
    for c in text.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => width += 1,
        }
    }
    width
}
