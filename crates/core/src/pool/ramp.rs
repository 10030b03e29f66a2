//! Staggered startup: how many replicas the Deployment is asked for next. Pure.
//!
//! Scale-up happens in steps of `boot.maxConcurrent`; a step starts only when every pod of the
//! previous one is Ready, so at most `maxConcurrent` pods boot at once. Scale-down is immediate.

/// What the Deployment asks for and has, as the watch cache last saw it: what the ramp steps on
/// and what the status reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DeploymentCounts {
    /// `spec.replicas`: the current ramp target.
    pub ramp_target: i32,
    /// `status.replicas`: pods of every revision.
    pub replicas: i32,
    /// `status.readyReplicas`.
    pub ready: i32,
    /// `status.updatedReplicas`: pods of the latest template.
    pub updated: i32,
    /// `status.availableReplicas`.
    pub available: i32,
    /// `status.observedGeneration` has caught up with `metadata.generation`, so the counts are
    /// about `target`.
    pub current: bool,
}

impl DeploymentCounts {
    /// What a Deployment asks for and has.
    pub fn of(deployment: &k8s_openapi::api::apps::v1::Deployment) -> Self {
        let spec = deployment.spec.as_ref();
        let status = deployment.status.as_ref();
        let count = |f: fn(&k8s_openapi::api::apps::v1::DeploymentStatus) -> Option<i32>| {
            status.and_then(f).unwrap_or(0)
        };
        let generation = deployment.metadata.generation.unwrap_or(0);
        DeploymentCounts {
            ramp_target: spec.and_then(|s| s.replicas).unwrap_or(1),
            replicas: count(|s| s.replicas),
            ready: count(|s| s.ready_replicas),
            updated: count(|s| s.updated_replicas),
            available: count(|s| s.available_replicas),
            current: status.and_then(|s| s.observed_generation).unwrap_or(0) >= generation,
        }
    }
}

/// The next ramp target for a pool that wants `desired` replicas.
pub fn next_target(desired: i32, max_concurrent: i32, current: Option<DeploymentCounts>) -> i32 {
    let desired = desired.max(0);
    let step = max_concurrent.max(1);
    let Some(current) = current else {
        return desired.min(step);
    };
    if desired <= current.ramp_target {
        return desired;
    }
    if !current.current || current.ready < current.ramp_target {
        return current.ramp_target.max(0);
    }
    desired.min(current.ramp_target.max(0).saturating_add(step))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(target: i32, ready: i32) -> Option<DeploymentCounts> {
        Some(DeploymentCounts {
            ramp_target: target,
            ready,
            current: true,
            ..DeploymentCounts::default()
        })
    }

    #[test]
    fn first_step_is_max_concurrent() {
        assert_eq!(next_target(12, 3, None), 3);
        assert_eq!(next_target(2, 3, None), 2);
        assert_eq!(next_target(0, 3, None), 0);
    }

    #[test]
    fn steps_only_when_the_previous_step_is_ready() {
        assert_eq!(next_target(12, 3, at(3, 2)), 3);
        assert_eq!(next_target(12, 3, at(3, 3)), 6);
        assert_eq!(next_target(12, 3, at(9, 9)), 12);
        assert_eq!(next_target(10, 3, at(9, 9)), 10);
    }

    #[test]
    fn stale_status_holds_the_target() {
        let stale = Some(DeploymentCounts {
            ramp_target: 3,
            ready: 3,
            current: false,
            ..DeploymentCounts::default()
        });
        assert_eq!(next_target(12, 3, stale), 3);
    }

    #[test]
    fn scale_down_is_immediate() {
        assert_eq!(next_target(2, 3, at(9, 4)), 2);
        assert_eq!(next_target(0, 3, at(9, 9)), 0);
    }

    proptest! {
        /// Whatever the observations, a scale-up never leaves more than `maxConcurrent` pods
        /// booting (asked for but not Ready) and never asks for more than desired.
        #[test]
        fn booting_never_exceeds_max_concurrent(
            desired in 0i32..200,
            step in 1i32..20,
            observations in proptest::collection::vec((0i32..200, 0i32..200, any::<bool>()), 1..40),
        ) {
            let mut target = next_target(desired, step, None);
            prop_assert!(target <= desired && target <= step);
            for (ready_seed, _, current) in observations {
                // The Deployment can never have more Ready pods than it asks for.
                let ready = ready_seed.min(target);
                let previous = target;
                target = next_target(desired, step, Some(DeploymentCounts { ramp_target: target, ready, current, ..DeploymentCounts::default() }));
                prop_assert!(target <= desired.max(0));
                if target > previous {
                    prop_assert!(target - ready <= step, "{} booting", target - ready);
                }
            }
        }
    }
}
