//! The Events a status change deserves: only transitions, so a steady pool publishes none. Pure.

use crate::api::{InitPhase, WorkerPoolStatus, condition};

use super::{find, is_true};

/// The Deployment's replicas before and after this reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RampChange {
    /// None when the Deployment was just created.
    pub previous: Option<i32>,
    pub target: i32,
    pub desired: i32,
}

/// A Kubernetes Event to publish on the pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub warning: bool,
    pub reason: String,
    pub action: &'static str,
    pub message: String,
}

/// The reason of the Event that says the pool became Ready.
pub const READY_NOTICE: &str = "Ready";

/// Events for what changed: a new stall or template conflict, creation, a ramp step, readiness.
/// Only transitions produce events, so a steady pool publishes none.
pub fn notices(
    old: Option<&WorkerPoolStatus>,
    new: &WorkerPoolStatus,
    ramp: Option<RampChange>,
) -> Vec<Notice> {
    let mut out = Vec::new();
    let newly_true = |type_: &str| {
        let now = find(Some(new), type_).filter(|c| c.status == "True")?;
        let before = find(old, type_);
        let same = before.is_some_and(|b| b.status == "True" && b.message == now.message);
        (!same).then_some(now)
    };
    if let Some(c) = newly_true(condition::STALLED) {
        out.push(Notice {
            warning: true,
            reason: c.reason.clone(),
            action: "Reconcile",
            message: c.message.clone(),
        });
    }
    if let Some(c) = newly_true(condition::POLICY_CONFLICT) {
        out.push(Notice {
            warning: true,
            reason: condition::POLICY_CONFLICT.into(),
            action: "Derive",
            message: c.message.clone(),
        });
    }
    match ramp {
        Some(RampChange { previous: None, target, desired }) => out.push(Notice {
            warning: false,
            reason: "Created".into(),
            action: "Apply",
            message: format!("created the Deployment with {target} of {desired} replicas as the first step"),
        }),
        Some(RampChange { previous: Some(previous), target, desired }) if previous < target => out.push(Notice {
            warning: false,
            reason: "RampStep".into(),
            action: "Scale",
            message: format!("pods of the previous step are Ready; scaling from {previous} to {target} of {desired} replicas"),
        }),
        _ => {}
    }
    out.extend(gate_notices(old, new));
    if is_true(Some(new), condition::READY) && !is_true(old, condition::READY) {
        let message = find(Some(new), condition::READY)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        out.push(Notice {
            warning: false,
            reason: READY_NOTICE.into(),
            action: "Reconcile",
            message,
        });
    }
    out
}

/// Init Job starts and successes, and the circuit closing; failures come as `Stalled` notices.
fn gate_notices(old: Option<&WorkerPoolStatus>, new: &WorkerPoolStatus) -> Vec<Notice> {
    let mut out = Vec::new();
    let old_init = old.and_then(|s| s.init.as_ref());
    if let Some(init) = &new.init
        && old_init != Some(init)
    {
        let same_job = old_init.is_some_and(|o| o.job == init.job);
        match init.phase {
            InitPhase::Running if !same_job => out.push(Notice {
                warning: false,
                reason: "InitStarted".into(),
                action: "RunInit",
                message: format!(
                    "started init Job {} for revision {}",
                    init.job, init.revision
                ),
            }),
            InitPhase::Succeeded => out.push(Notice {
                warning: false,
                reason: "InitSucceeded".into(),
                action: "RunInit",
                message: format!(
                    "init Job {} succeeded; revision {} may start its pods",
                    init.job, init.revision
                ),
            }),
            _ => {}
        }
    }
    let was_open = old.and_then(|s| s.circuit.as_ref()).is_some_and(|c| c.open);
    let is_open = new.circuit.as_ref().is_some_and(|c| c.open);
    if was_open && !is_open {
        out.push(Notice {
            warning: false,
            reason: "CircuitClosed".into(),
            action: "Reconcile",
            message: "the spec changed: boot failures are counted afresh and the ramp resumes"
                .into(),
        });
    }
    out
}
