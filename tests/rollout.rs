//! The rollout gates as a pure state machine: ramp, init gate and circuit breaker, over simulated
//! pod readiness, Job results and boot failures.

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use workerpool_core::api::{AbortSummary, CircuitStatus, InitPhase, InitStatus, SeenAbort, reason};
use workerpool_core::pool::ramp::DeploymentCounts;
use workerpool_core::pool::rollout::{
    Input, JobState, LiveDeployment, Plan, Template, job_state, plan,
};

const NEW: &str = "bbbbbbbbbb";
const OLD: &str = "aaaaaaaaaa";
const SPEC: &str = "5555555555";

fn now() -> Timestamp {
    "2026-11-22T10:10:00Z".parse().expect("time")
}

fn ago(seconds: i64) -> String {
    (now() - SignedDuration::from_secs(seconds)).to_string()
}

fn live(target: i32, ready: i32, revision: &str) -> Option<LiveDeployment<'_>> {
    Some(LiveDeployment {
        counts: DeploymentCounts {
            ramp_target: target,
            ready,
            current: true,
            ..DeploymentCounts::default()
        },
        revision: Some(revision),
    })
}

fn input<'a>() -> Input<'a> {
    Input {
        generation: 2,
        desired: 12,
        max_concurrent: 3,
        revision: NEW,
        spec_hash: SPEC,
        live: None,
        init_job: None,
        previous_init: None,
        previous_circuit: None,
        aborts: None,
        threshold: 3,
        window_seconds: 600,
        now: now(),
    }
}

fn failures(n: usize, revision: &str, reason: &str) -> AbortSummary {
    AbortSummary {
        recent: (0..n)
            .map(|i| SeenAbort {
                key: format!("uid-{i}/app/0"),
                reason: reason.into(),
                time: ago(60),
                revision: Some(revision.into()),
            })
            .collect(),
        ..AbortSummary::default()
    }
}

#[test]
fn ramp_twelve_replicas_three_at_a_time() {
    let mut i = input();
    let first = plan(&i);
    assert_eq!((first.ramp_target, first.apply_deployment), (3, true));
    let mut targets = vec![first.ramp_target];
    let mut target = first.ramp_target;
    while target < 12 {
        // Not all ready: hold.
        i.live = live(target, target - 1, NEW);
        assert_eq!(plan(&i).ramp_target, target);
        i.live = live(target, target, NEW);
        target = plan(&i).ramp_target;
        targets.push(target);
    }
    assert_eq!(targets, [3, 6, 9, 12]);
    // Scale-down is immediate.
    i.desired = 4;
    i.live = live(12, 12, NEW);
    assert_eq!(plan(&i).ramp_target, 4);
}

#[test]
fn first_revision_waits_for_its_init_job() {
    let mut i = input();
    i.init_job = Some(("api-init-bbbbbbbbbb-g2", JobState::Absent));
    let p = plan(&i);
    assert!(p.create_init_job && !p.apply_deployment);
    assert_eq!(p.init.as_ref().map(|s| s.phase), Some(InitPhase::Running));
    assert_eq!(p.waiting.as_ref().map(|w| w.0), Some(reason::INIT_RUNNING));

    i.init_job = Some(("api-init-bbbbbbbbbb-g2", JobState::Running));
    let p = plan(&i);
    assert!(!p.create_init_job && !p.apply_deployment);

    i.init_job = Some(("api-init-bbbbbbbbbb-g2", JobState::Succeeded));
    let p = plan(&i);
    assert!(p.apply_deployment && p.waiting.is_none());
    assert_eq!((p.ramp_target, p.template), (3, Template::Desired));
    assert_eq!(p.init.as_ref().map(|s| s.phase), Some(InitPhase::Succeeded));
}

#[test]
fn a_new_revision_keeps_the_old_one_serving_until_init_succeeds() {
    let mut i = input();
    i.live = live(12, 12, OLD);
    i.init_job = Some(("api-init-bbbbbbbbbb-g2", JobState::Running));
    let p = plan(&i);
    assert_eq!(
        (p.apply_deployment, p.template, p.ramp_target),
        (true, Template::KeepLive, 12)
    );
    // Scaling up waits for the new revision, scaling down does not.
    i.desired = 20;
    assert_eq!(plan(&i).ramp_target, 12);
    i.desired = 6;
    assert_eq!(plan(&i).ramp_target, 6);
}

#[test]
fn a_failed_init_stalls_until_a_new_revision_and_a_scale_does_not_retry_it() {
    let mut i = input();
    i.live = live(12, 12, OLD);
    i.init_job = Some((
        "api-init-bbbbbbbbbb-11111",
        JobState::Failed(
            "BackoffLimitExceeded: Job has reached the specified backoff limit".into(),
        ),
    ));
    let p = plan(&i);
    let stall = p.stall.clone().expect("stalled");
    assert_eq!(stall.reason, reason::INIT_FAILED);
    assert!(
        stall.message.contains("BackoffLimitExceeded") && stall.message.contains("keeps serving"),
        "{}",
        stall.message
    );
    assert_eq!(p.template, Template::KeepLive);
    let failed = p.init.clone().expect("init status");

    // The finished Job was cleaned up: still failed for this revision.
    i.init_job = Some(("api-init-bbbbbbbbbb-11111", JobState::Absent));
    i.previous_init = Some(&failed);
    let p = plan(&i);
    assert!(!p.create_init_job);
    assert_eq!(p.stall.map(|s| s.reason), Some(reason::INIT_FAILED));

    // `kubectl scale` bumps the generation, not the revision: the failed Job is not run again.
    i.generation += 1;
    i.desired = 20;
    let p = plan(&i);
    assert!(!p.create_init_job);
    assert_eq!(p.stall.map(|s| s.reason), Some(reason::INIT_FAILED));

    // A changed init command (same revision, new Job name) runs a new Job.
    i.init_job = Some(("api-init-bbbbbbbbbb-22222", JobState::Absent));
    let p = plan(&i);
    assert!(p.create_init_job && p.stall.is_none());

    // So does a new revision.
    i.revision = "cccccccccc";
    i.init_job = Some(("api-init-cccccccccc-11111", JobState::Absent));
    let p = plan(&i);
    assert!(p.create_init_job && p.stall.is_none());
}

#[test]
fn init_that_succeeded_before_is_not_run_again() {
    let done = InitStatus {
        revision: NEW.into(),
        generation: 2,
        job: "api-init-bbbbbbbbbb-11111".into(),
        phase: InitPhase::Succeeded,
        message: None,
    };
    let mut i = input();
    i.generation = 5;
    i.previous_init = Some(&done);
    i.live = live(6, 6, NEW);
    i.init_job = Some(("api-init-bbbbbbbbbb-11111", JobState::Absent));
    let p = plan(&i);
    assert!(!p.create_init_job && p.stall.is_none());
    assert_eq!(p.template, Template::Desired);
}

#[test]
fn boot_failures_of_the_current_revision_open_the_circuit() {
    let mut i = input();
    i.live = live(6, 3, NEW);
    let below = failures(2, NEW, "BootFailed");
    i.aborts = Some(&below);
    assert!(plan(&i).circuit.is_none_or(|c| !c.open));

    let other_revision = failures(5, OLD, "BootFailed");
    i.aborts = Some(&other_revision);
    assert!(plan(&i).circuit.is_none_or(|c| !c.open));

    let not_boot = failures(5, NEW, "OOMKilled");
    i.aborts = Some(&not_boot);
    assert!(plan(&i).circuit.is_none_or(|c| !c.open));

    let at = failures(3, NEW, "StartupTimeout");
    i.aborts = Some(&at);
    i.live = live(6, 6, NEW);
    let p = plan(&i);
    assert!(p.paused);
    assert_eq!(p.ramp_target, 6, "the ramp stops");
    let stall = p.stall.expect("stalled");
    assert_eq!(stall.reason, reason::BOOT_FAILURE_THRESHOLD);
    assert!(
        stall
            .message
            .starts_with("3 boot failures of revision bbbbbbbbbb within 600s")
    );
}

#[test]
fn boots_that_could_not_reach_the_broker_do_not_open_the_circuit() {
    let state = |n: usize| SeenAbort {
        key: format!("uid-{n}/app/BrokerUnreachable"),
        reason: "BrokerUnreachable".into(),
        time: ago(70),
        revision: Some(NEW.into()),
    };
    let mut broker_down = failures(3, NEW, "StartupTimeout");
    broker_down.recent.extend([state(0), state(1)]);
    let mut i = input();
    i.live = live(6, 6, NEW);
    i.aborts = Some(&broker_down);
    assert!(
        plan(&i).circuit.is_none_or(|c| !c.open),
        "only uid-2's boot counts"
    );
    let mut more = broker_down.clone();
    more.recent.extend(
        failures(2, NEW, "StartupTimeout")
            .recent
            .into_iter()
            .map(|mut s| {
                s.key = s.key.replace("uid-", "uid-x");
                s
            }),
    );
    i.aborts = Some(&more);
    assert!(
        plan(&i).circuit.is_some_and(|c| c.open),
        "three of other pods do"
    );
}

#[test]
fn a_spec_change_closes_the_circuit_and_counts_afresh_and_a_scale_does_not() {
    let open = CircuitStatus {
        open: true,
        generation: 2,
        spec_hash: Some(SPEC.into()),
        since: None,
        message: Some("3 boot failures".into()),
    };
    let old_failures = failures(3, NEW, "BootFailed");
    let mut i = input();
    i.live = live(6, 4, NEW);
    i.aborts = Some(&old_failures);
    i.previous_circuit = Some(&open);
    // Same revision: stays open, even with the pods recovering.
    let p = plan(&i);
    assert!(p.paused && p.stall.is_some());

    // A scale bumps the generation: still open, no pod added.
    i.generation = 3;
    i.desired = 12;
    let p = plan(&i);
    assert!(p.paused && p.stall.is_some());
    assert_eq!(p.ramp_target, 6);

    // Any other change of the spec closes it, a change of the threshold too.
    i.generation = 4;
    i.spec_hash = "6666666666";
    let p = plan(&i);
    let closed = p.circuit.clone().expect("circuit");
    assert!(!closed.open && !p.paused && p.stall.is_none());
    assert_eq!(closed.since.as_deref(), Some(now().to_string().as_str()));
    assert_eq!(closed.spec_hash.as_deref(), Some("6666666666"));

    // The failures before the close no longer count.
    i.previous_circuit = Some(&closed);
    assert!(!plan(&i).paused);
}

#[test]
fn a_circuit_recorded_without_a_spec_hash_stays_open_on_the_current_spec() {
    let open = CircuitStatus {
        open: true,
        generation: 2,
        spec_hash: None,
        since: None,
        message: Some("3 boot failures".into()),
    };
    let mut i = input();
    i.live = live(6, 4, NEW);
    i.previous_circuit = Some(&open);
    i.generation = 7;
    let p = plan(&i);
    assert!(p.paused && p.stall.is_some());
    assert_eq!(
        p.circuit.and_then(|c| c.spec_hash).as_deref(),
        Some(SPEC),
        "it adopts the spec it stays open on"
    );
}

#[test]
fn job_conditions_become_states() {
    let job = |conditions: serde_json::Value| {
        serde_json::from_value::<k8s_openapi::api::batch::v1::Job>(serde_json::json!({
            "metadata": {"name": "j"}, "status": {"conditions": conditions}
        }))
        .expect("job")
    };
    assert_eq!(job_state(&job(serde_json::json!([]))), JobState::Running);
    assert_eq!(
        job_state(&job(
            serde_json::json!([{"type": "Complete", "status": "True"}])
        )),
        JobState::Succeeded
    );
    assert_eq!(
        job_state(&job(
            serde_json::json!([{"type": "Failed", "status": "True",
            "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}])
        )),
        JobState::Failed("DeadlineExceeded: Job was active longer than specified deadline".into())
    );
}

/// One simulated step: pods become Ready or fail to boot, the controller plans.
#[derive(Clone, Debug)]
struct Step {
    newly_ready: i32,
    boot_failures: usize,
    desired: i32,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (0..5i32, 0..2usize, 0..30i32).prop_map(|(newly_ready, boot_failures, desired)| Step {
            newly_ready,
            boot_failures,
            desired,
        }),
        1..40,
    )
}

proptest! {
    /// Whatever pods do, scale-up never has more than maxConcurrent pods booting, the target never
    /// exceeds spec.replicas, and an open circuit never adds pods.
    #[test]
    fn booting_pods_never_exceed_max_concurrent(
        steps in steps(),
        max_concurrent in 1..6i32,
        threshold in 1..5i32,
    ) {
        let mut target: Option<i32> = None;
        let mut ready = 0;
        let mut failed = 0usize;
        let mut circuit: Option<CircuitStatus> = None;
        for step in steps {
            let summary = failures(failed, NEW, "BootFailed");
            let i = Input {
                desired: step.desired,
                max_concurrent,
                threshold,
                live: target.and_then(|t| live(t, ready, NEW)),
                aborts: Some(&summary),
                previous_circuit: circuit.as_ref(),
                ..input()
            };
            let p: Plan = plan(&i);
            prop_assert!(p.ramp_target <= step.desired.max(0));
            let before = target.unwrap_or(0);
            if p.ramp_target > before {
                prop_assert!(p.ramp_target - ready.min(before) <= max_concurrent,
                    "target {} with {} ready", p.ramp_target, ready);
                prop_assert!(!p.paused);
            }
            if circuit.as_ref().is_some_and(|c| c.open) {
                prop_assert!(p.ramp_target <= before);
            }
            circuit = p.circuit.clone();
            target = Some(p.ramp_target);
            ready = (ready + step.newly_ready).min(p.ramp_target);
            failed += step.boot_failures;
        }
    }
}
