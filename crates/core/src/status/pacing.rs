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

/// What becomes of a computed status: written now, held back (progress alone is written at a
/// pace), or nothing when the server already holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusDecision {
    pub status: WorkerPoolStatus,
    /// Write it now: it differs from what the server holds and is not held back.
    pub write: bool,
    /// Progress held back this long; the reconcile comes back then.
    pub held: Option<std::time::Duration>,
}

/// Whether `new` is written now, given what the server holds and when this process last wrote.
pub fn decide(
    old: Option<&WorkerPoolStatus>,
    new: WorkerPoolStatus,
    last_write: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
) -> StatusDecision {
    let held = old
        .filter(|old| **old != new && is_progress_only(old, &new))
        .and_then(|_| progress_wait(last_write, now));
    StatusDecision {
        write: old != Some(&new) && held.is_none(),
        held,
        status: new,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn at(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + seconds).expect("time")
    }

    fn status(ready: i32, ready_condition: &str) -> WorkerPoolStatus {
        WorkerPoolStatus {
            ready_replicas: ready,
            conditions: vec![Condition {
                type_: condition::READY.into(),
                status: ready_condition.into(),
                reason: "Progressing".into(),
                message: String::new(),
                last_transition_time: Time(at(0)),
                observed_generation: Some(1),
            }],
            ..WorkerPoolStatus::default()
        }
    }

    #[test]
    fn a_status_is_written_when_it_changes_state_and_progress_waits_its_turn() {
        let old = status(1, "False");
        // Unchanged: nothing to write, nothing held.
        let same = decide(Some(&old), old.clone(), Some(at(0)), at(1));
        assert_eq!((same.write, same.held), (false, None));
        // Progress alone, a second after the last write: held for the rest of the interval.
        let progress = decide(Some(&old), status(2, "False"), Some(at(0)), at(1));
        assert!(!progress.write);
        assert_eq!(
            progress.held,
            Some(PROGRESS_INTERVAL - std::time::Duration::from_secs(1))
        );
        // Once the interval is over, or with no write of this process to pace by, it is written.
        assert!(decide(Some(&old), status(2, "False"), Some(at(0)), at(5)).write);
        assert!(decide(Some(&old), status(2, "False"), None, at(1)).write);
        // A change of state is written at once.
        let flipped = decide(Some(&old), status(2, "True"), Some(at(0)), at(1));
        assert_eq!((flipped.write, flipped.held), (true, None));
        // A pool with no status yet gets one.
        assert!(decide(None, old.clone(), None, at(0)).write);
    }
}
