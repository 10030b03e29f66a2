//! What a look at a pool's pods comes to, once the Events and log tails it asked for are read:
//! the abort ledger, the aborts counted for the first time, and when to look again.

use jiff::{SignedDuration, Timestamp};

use super::detect::{self, PodFindings, WorkerLimits, earliest};
use super::ledger::{self, Observed};

use super::podview::PodView;
use super::reads::{self, LogPlan};
use crate::api::{AbortRecord, AbortSummary, WorkerPool, WorkerPoolStatus};
use crate::pool::policy;

/// The pool's abort ledger after looking at its pods.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub summary: AbortSummary,
    /// Aborts counted for the first time: one Event and one metric increment each.
    pub fresh: Vec<AbortRecord>,
    /// Look again after this long (a settling termination, unhealthy pods to sample, the window
    /// ending).
    pub recheck: Option<SignedDuration>,
    /// Pods waiting for their init containers.
    pub initializing: Option<detect::Initializing>,
    /// Whether the pods stay up.
    pub stability: detect::Stability,
    /// A pod whose app container is stopped with a signal the app server does not drain on.
    pub stop_signal: Option<policy::Conflict>,
}

/// What was read for one look at the pods: the findings with the kubelet Events applied, the runs
/// that ended unseen, and the log tails `plan` asked for (`texts[i]` for `plan.reads[i]`).
pub struct Reads<'a> {
    pub findings: PodFindings,
    pub unseen: Vec<Observed>,
    pub plan: &'a LogPlan,
    pub texts: &'a [Option<String>],
}

/// The ledger after `reads`. `status` is the pool's status as the server holds it: its ledger says
/// what was counted.
pub fn conclude(
    pool: &WorkerPool,
    status: Option<&WorkerPoolStatus>,
    pods: &[&PodView],
    reads: Reads<'_>,
    now: Timestamp,
) -> Report {
    let window = pool.spec.policy.failure.window_seconds;
    let old = status.and_then(|s| s.aborts.as_ref());
    let limits = worker_limits(pool, status);
    let Reads {
        findings,
        unseen,
        plan,
        texts,
    } = reads;
    let settle_after = findings.settle_after;
    let observed = reads::observed(findings.found, unseen, pods, plan, texts, &limits, now);
    let (summary, fresh) = ledger::record(old, observed, now, window);
    let stability = detect::stability(pods, &summary, now, window);
    let recheck = [
        ledger::next_expiry(&summary, now, window),
        plan.next_sample,
        stability.stable_in,
    ]
    .into_iter()
    .fold(settle_after, earliest);
    Report {
        summary,
        fresh,
        recheck,
        initializing: detect::initializing(pods),
        stability,
        stop_signal: pool.spec.app_container_name().and_then(|app| {
            policy::reported_stop_signal(
                pool.spec.runtime,
                app,
                pods.iter()
                    .filter_map(|pod| Some((&*pod.name, pod.app_stop_signal(app)?))),
            )
        }),
    }
}

/// The effective worker timeouts and the app container's memory limit, for worker-level hints.
fn worker_limits(pool: &WorkerPool, status: Option<&WorkerPoolStatus>) -> WorkerLimits {
    let app = pool.spec.app_container_name();
    let memory_limit = pool
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| Some(c.name.as_str()) == app))
        .and_then(policy::memory_limit)
        .map(str::to_string);
    let effective = status.and_then(|s| s.effective.as_ref());
    WorkerLimits {
        timeout_seconds: effective.and_then(|e| e.worker_timeout_seconds),
        healthcheck_timeout_seconds: effective.and_then(|e| e.worker_healthcheck_timeout_seconds),
        memory_limit,
        grace_period_seconds: effective.map(|e| e.termination_grace_period_seconds),
        task_time_limit_seconds: effective.and_then(|e| e.task_time_limit_seconds),
    }
}
