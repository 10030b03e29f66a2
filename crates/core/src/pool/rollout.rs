//! The gates between a spec and its pods — staggered startup, the run-once init Job and the
//! boot-failure circuit breaker — as one pure step: observed state in, next desired state out.
//!
//! - Ramp: the Deployment's replicas grow by `boot.maxConcurrent` once the previous step is Ready
//!   ([`crate::pool::ramp`]); scale-down is immediate.
//! - Init gate: a new template revision reaches the Deployment only after its init Job
//!   succeeded; until then the running revision keeps serving (its template is kept as is). A
//!   failed Job stalls the pool; a new revision or init command runs a new Job, a scale does not.
//! - Circuit breaker: `bootFailureThreshold` boot failures of the current revision within the
//!   window hold the replicas and pause the Deployment; any spec change but a scale closes it.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;

use crate::aborts::ledger;
use crate::api::WorkerPoolStatus;
use crate::api::{
    AbortSummary, CircuitStatus, InitPhase, InitStatus, Reason, Window, parse_time, reason,
};
use crate::pool::Stall;
use crate::pool::derive::{self, Children};
use crate::pool::policy::ValidPool;
use crate::pool::ramp::{self, DeploymentCounts};

/// Abort reasons that count as a failed boot for the circuit breaker. A crash loop is not one of
/// them: it follows the exits beside it, and those say whether the pod failed to boot or failed
/// while serving (an OOM kill, a crash after ready), which no new pod would fix by waiting.
pub const BOOT_FAILURES: [Reason; 4] = [
    Reason::BootFailed,
    Reason::AppLoadFailed,
    Reason::StartupTimeout,
    Reason::WorkerTimeout,
];

/// The init Job of the current revision and init command, as the cluster shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    Absent,
    Running,
    Succeeded,
    /// The Job's `Failed` condition, reason and message.
    Failed(String),
}

/// The live Deployment: its counts and the revision its template carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveDeployment<'a> {
    pub counts: DeploymentCounts,
    pub revision: Option<&'a str>,
}

#[derive(Clone, Debug)]
pub struct Input<'a> {
    pub generation: i64,
    pub desired: i32,
    pub max_concurrent: i32,
    /// Revision of the template the spec asks for ([`crate::pool::derive::revision_of`]).
    pub revision: &'a str,
    /// The spec without `replicas` ([`crate::pool::derive::spec_hash`]): an open circuit waits on it.
    pub spec_hash: &'a str,
    pub live: Option<LiveDeployment<'a>>,
    /// Name and state of this revision's init Job; None when the pool has no `policy.init`.
    pub init_job: Option<(&'a str, JobState)>,
    pub previous_init: Option<&'a InitStatus>,
    pub previous_circuit: Option<&'a CircuitStatus>,
    pub aborts: Option<&'a AbortSummary>,
    pub threshold: i32,
    pub window_seconds: i64,
    pub now: Timestamp,
}

/// The children as they stand and what the gates remember, for [`plan_children`].
pub struct Observed<'a> {
    pub generation: i64,
    pub valid: &'a ValidPool<'a>,
    pub children: &'a Children,
    /// The live Deployment, when the pool owns one.
    pub deployment: Option<&'a Deployment>,
    /// This revision's init Job, when looked for: its name, and the Job when the pool owns one.
    pub init_job: Option<(&'a str, Option<&'a Job>)>,
    pub status: Option<&'a WorkerPoolStatus>,
    pub aborts: &'a AbortSummary,
    pub now: Timestamp,
}

/// What the gates decide for children that stand as `observed` says.
pub fn plan_children(observed: &Observed<'_>) -> Plan {
    let spec = observed.valid.spec();
    let spec_hash = derive::spec_hash(spec);
    let status = observed.status;
    plan(&Input {
        generation: observed.generation,
        desired: spec.replicas,
        max_concurrent: spec.policy.boot.max_concurrent,
        revision: &observed.children.revision,
        spec_hash: &spec_hash,
        live: observed.deployment.map(|d| LiveDeployment {
            counts: DeploymentCounts::of(d),
            revision: derive::revision_in(d),
        }),
        init_job: observed
            .init_job
            .map(|(name, job)| (name, job.map_or(JobState::Absent, job_state))),
        previous_init: status.and_then(|s| s.init.as_ref()),
        previous_circuit: status.and_then(|s| s.circuit.as_ref()),
        aborts: Some(observed.aborts),
        threshold: spec.policy.failure.boot_failure_threshold,
        window_seconds: spec.policy.failure.window_seconds,
        now: observed.now,
    })
}

/// Which pod template the Deployment gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Template {
    /// The one derived from the spec.
    Desired,
    /// The one the live Deployment runs: the new revision waits for its init Job.
    KeepLive,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The Deployment's replicas: the ramp's next target.
    pub ramp_target: i32,
    pub template: Template,
    /// False while the first revision's init Job has not succeeded: no Deployment yet.
    pub apply_deployment: bool,
    pub paused: bool,
    pub create_init_job: bool,
    pub stall: Option<Stall>,
    /// Why the pool waits (reason, message), for `Reconciling`.
    pub waiting: Option<(&'static str, String)>,
    pub init: Option<InitStatus>,
    pub circuit: Option<CircuitStatus>,
}

struct Gate {
    open: bool,
    status: Option<InitStatus>,
    create_job: bool,
    stall: Option<Stall>,
    waiting: Option<(&'static str, String)>,
}

fn init_gate(input: &Input) -> Gate {
    let previous = input.previous_init.cloned();
    let open = |status| Gate {
        open: true,
        status,
        create_job: false,
        stall: None,
        waiting: None,
    };
    let Some((job, state)) = &input.init_job else {
        return open(previous);
    };
    let live_revision = input.live.and_then(|l| l.revision);
    let same_revision = |s: &InitStatus| s.revision == input.revision;
    if live_revision == Some(input.revision)
        || previous
            .as_ref()
            .is_some_and(|p| same_revision(p) && p.phase == InitPhase::Succeeded)
    {
        return open(previous);
    }
    let status = |phase, message| InitStatus {
        revision: input.revision.to_string(),
        generation: input.generation,
        job: job.to_string(),
        phase,
        message,
    };
    let serving = if input.live.is_some() {
        "the running revision keeps serving"
    } else {
        "no pods are started before it succeeds"
    };
    let running = |create_job| Gate {
        open: false,
        status: Some(status(InitPhase::Running, None)),
        create_job,
        stall: None,
        waiting: Some((
            reason::INIT_RUNNING,
            format!(
                "init Job {job} is running for revision {}; {serving}",
                input.revision
            ),
        )),
    };
    let failed = |message: String| Gate {
        open: false,
        stall: Some(Stall {
            reason: reason::INIT_FAILED,
            message: format!(
                "init Job {job} for revision {} failed: {message}; {serving}. Fix the command or the image and change the spec to retry",
                input.revision
            ),
        }),
        status: Some(status(InitPhase::Failed, Some(message))),
        create_job: false,
        waiting: None,
    };
    match state {
        JobState::Succeeded => open(Some(status(InitPhase::Succeeded, None))),
        JobState::Running => running(false),
        JobState::Failed(message) => failed(message.clone()),
        JobState::Absent => match previous {
            // This very Job failed and was since cleaned up: stay failed until the spec changes
            // (a scale is no change: it would run the same failing Job again).
            Some(p) if p.job == *job && p.phase == InitPhase::Failed => {
                failed(p.message.unwrap_or_else(|| "the Job failed".into()))
            }
            _ => running(true),
        },
    }
}

/// Boot failures of the current revision since the circuit last closed, within the window.
pub fn boot_failures(input: &Input) -> usize {
    let since = input
        .previous_circuit
        .and_then(|c| c.since.as_deref())
        .and_then(parse_time);
    let window = Window::new(input.now, input.window_seconds);
    input.aborts.map_or(0, |a| {
        // A boot that could not reach its broker is no fault of the revision: it boots once the
        // broker is back, and a spec change would not help.
        let broker_down: std::collections::HashSet<&str> = a
            .recent
            .iter()
            .filter(|seen| seen.reason == Reason::BrokerUnreachable.as_str())
            .map(|seen| ledger::source_of_key(&seen.key))
            .collect();
        a.recent
            .iter()
            .filter(|seen| seen.revision.as_deref() == Some(input.revision))
            .filter(|seen| BOOT_FAILURES.iter().any(|r| r.as_str() == seen.reason))
            .filter(|seen| !broker_down.contains(ledger::source_of_key(&seen.key)))
            .filter(|seen| {
                parse_time(&seen.time)
                    .is_some_and(|t| window.contains(t) && since.is_none_or(|s| t >= s))
            })
            .count()
    })
}

fn circuit(input: &Input) -> Option<CircuitStatus> {
    let previous = input.previous_circuit;
    match previous {
        // Closed by a change of the spec, never by a scale (which bumps the generation too).
        Some(c) if c.open && c.spec_hash.as_deref().is_some_and(|h| h != input.spec_hash) => {
            return Some(CircuitStatus {
                open: false,
                generation: input.generation,
                spec_hash: Some(input.spec_hash.to_string()),
                since: Some(input.now.to_string()),
                message: None,
            });
        }
        Some(c) if c.open => {
            let mut c = c.clone();
            // A circuit recorded without the hash opened on the spec seen now.
            c.spec_hash
                .get_or_insert_with(|| input.spec_hash.to_string());
            return Some(c);
        }
        _ => {}
    }
    let failures = boot_failures(input);
    let threshold = usize::try_from(input.threshold.max(1)).unwrap_or(1);
    if failures >= threshold {
        return Some(CircuitStatus {
            open: true,
            generation: input.generation,
            spec_hash: Some(input.spec_hash.to_string()),
            since: previous.and_then(|c| c.since.clone()),
            message: Some(format!(
                "{failures} boot failures of revision {} within {}s (threshold {}): the ramp is stopped and the rollout paused; the pods already serving keep serving. Fix the cause and change the spec to retry",
                input.revision, input.window_seconds, input.threshold
            )),
        });
    }
    previous.cloned()
}

/// A Job's state from its conditions.
pub fn job_state(job: &k8s_openapi::api::batch::v1::Job) -> JobState {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let holds = |type_: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
    };
    if holds("Complete").is_some() {
        return JobState::Succeeded;
    }
    if let Some(c) = holds("Failed").or_else(|| holds("FailureTarget")) {
        let reason = c.reason.clone().unwrap_or_else(|| "Failed".into());
        return JobState::Failed(match &c.message {
            Some(message) => format!("{reason}: {message}"),
            None => reason,
        });
    }
    JobState::Running
}

pub fn plan(input: &Input) -> Plan {
    let gate = init_gate(input);
    let circuit = circuit(input);
    let circuit_open = circuit.as_ref().is_some_and(|c| c.open);
    let counts = input.live.map(|l| l.counts);
    let mut replicas = ramp::next_target(input.desired, input.max_concurrent, counts);
    if (!gate.open || circuit_open)
        && let Some(c) = counts
    {
        // Hold: scale-down still goes through, scale-up waits.
        replicas = replicas.min(c.ramp_target.max(0));
    }
    let circuit_stall = circuit.as_ref().filter(|c| c.open).map(|c| Stall {
        reason: reason::BOOT_FAILURE_THRESHOLD,
        message: c.message.clone().unwrap_or_default(),
    });
    Plan {
        ramp_target: replicas,
        template: if gate.open {
            Template::Desired
        } else {
            Template::KeepLive
        },
        apply_deployment: gate.open || input.live.is_some(),
        paused: circuit_open,
        create_init_job: gate.create_job,
        stall: gate.stall.or(circuit_stall),
        waiting: gate.waiting,
        init: gate.status,
        circuit,
    }
}
