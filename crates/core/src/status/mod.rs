//! Computes `WorkerPool.status` from what was observed and applied. Pure: the clock is an input.
//!
//! Conditions follow kstatus: `Ready`, `Reconciling` (abnormal-true while work is in progress) and
//! `Stalled` (abnormal-true when no progress is possible without a change), plus `Degraded` and
//! `PolicyConflict`. Every type is always present once; `lastTransitionTime` moves only when a
//! condition's status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::aborts::detect::{Initializing, STABLE_AFTER, Stability};
use crate::aborts::ledger;
use crate::api::reason;
use crate::api::{
    AbortSummary, CircuitStatus, EffectiveSettings, InitStatus, Phase, WorkerPoolStatus, condition,
};
use crate::pool::Stall;
use crate::pool::policy::Conflict;
use crate::pool::ramp::DeploymentCounts;

mod notices;
mod pacing;

pub use notices::{Notice, READY_NOTICE, RampChange, notices};
pub use pacing::{PROGRESS_INTERVAL, StatusDecision, decide, is_progress_only, progress_wait};

/// Everything the status is computed from.
#[derive(Clone, Debug)]
pub struct Observation<'a> {
    pub generation: i64,
    pub desired_replicas: i32,
    pub max_concurrent: i32,
    pub selector: String,
    pub deployment: Option<DeploymentCounts>,
    /// The replicas the Deployment was asked for by this reconcile; None when nothing was applied.
    pub ramp_target: Option<i32>,
    /// The effective numbers applied; None keeps the previously published ones.
    pub effective: Option<&'a EffectiveSettings>,
    pub conflicts: &'a [Conflict],
    pub stall: Option<&'a Stall>,
    /// The abort ledger after this reconcile; None keeps the previous one.
    pub aborts: Option<&'a AbortSummary>,
    pub window_seconds: i64,
    /// The gates' state after this reconcile; None keeps the previous one.
    pub gates: Option<Gates<'a>>,
    /// Pods waiting for their init containers.
    pub initializing: Option<&'a Initializing>,
    /// Whether the pods stay up; None when not looked at.
    pub stability: Option<&'a Stability>,
}

/// What the init gate and the circuit breaker decided.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gates<'a> {
    pub revision: Option<&'a str>,
    pub init: Option<&'a InitStatus>,
    pub circuit: Option<&'a CircuitStatus>,
    /// Why the pool waits (reason, message), for `Reconciling`.
    pub waiting: Option<(&'a str, &'a str)>,
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: i64,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: Some(generation),
        last_transition_time: now.clone(),
    }
}

/// Keeps the old `lastTransitionTime` unless the condition's status changed.
fn keep_transition_time(mut new: Condition, old: &[Condition]) -> Condition {
    if let Some(previous) = old.iter().find(|c| c.type_ == new.type_)
        && previous.status == new.status
    {
        new.last_transition_time = previous.last_transition_time.clone();
    }
    new
}

/// Progress of the rollout, which pods wait for their init containers, and whether the pods
/// stay up: `(ready, reason, message)`. Pods that keep crashing are never Ready, whatever the
/// counts say, and ready pods count once they have run [`STABLE_AFTER`].
fn progress<'a>(obs: &Observation<'a>) -> (bool, &'a str, String) {
    let (ready, reason, message) = init_progress(obs);
    let Some(stability) = obs.stability else {
        return (ready, reason, message);
    };
    if stability.crash_looping > 0 {
        let mut why = format!(
            "{} {} crashing: {}",
            stability.crash_looping,
            if stability.crash_looping == 1 {
                "pod keeps"
            } else {
                "pods keep"
            },
            stability.why.as_deref().unwrap_or_default()
        );
        if !ready {
            why.push_str(&format!("; {message}"));
        }
        return (false, reason::CRASH_LOOPING, why);
    }
    // The watch caches lag each other: the Deployment may count pods ready that the pod cache
    // does not show yet (its watch relisting, say). Judged on the pods it holds, the pool would
    // read Ready now and starting once they show; it waits for them instead.
    let counted = obs
        .deployment
        .map_or(0, |d| usize::try_from(d.ready).unwrap_or(0));
    if ready && stability.ready < counted {
        return (
            false,
            reason::STARTING,
            format!(
                "{message}; the Deployment counts {counted} ready pods, {} seen yet",
                stability.ready
            ),
        );
    }
    if ready && stability.starting > 0 {
        return (
            false,
            reason::STARTING,
            format!(
                "{message}; {} {} started less than {}s ago",
                stability.starting,
                if stability.starting == 1 {
                    "pod"
                } else {
                    "pods"
                },
                STABLE_AFTER.as_secs()
            ),
        );
    }
    (ready, reason, message)
}

/// Progress of the rollout, and which pods wait for their init containers.
fn init_progress<'a>(obs: &Observation<'a>) -> (bool, &'a str, String) {
    let (ready, reason, message) = rollout_progress(obs);
    match obs.initializing {
        Some(init) if !ready && init.stuck > 0 => (
            false,
            reason::INIT_FAILING,
            format!(
                "{message}; {} of {} pods waiting for init containers are stuck: {}",
                init.stuck,
                init.pods,
                init.why.as_deref().unwrap_or_default()
            ),
        ),
        Some(init) if !ready => (
            false,
            reason,
            format!("{message}; {} pods running init containers", init.pods),
        ),
        _ => (ready, reason, message),
    }
}

/// Progress of the rollout alone.
fn rollout_progress<'a>(obs: &Observation<'a>) -> (bool, &'a str, String) {
    if let Some((reason, message)) = obs.gates.and_then(|g| g.waiting) {
        return (false, reason, message.to_string());
    }
    let desired = obs.desired_replicas;
    let Some(dep) = obs.deployment else {
        return (
            false,
            reason::CREATING,
            "waiting for the Deployment to be created".into(),
        );
    };
    let target = obs.ramp_target.unwrap_or(desired);
    let ramping = || {
        (
            false,
            reason::RAMPING,
            format!(
                "ramping up: {} of {desired} replicas ready, target {target} (at most {} booting at once)",
                dep.ready, obs.max_concurrent
            ),
        )
    };
    if target < desired {
        return ramping();
    }
    if !dep.current {
        return (
            false,
            reason::PROGRESSING,
            "waiting for the Deployment controller to observe the latest spec".into(),
        );
    }
    // Pods of an older template are still running: a rollout, not a ramp.
    if dep.updated < dep.replicas {
        return (
            false,
            reason::ROLLING_OUT,
            format!(
                "rolling out: {} of {desired} replicas updated, {} ready",
                dep.updated, dep.ready
            ),
        );
    }
    if dep.replicas > desired {
        return (
            false,
            reason::SCALING_DOWN,
            format!("scaling down: {} pods, {desired} desired", dep.replicas),
        );
    }
    if dep.ready < desired || dep.available < desired {
        if dep.replicas < desired {
            return ramping();
        }
        return (
            false,
            reason::PROGRESSING,
            format!(
                "{} of {desired} replicas ready, {} available",
                dep.ready, dep.available
            ),
        );
    }
    // A worker with nothing to probe is Ready as soon as its container runs: say so.
    let unprobed = obs.effective.is_some_and(|e| e.readiness_probe.is_none());
    (
        true,
        reason::ALL_READY,
        format!(
            "{} of {desired} replicas ready{}",
            dep.ready,
            if unprobed {
                " (no readiness probe: ready means the container is running)"
            } else {
                ""
            }
        ),
    )
}

pub fn compute(old: Option<&WorkerPoolStatus>, obs: &Observation, now: &Time) -> WorkerPoolStatus {
    let generation = obs.generation;
    let old_conditions: &[Condition] = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let (progress_ok, progress_reason, progress_message) = progress(obs);

    let make = |type_: &str, status: bool, reason: &str, message: String| {
        condition(type_, status, reason, message, generation, now)
    };
    let (ready, reconciling, stalled) = match obs.stall {
        Some(stall) => (
            make(condition::READY, false, stall.reason, stall.message.clone()),
            make(
                condition::RECONCILING,
                false,
                stall.reason,
                stall.message.clone(),
            ),
            make(
                condition::STALLED,
                true,
                stall.reason,
                stall.message.clone(),
            ),
        ),
        None => (
            make(
                condition::READY,
                progress_ok,
                progress_reason,
                progress_message.clone(),
            ),
            if progress_ok {
                make(
                    condition::RECONCILING,
                    false,
                    reason::CONVERGED,
                    String::new(),
                )
            } else {
                make(
                    condition::RECONCILING,
                    true,
                    progress_reason,
                    progress_message,
                )
            },
            make(
                condition::STALLED,
                false,
                reason::PROGRESSING,
                String::new(),
            ),
        ),
    };
    let aborts = obs
        .aborts
        .cloned()
        .or_else(|| old.and_then(|s| s.aborts.clone()))
        .filter(|a| *a != AbortSummary::default());
    let degraded = match aborts
        .as_ref()
        .and_then(|a| ledger::degraded(a, obs.window_seconds))
    {
        Some((reason, message)) => make(condition::DEGRADED, true, &reason, message),
        None => make(condition::DEGRADED, false, reason::NO_ABORTS, String::new()),
    };
    let conflict = if obs.conflicts.is_empty() {
        make(
            condition::POLICY_CONFLICT,
            false,
            reason::CONSISTENT,
            String::new(),
        )
    } else {
        let message = obs
            .conflicts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        make(
            condition::POLICY_CONFLICT,
            true,
            reason::TEMPLATE_OVERRIDE,
            message,
        )
    };
    let degraded_now = degraded.status == "True";
    let conditions: Vec<Condition> = [ready, reconciling, stalled, degraded, conflict]
        .into_iter()
        .map(|c| keep_transition_time(c, old_conditions))
        .collect();

    let phase = if obs.stall.is_some() {
        Phase::Stalled
    } else if obs
        .deployment
        .is_none_or(|d| d.replicas == 0 && obs.desired_replicas > 0)
    {
        Phase::Pending
    } else if progress_reason == reason::CRASH_LOOPING {
        Phase::Degraded
    } else if !progress_ok {
        Phase::Progressing
    } else if degraded_now {
        Phase::Degraded
    } else {
        Phase::Ready
    };

    let dep = obs.deployment.unwrap_or_default();
    WorkerPoolStatus {
        observed_generation: generation,
        replicas: dep.replicas,
        ready_replicas: dep.ready,
        updated_replicas: dep.updated,
        available_replicas: dep.available,
        ramp_target: obs.ramp_target.or_else(|| old.and_then(|s| s.ramp_target)),
        selector: Some(obs.selector.clone()),
        phase: Some(phase),
        conditions,
        effective: obs
            .effective
            .cloned()
            .or_else(|| old.and_then(|s| s.effective.clone())),
        aborts,
        revision: match obs.gates {
            Some(g) => g.revision.map(str::to_string),
            None => old.and_then(|s| s.revision.clone()),
        },
        init: match obs.gates {
            Some(g) => g.init.cloned(),
            None => old.and_then(|s| s.init.clone()),
        },
        circuit: match obs.gates {
            Some(g) => g.circuit.cloned(),
            None => old.and_then(|s| s.circuit.clone()),
        },
    }
}

/// The condition of a type, if present.
pub fn find<'a>(status: Option<&'a WorkerPoolStatus>, type_: &str) -> Option<&'a Condition> {
    status?.conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of this type is present and `True`.
pub fn is_true(status: Option<&WorkerPoolStatus>, type_: &str) -> bool {
    find(status, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(1_800_000_000 + secs).expect("valid timestamp"))
    }

    fn observation(deployment: Option<DeploymentCounts>, target: i32) -> Observation<'static> {
        Observation {
            generation: 3,
            desired_replicas: 4,
            max_concurrent: 2,
            selector: "workerpool.dev/pool=api".into(),
            deployment,
            ramp_target: Some(target),
            effective: None,
            conflicts: &[],
            stall: None,
            aborts: None,
            window_seconds: 600,
            gates: None,
            initializing: None,
            stability: None,
        }
    }

    #[test]
    fn a_pool_without_a_readiness_probe_says_what_ready_means() {
        let effective = EffectiveSettings {
            termination_grace_period_seconds: 40,
            termination_grace_period_source: crate::api::Source::Policy,
            probe_kill_grace_period_seconds: None,
            pre_stop_sleep_seconds: Some(5),
            startup_probe: None,
            readiness_probe: None,
            liveness_probe: None,
            worker_timeout_seconds: None,
            worker_class: None,
            worker_healthcheck_timeout_seconds: None,
            graceful_timeout_seconds: None,
            max_surge: 2,
            max_unavailable: 0,
            disruption_budget: crate::api::DisruptionBudget::Applied,
            concurrency: None,
            concurrency_source: None,
            task_time_limit_seconds: None,
            max_memory_per_child_kib: None,
        };
        let obs = Observation {
            effective: Some(&effective),
            ..observation(Some(ready_deployment(4)), 4)
        };
        assert_eq!(
            progress(&obs),
            (
                true,
                reason::ALL_READY,
                "4 of 4 replicas ready (no readiness probe: ready means the container is running)"
                    .into()
            )
        );
        // With a probe, or with nothing applied yet to go by, the plain count.
        assert_eq!(
            progress(&observation(Some(ready_deployment(4)), 4)).2,
            "4 of 4 replicas ready"
        );
    }

    #[test]
    fn a_pool_whose_pods_keep_crashing_is_never_ready() {
        let looping = Stability {
            crash_looping: 2,
            why: Some("pod api-a container app ended 3 times within 600s of each other".into()),
            ..Stability::default()
        };
        let obs = Observation {
            stability: Some(&looping),
            ..observation(Some(ready_deployment(4)), 4)
        };
        let status = compute(None, &obs, &time(0));
        let ready = get(&status, condition::READY);
        assert_eq!(
            ready.status, "False",
            "every pod happens to be ready right now"
        );
        assert_eq!(ready.reason, reason::CRASH_LOOPING);
        assert_eq!(
            ready.message,
            "2 pods keep crashing: pod api-a container app ended 3 times within 600s of each other"
        );
        // kstatus reads Reconciling, not Ready: the pool is in progress, never Current.
        assert_eq!(get(&status, condition::RECONCILING).status, "True");
        assert_eq!(status.phase, Some(Phase::Degraded));
        // An occasional abort (one per container) leaves Ready alone.
        let steady = Stability {
            ready: 4,
            ..Stability::default()
        };
        let obs = Observation {
            stability: Some(&steady),
            ..observation(Some(ready_deployment(4)), 4)
        };
        assert_eq!(
            get(&compute(None, &obs, &time(0)), condition::READY).status,
            "True"
        );
    }

    #[test]
    fn ready_pods_count_once_they_have_run_long_enough() {
        let young = Stability {
            starting: 1,
            stable_in: Some(jiff::SignedDuration::from_secs(4)),
            ready: 4,
            ..Stability::default()
        };
        let obs = Observation {
            stability: Some(&young),
            ..observation(Some(ready_deployment(4)), 4)
        };
        let status = compute(None, &obs, &time(0));
        let ready = get(&status, condition::READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reason::STARTING)
        );
        assert_eq!(
            ready.message,
            "4 of 4 replicas ready; 1 pod started less than 15s ago"
        );
        assert_eq!(status.phase, Some(Phase::Progressing));
        // While the rollout itself is in progress, its own reason says more.
        let obs = Observation {
            stability: Some(&young),
            ..observation(Some(ready_deployment(2)), 2)
        };
        assert_eq!(progress(&obs).1, reason::RAMPING);
    }

    #[test]
    fn a_pool_waits_for_the_ready_pods_the_deployment_counts_to_be_seen() {
        let lagging = Stability {
            ready: 2,
            ..Stability::default()
        };
        let obs = Observation {
            stability: Some(&lagging),
            ..observation(Some(ready_deployment(4)), 4)
        };
        let status = compute(None, &obs, &time(0));
        let ready = get(&status, condition::READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reason::STARTING)
        );
        assert_eq!(
            ready.message,
            "4 of 4 replicas ready; the Deployment counts 4 ready pods, 2 seen yet"
        );
        let caught_up = Stability {
            ready: 4,
            ..Stability::default()
        };
        let obs = Observation {
            stability: Some(&caught_up),
            ..observation(Some(ready_deployment(4)), 4)
        };
        assert!(progress(&obs).0);
    }

    #[test]
    fn pods_stuck_in_their_init_containers_are_named() {
        let booting = DeploymentCounts {
            ready: 1,
            available: 1,
            ..ready_deployment(4)
        };
        let stuck = Initializing {
            pods: 3,
            stuck: 2,
            why: Some(
                "pod api-b init container migrate CrashLoopBackOff after exit 1, restarted 4 times"
                    .into(),
            ),
        };
        let obs = Observation {
            initializing: Some(&stuck),
            ..observation(Some(booting), 4)
        };
        let (ready, reason, message) = progress(&obs);
        assert!(!ready);
        assert_eq!(reason, reason::INIT_FAILING);
        assert_eq!(
            message,
            "1 of 4 replicas ready, 1 available; 2 of 3 pods waiting for init containers are stuck: \
             pod api-b init container migrate CrashLoopBackOff after exit 1, restarted 4 times"
        );
        let running = Initializing {
            pods: 3,
            ..Initializing::default()
        };
        let obs = Observation {
            initializing: Some(&running),
            ..observation(Some(booting), 4)
        };
        assert_eq!(
            progress(&obs),
            (
                false,
                reason::PROGRESSING,
                "1 of 4 replicas ready, 1 available; 3 pods running init containers".into()
            )
        );
        // A ready pool says nothing of a pod initialising during a scale-up it does not wait for.
        let obs = Observation {
            initializing: Some(&stuck),
            ..observation(Some(ready_deployment(4)), 4)
        };
        assert_eq!(progress(&obs).1, reason::ALL_READY);
    }

    fn ready_deployment(n: i32) -> DeploymentCounts {
        DeploymentCounts {
            ramp_target: n,
            replicas: n,
            ready: n,
            updated: n,
            available: n,
            current: true,
        }
    }

    fn get<'a>(s: &'a WorkerPoolStatus, t: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .expect("condition present")
    }

    #[test]
    fn exactly_one_condition_per_type_with_observed_generation() {
        let s = compute(None, &observation(None, 2), &time(0));
        let mut types: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        types.sort_unstable();
        assert_eq!(
            types,
            [
                "Degraded",
                "PolicyConflict",
                "Ready",
                "Reconciling",
                "Stalled"
            ]
        );
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
        assert_eq!(s.observed_generation, 3);
        assert_eq!(s.phase, Some(Phase::Pending));
    }

    #[test]
    fn more_pods_ready_is_progress_but_a_flip_ramp_step_or_abort_is_not() {
        let deployment = |ready| DeploymentCounts {
            ramp_target: 4,
            replicas: 4,
            ready,
            updated: 4,
            available: ready,
            current: true,
        };
        let one = compute(None, &observation(Some(deployment(1)), 4), &time(0));
        let two = compute(Some(&one), &observation(Some(deployment(2)), 4), &time(1));
        assert_ne!(one, two);
        assert!(is_progress_only(&one, &two), "{two:?}");

        let all = compute(Some(&two), &observation(Some(deployment(4)), 4), &time(2));
        assert!(!is_progress_only(&two, &all), "Ready flips to True");

        let mut waiting = one.clone();
        if let Some(ready) = waiting
            .conditions
            .iter_mut()
            .find(|c| c.type_ == condition::READY)
        {
            ready.reason = reason::PROGRESSING.into();
        }
        assert!(
            is_progress_only(&one, &waiting),
            "a new reason for not being Ready yet"
        );

        let mut stepped = two.clone();
        stepped.ramp_target = Some(3);
        assert!(!is_progress_only(&two, &stepped), "a ramp step");

        let mut aborted = two.clone();
        aborted.aborts = Some(AbortSummary {
            counts: vec![crate::api::AbortCount {
                reason: "OOMKilled".into(),
                count: 1,
            }],
            ..AbortSummary::default()
        });
        assert!(!is_progress_only(&two, &aborted), "an abort");

        let mut reworded = two.clone();
        if let Some(stalled) = reworded
            .conditions
            .iter_mut()
            .find(|c| c.type_ == condition::STALLED)
        {
            stalled.message = "something else".into();
        }
        assert!(
            !is_progress_only(&two, &reworded),
            "only Ready and Reconciling carry counts in their wording"
        );
    }

    #[test]
    fn progress_waits_out_the_interval_since_the_last_write() {
        let at = |secs: i64| jiff::Timestamp::from_second(1_800_000_000 + secs).expect("time");
        assert_eq!(progress_wait(None, at(0)), None, "never written");
        assert_eq!(
            progress_wait(Some(at(0)), at(0)),
            Some(PROGRESS_INTERVAL),
            "just written"
        );
        let half = jiff::Timestamp::from_millisecond(1_800_000_000_000 + 500).expect("time");
        assert_eq!(
            progress_wait(Some(at(0)), half),
            Some(PROGRESS_INTERVAL - std::time::Duration::from_millis(500))
        );
        let interval = PROGRESS_INTERVAL.as_secs() as i64;
        assert_eq!(progress_wait(Some(at(0)), at(interval)), None);
        assert_eq!(
            progress_wait(Some(at(10)), at(0)),
            None,
            "a clock that went back holds nothing"
        );
    }

    #[test]
    fn ramping_then_ready() {
        let ramping = compute(None, &observation(Some(ready_deployment(2)), 4), &time(0));
        assert_eq!(get(&ramping, condition::READY).status, "False");
        assert_eq!(
            get(&ramping, condition::RECONCILING).reason,
            reason::RAMPING
        );
        assert_eq!(ramping.phase, Some(Phase::Progressing));
        let ready = compute(
            Some(&ramping),
            &observation(Some(ready_deployment(4)), 4),
            &time(60),
        );
        assert_eq!(get(&ready, condition::READY).status, "True");
        assert_eq!(get(&ready, condition::RECONCILING).status, "False");
        assert_eq!(ready.phase, Some(Phase::Ready));
        assert_eq!(get(&ready, condition::READY).last_transition_time, time(60));
        assert_eq!(
            get(&ready, condition::STALLED).last_transition_time,
            time(0),
            "no flip, no new time"
        );
    }

    #[test]
    fn unchanged_observation_gives_an_identical_status() {
        let first = compute(None, &observation(Some(ready_deployment(4)), 4), &time(0));
        let again = compute(
            Some(&first),
            &observation(Some(ready_deployment(4)), 4),
            &time(500),
        );
        assert_eq!(first, again);
        assert!(
            notices(
                Some(&first),
                &again,
                Some(RampChange {
                    previous: Some(4),
                    target: 4,
                    desired: 4
                })
            )
            .is_empty()
        );
    }

    #[test]
    fn rollout_and_scale_down_are_told_apart() {
        let rollout = DeploymentCounts {
            ramp_target: 4,
            replicas: 6,
            ready: 5,
            updated: 2,
            available: 5,
            current: true,
        };
        let s = compute(None, &observation(Some(rollout), 4), &time(0));
        assert_eq!(get(&s, condition::READY).reason, reason::ROLLING_OUT);
        let s = compute(None, &observation(Some(ready_deployment(6)), 4), &time(0));
        assert_eq!(get(&s, condition::READY).reason, reason::SCALING_DOWN);
    }

    #[test]
    fn stall_is_kstatus_stalled_and_announced_once() {
        let stall = Stall {
            reason: reason::INVALID_SPEC,
            message: "spec.container: names no container".into(),
        };
        let mut obs = observation(Some(ready_deployment(4)), 4);
        obs.stall = Some(&stall);
        let s = compute(None, &obs, &time(0));
        assert_eq!(get(&s, condition::STALLED).status, "True");
        assert_eq!(get(&s, condition::READY).status, "False");
        assert_eq!(get(&s, condition::RECONCILING).status, "False");
        assert_eq!(s.phase, Some(Phase::Stalled));
        let first = notices(None, &s, None);
        assert_eq!(first.len(), 1);
        assert!(first[0].warning && first[0].reason == reason::INVALID_SPEC);
        assert!(notices(Some(&s), &s, None).is_empty());
    }

    #[test]
    fn ramp_steps_and_creation_are_announced() {
        let s = compute(None, &observation(Some(ready_deployment(2)), 4), &time(0));
        let n = notices(
            None,
            &s,
            Some(RampChange {
                previous: Some(2),
                target: 4,
                desired: 4,
            }),
        );
        assert_eq!(
            n.iter().map(|n| n.reason.as_str()).collect::<Vec<_>>(),
            ["RampStep"]
        );
        let n = notices(
            None,
            &s,
            Some(RampChange {
                previous: None,
                target: 2,
                desired: 4,
            }),
        );
        assert_eq!(n[0].reason, "Created");
    }
}
