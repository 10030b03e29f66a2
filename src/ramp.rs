//! Staggered startup: how many replicas the Deployment is asked for next. Pure.
//!
//! Scale-up happens in steps of `boot.maxConcurrent`; a step starts only when every pod of the
//! previous one is Ready, so at most `maxConcurrent` pods boot at once. Scale-down is immediate.

/// What the Deployment currently asks for and has, as the watch cache last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DeploymentCounts {
    /// `spec.replicas`: the current ramp target.
    pub target: i32,
    /// `status.readyReplicas`.
    pub ready: i32,
    /// The Deployment controller has observed the latest spec, so `ready` is about `target`.
    pub status_current: bool,
}

/// The next ramp target for a pool that wants `desired` replicas.
pub fn next_target(desired: i32, max_concurrent: i32, current: Option<DeploymentCounts>) -> i32 {
    let desired = desired.max(0);
    let step = max_concurrent.max(1);
    let Some(current) = current else {
        return desired.min(step);
    };
    if desired <= current.target {
        return desired;
    }
    if !current.status_current || current.ready < current.target {
        return current.target.max(0);
    }
    desired.min(current.target.max(0).saturating_add(step))
}

/// True while the Deployment's target is below what the pool wants.
pub fn is_ramping(desired: i32, target: i32) -> bool {
    target < desired
}
