//! The pool: validating a spec and settling the numbers it implies, building the children from
//! them, the ramp and the rollout gates (init Job, circuit breaker), and comparing what is wanted
//! with what runs. Pure: no client, no clock.

pub mod celery;
pub mod derive;
pub mod drift;
pub mod policy;
pub mod ramp;
pub mod rollout;

/// Why the operator cannot make progress; becomes `Stalled=True` with this reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stall {
    pub reason: &'static str,
    pub message: String,
}
