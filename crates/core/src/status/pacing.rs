//! How often a pool's status is written: progress at a pace, every change of state at once. Pure.

use crate::api::{WorkerPoolStatus, condition};

/// Between two writes of a pool's status that only move its rollout's progress, at least this
/// long passes: pods becoming ready one after another then cost one write every couple of
/// seconds instead of one each. A change of state (a condition flipping, a ramp step, an abort)
/// is written at once.
pub const PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// True when `new` differs from `old` only in the replica counts and in the reason and wording
/// of `Ready` and `Reconciling` whose status stays (ramping, then waiting for pods, "3 of 10
/// ready"): progress, not a change of state.
pub fn is_progress_only(old: &WorkerPoolStatus, new: &WorkerPoolStatus) -> bool {
    // Destructured whole, so that a new status field has to be placed on one side or the other.
    let WorkerPoolStatus {
        observed_generation,
        replicas: _,
        ready_replicas: _,
        updated_replicas: _,
        available_replicas: _,
        ramp_target,
        selector,
        phase,
        conditions,
        effective,
        aborts,
        revision,
        init,
        circuit,
    } = new;
    let progress_condition =
        |type_: &str| type_ == condition::READY || type_ == condition::RECONCILING;
    *observed_generation == old.observed_generation
        && *ramp_target == old.ramp_target
        && *selector == old.selector
        && *phase == old.phase
        && *effective == old.effective
        && *aborts == old.aborts
        && *revision == old.revision
        && *init == old.init
        && *circuit == old.circuit
        && conditions.len() == old.conditions.len()
        && conditions.iter().zip(&old.conditions).all(|(n, o)| {
            n.type_ == o.type_
                && n.status == o.status
                && n.observed_generation == o.observed_generation
                && n.last_transition_time == o.last_transition_time
                && ((n.reason == o.reason && n.message == o.message)
                    || progress_condition(&n.type_))
        })
}

/// How long a progress-only status write waits, given when the pool's status was last written:
/// None when it may be written now.
pub fn progress_wait(
    last_write: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
) -> Option<std::time::Duration> {
    let elapsed = now.duration_since(last_write?);
    let interval = jiff::SignedDuration::try_from(PROGRESS_INTERVAL).ok()?;
    (elapsed >= jiff::SignedDuration::ZERO && elapsed < interval)
        .then(|| std::time::Duration::try_from(interval - elapsed).ok())
        .flatten()
}
