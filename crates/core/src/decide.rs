//! One reconcile's decision, from what it observed of a pool to everything it will do: the
//! children to write, the status, the Events, the metrics and when to look at the pool again.
//! Pure: the controller reads what [`Prepared`] asks for, calls [`decide`] and carries it out.

use std::borrow::Cow;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::{Event, EventType};

use crate::aborts::report::Report;
use crate::api::reason;
use crate::api::{AbortRecord, WorkerPool, WorkerPoolStatus};
use crate::pool::Stall;
use crate::pool::derive::{self, Children, PoolRef};
use crate::pool::drift;
use crate::pool::policy::{self, Settings, ValidPool};
use crate::pool::ramp::DeploymentCounts;
use crate::pool::rollout::{self, Plan, Template};
use crate::status::{self, Observation, RampChange};

/// Every pool is looked at again after this long even without a watch event.
pub const RESYNC: Duration = Duration::from_secs(3600);

/// An Event note longer than this is cut: the API server refuses notes over 1 kB.
pub const NOTE_LIMIT: usize = 1000;

/// The pool validated, settled and its children derived: what the reads of the children are
/// named after.
pub struct Prepared<'a> {
    pub pool: &'a WorkerPool,
    pub identity: &'a PoolRef,
    settled: Result<(ValidPool<'a>, Settings, Children), String>,
}

impl<'a> Prepared<'a> {
    pub fn new(pool: &'a WorkerPool, identity: &'a PoolRef) -> Self {
        let settled = policy::validate(&pool.spec)
            .map(|valid| {
                let settings = policy::settle(&valid);
                let children = derive::children(identity, &valid, &settings, 0);
                (valid, settings, children)
            })
            .map_err(|invalid| invalid.to_string());
        Prepared {
            pool,
            identity,
            settled,
        }
    }

    /// Whether a child the watch caches do not hold is looked for through the API: only for a
    /// valid pool, which may write it. An invalid pool is judged on the caches alone.
    pub fn reads_uncached(&self) -> bool {
        self.settled.is_ok()
    }

    /// The init Job to look for while `deployment` (the live one, if owned) does not run this
    /// revision yet; after that the Job is finished and cleaned up, and looking would cost a
    /// request per reconcile.
    pub fn init_job_to_read(&self, deployment: Option<&Deployment>) -> Option<&str> {
        let (_, _, children) = self.settled.as_ref().ok()?;
        let job = children.init_job.as_ref()?;
        let runs_revision =
            deployment.and_then(derive::revision_in) == Some(children.revision.as_str());
        job.metadata.name.as_deref().filter(|_| !runs_revision)
    }
}

/// A child as it stands.
pub enum Child<'a, K> {
    /// Owned by this pool.
    Ours(&'a K),
    Absent,
    /// A same-named object someone else owns: never adopted or overwritten.
    Foreign,
}

impl<K> Child<'_, K> {
    pub fn ours(&self) -> Option<&K> {
        match self {
            Child::Ours(object) => Some(object),
            _ => None,
        }
    }

    fn is_foreign(&self) -> bool {
        matches!(self, Child::Foreign)
    }
}

/// The pool's children as they stand.
pub struct LiveChildren<'a> {
    pub deployment: Child<'a, Deployment>,
    pub pdb: Child<'a, PodDisruptionBudget>,
    /// The init Job [`Prepared::init_job_to_read`] named, when it named one.
    pub init_job: Option<(&'a str, Child<'a, Job>)>,
}

impl LiveChildren<'_> {
    /// Same-named objects this pool does not own: they are left untouched, and the pool stalls.
    /// A budget the pool does not want is no conflict, whoever made it.
    fn not_owned(&self, pool: &PoolRef, wants_budget: bool) -> Option<Stall> {
        let (ns, name) = (&pool.namespace, &pool.name);
        let foreign: Vec<String> = [
            self.deployment
                .is_foreign()
                .then(|| format!("Deployment {ns}/{name}")),
            (wants_budget && self.pdb.is_foreign())
                .then(|| format!("PodDisruptionBudget {ns}/{name}")),
            match &self.init_job {
                Some((job, Child::Foreign)) => Some(format!("Job {ns}/{job}")),
                _ => None,
            },
        ]
        .into_iter()
        .flatten()
        .collect();
        (!foreign.is_empty()).then(|| Stall {
            reason: reason::NOT_OWNED,
            message: format!(
                "{} already exists and is not owned by this WorkerPool; it was left untouched. Rename the pool or remove that object",
                foreign.join(" and ")
            ),
        })
    }
}

/// Everything one reconcile observed of a pool besides its spec.
pub struct Observed<'a> {
    /// The status the reconcile starts from: the server's, or this process's last write while
    /// the cache has not caught up with it.
    pub old: Option<&'a WorkerPoolStatus>,
    /// When this process last wrote that status, for pacing progress-only writes.
    pub last_write: Option<jiff::Timestamp>,
    /// The revision and size the pool was last announced Ready at.
    pub announced_ready: Option<&'a (String, i32)>,
    pub workers: &'a Report,
    pub children: &'a LiveChildren<'a>,
    /// A write of this reconcile the API server refused for good.
    pub refused: Option<Stall>,
    /// Live children found to hold what the pool derives, as the last reconcile left them.
    pub verified: &'a [drift::Verified],
    pub now: jiff::Timestamp,
}

/// How the Deployment is written.
#[derive(Debug)]
pub enum DeploymentWrite {
    /// Server-side apply of the whole derived Deployment.
    Apply(Box<Deployment>),
    /// Only the replicas and the pause, merged into a live template that is kept while the new
    /// revision waits for its init Job.
    Hold { replicas: i32, paused: bool },
}

/// How the PodDisruptionBudget is written.
#[derive(Debug)]
pub enum BudgetWrite {
    /// Server-side apply of the derived budget.
    Apply(Box<PodDisruptionBudget>),
    /// The pool's own budget, which it no longer wants, deleted on the condition that the object
    /// is still the one with this uid.
    Delete { uid: String },
}

/// The children to write: only those whose live object lacks what the operator sets
/// ([`drift::is_current`], the one rule that skips a write), each stamped with what it applies.
#[derive(Debug, Default)]
pub struct Writes {
    pub init_job: Option<Job>,
    pub deployment: Option<DeploymentWrite>,
    pub pdb: Option<BudgetWrite>,
}

impl Writes {
    pub fn is_empty(&self) -> bool {
        self.init_job.is_none() && self.deployment.is_none() && self.pdb.is_none()
    }
}

/// Whether repeats of an Event (same type, reason, action and related object) become one series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fold {
    /// A repeat bumps the series' count; the series keeps its first note.
    Series,
    /// Every publish is an Event of its own, with its own note.
    Never,
}

/// An Event to publish on the pool.
pub struct Announcement {
    pub event: Event,
    pub fold: Fold,
}

/// Everything one reconcile does.
pub struct Decision {
    pub writes: Writes,
    /// The status as computed; its conditions are the pool's gauges.
    pub status: WorkerPoolStatus,
    /// Write the status now: it differs from the server's and is not held back.
    pub write_status: bool,
    /// Published once the status is written: what changed between the two statuses.
    pub notices: Vec<Announcement>,
    /// Aborts counted for the first time: each an Event and a metric increment.
    pub aborts: Vec<Announcement>,
    /// The revision and size to remember as announced Ready, once the notices are published.
    pub announced_ready: Option<(String, i32)>,
    /// When to look at the pool again, unless a failure backs off.
    pub requeue: Duration,
    /// The live children that hold what the pool derives, for the next reconcile's
    /// [`Observed::verified`].
    pub verified: Vec<drift::Verified>,
}

/// What the reconcile does, given what it observed.
pub fn decide(
    prepared: &Prepared<'_>,
    observed: &Observed<'_>,
) -> Result<Decision, serde_json::Error> {
    let pool = prepared.pool;
    let running = observed
        .children
        .deployment
        .ours()
        .map(DeploymentCounts::of);
    let mut verified = Vec::new();
    let (outcome, writes) = match (&prepared.settled, &observed.refused) {
        (Err(invalid), _) => (
            Outcome::stalled(invalid_spec(invalid, running), running),
            None,
        ),
        (Ok(_), Some(refused)) => (Outcome::stalled(refused.clone(), running), None),
        (Ok((valid, settings, children)), None) => {
            let wants_budget = children.pdb.is_some();
            match observed.children.not_owned(prepared.identity, wants_budget) {
                Some(stall) => (Outcome::stalled(stall, running), None),
                None => {
                    let plan = plan(pool, valid, children, observed);
                    let writes = writes(pool, &plan, children, observed, &mut verified)?;
                    let replaced =
                        replaces_template(writes.deployment.as_ref(), observed.children)?;
                    let outcome = Outcome::planned(plan, settings, children, observed, replaced);
                    (outcome, Some(writes))
                }
            }
        }
    };
    let workers = observed.workers;
    let inputs = StatusInputs::of(pool, &outcome, workers);
    let now = observed.now;
    let computed = status::compute(observed.old, &inputs.view(), &Time(now));
    let paced = status::decide(observed.old, computed, observed.last_write, now);
    let (notices, announced_ready) = match paced.write {
        true => notices(pool, observed, &paced.status, outcome.ramp_change(pool)),
        false => (Vec::new(), None),
    };
    Ok(Decision {
        writes: writes.unwrap_or_default(),
        write_status: paced.write,
        notices,
        aborts: workers.fresh.iter().map(|a| abort_event(pool, a)).collect(),
        announced_ready,
        requeue: requeue(workers.recheck, paced.held),
        status: paced.status,
        verified,
    })
}

fn invalid_spec(invalid: &str, running: Option<DeploymentCounts>) -> Stall {
    let message = match running {
        Some(_) => format!("spec is invalid, the running pool was left untouched: {invalid}"),
        None => format!("spec is invalid, nothing was created: {invalid}"),
    };
    Stall {
        reason: reason::INVALID_SPEC,
        message,
    }
}

fn plan(
    pool: &WorkerPool,
    valid: &ValidPool<'_>,
    children: &Children,
    observed: &Observed<'_>,
) -> Plan {
    let live = observed.children;
    let init_job = live
        .init_job
        .as_ref()
        .map(|(name, job)| (*name, job.ours()));
    rollout::plan_children(&rollout::Observed {
        generation: pool.metadata.generation.unwrap_or(0),
        valid,
        children,
        deployment: live.deployment.ours(),
        init_job,
        status: observed.old,
        aborts: &observed.workers.summary,
        now: observed.now,
    })
}

/// The writes `plan` asks for that the live children lack.
fn writes(
    pool: &WorkerPool,
    plan: &Plan,
    children: &Children,
    observed: &Observed<'_>,
    verified: &mut Vec<drift::Verified>,
) -> Result<Writes, serde_json::Error> {
    let (live, before) = (observed.children, observed.verified);
    let source = |kind, shape| drift::source_print(&pool.metadata, kind, shape);
    // Destructured whole, so a new kind of child cannot be left out.
    let Children {
        revision: _,
        init_job,
        deployment,
        pdb,
    } = children;
    let init_job = match (init_job, plan.create_init_job) {
        (Some(job), true) => changed(None, || job.clone(), None, before, verified)?,
        _ => None,
    };
    let deployment = match (plan.apply_deployment, plan.template, live.deployment.ours()) {
        (false, ..) => None,
        // The new revision waits for its init Job: the live template is left as it is, with
        // whatever other managers set in it (`kubectl rollout restart`'s annotation, say), and
        // only the gates' replicas and pause are written.
        (true, Template::KeepLive, Some(live)) => {
            (!drift::holds(live, plan.ramp_target, plan.paused)).then_some(DeploymentWrite::Hold {
                replicas: plan.ramp_target,
                paused: plan.paused,
            })
        }
        (true, ..) => {
            let shaped = || {
                let mut deployment = deployment.clone();
                derive::shape(&mut deployment, plan.ramp_target, plan.paused);
                deployment
            };
            let shape = Some((plan.ramp_target, plan.paused));
            let source = source("Deployment", shape);
            changed(live.deployment.ours(), shaped, source, before, verified)?
                .map(|d| DeploymentWrite::Apply(Box::new(d)))
        }
    };
    Ok(Writes {
        init_job,
        deployment,
        pdb: match (pdb, live.pdb.ours()) {
            (Some(pdb), live) => {
                let source = source("PodDisruptionBudget", None);
                changed(live, || pdb.clone(), source, before, verified)?
                    .map(|b| BudgetWrite::Apply(Box::new(b)))
            }
            (None, Some(live)) => live
                .metadata
                .uid
                .clone()
                .map(|uid| BudgetWrite::Delete { uid }),
            (None, None) => None,
        },
    })
}

/// Whether `write` gives the live Deployment another pod template: until its controller has
/// observed that, the live counts are those of the pods being replaced (a converged pool's
/// template change would otherwise read Ready, at the new generation, on the old pods). A new
/// size or pause keeps the pods, and the counts stay true.
fn replaces_template(
    write: Option<&DeploymentWrite>,
    live: &LiveChildren<'_>,
) -> Result<bool, serde_json::Error> {
    let (Some(DeploymentWrite::Apply(desired)), Some(live)) = (write, live.deployment.ours())
    else {
        return Ok(false);
    };
    let template = |d: &Deployment| d.spec.as_ref().map(|s| serde_json::to_value(&s.template));
    Ok(
        match (template(live).transpose()?, template(desired).transpose()?) {
            (Some(live), Some(desired)) => !drift::contains(&live, &desired),
            (live, desired) => live.is_some() != desired.is_some(),
        },
    )
}

/// The desired object, stamped, unless `live` is current with it (then noted in
/// `verified_now`). A live object verified before against the same `source` is current without
/// building the desired one.
fn changed<K: kube::Resource + serde::Serialize>(
    live: Option<&K>,
    desired: impl FnOnce() -> K,
    source: Option<u64>,
    verified_before: &[drift::Verified],
    verified_now: &mut Vec<drift::Verified>,
) -> Result<Option<K>, serde_json::Error> {
    if let Some(pair) =
        live.and_then(|live| drift::verified_from(live.meta(), source, verified_before))
    {
        verified_now.push(pair);
        return Ok(None);
    }
    let mut desired = desired();
    let stamped = drift::stamp(&mut desired)?;
    let Some(live) = live else {
        return Ok(Some(desired));
    };
    let (current, pair) = drift::is_current_as_verified(live, &stamped, source, verified_before)?;
    verified_now.extend(pair);
    Ok((!current).then_some(desired))
}

/// What validating, the ownership check and the gates came to.
struct Outcome<'a> {
    /// The Deployment as this reconcile read it: the one the gates and the status share.
    deployment: Option<DeploymentCounts>,
    stall: Option<Stall>,
    settings: Option<&'a Settings>,
    /// The replicas the Deployment is asked for; None when it is not written.
    ramp_target: Option<i32>,
    created: bool,
    plan: Option<Plan>,
    revision: Option<&'a str>,
}

impl<'a> Outcome<'a> {
    fn stalled(stall: Stall, deployment: Option<DeploymentCounts>) -> Self {
        Outcome {
            deployment,
            stall: Some(stall),
            settings: None,
            ramp_target: None,
            created: false,
            plan: None,
            revision: None,
        }
    }

    fn planned(
        plan: Plan,
        settings: &'a Settings,
        children: &'a Children,
        observed: &Observed<'_>,
        replaced: bool,
    ) -> Self {
        let live = observed.children.deployment.ours();
        let counts = live
            .map(DeploymentCounts::of)
            .map(|counts| DeploymentCounts {
                current: counts.current && !replaced,
                ..counts
            });
        Outcome {
            deployment: counts,
            stall: plan.stall.clone(),
            settings: Some(settings),
            ramp_target: plan.apply_deployment.then_some(plan.ramp_target),
            created: live.is_none() && plan.apply_deployment,
            plan: Some(plan),
            revision: Some(&children.revision),
        }
    }

    /// The ramp step this reconcile takes, for its Event.
    fn ramp_change(&self, pool: &WorkerPool) -> Option<RampChange> {
        Some(RampChange {
            previous: match self.created {
                true => None,
                false => self.deployment.map(|d| d.ramp_target),
            },
            target: self.ramp_target?,
            desired: pool.spec.replicas,
        })
    }
}

/// Everything the status is computed from.
struct StatusInputs<'a> {
    pool: &'a WorkerPool,
    outcome: &'a Outcome<'a>,
    workers: &'a Report,
    /// What the template says, then what the pods show.
    conflicts: Cow<'a, [policy::Conflict]>,
}

impl<'a> StatusInputs<'a> {
    fn of(pool: &'a WorkerPool, outcome: &'a Outcome<'a>, workers: &'a Report) -> Self {
        let derived = outcome
            .settings
            .map(|s| s.conflicts.as_slice())
            .unwrap_or_default();
        let conflicts = match &workers.stop_signal {
            None => Cow::Borrowed(derived),
            Some(seen) => Cow::Owned(derived.iter().chain([seen]).cloned().collect()),
        };
        StatusInputs {
            pool,
            outcome,
            workers,
            conflicts,
        }
    }

    fn view(&self) -> Observation<'_> {
        let (pool, outcome, workers) = (self.pool, self.outcome, self.workers);
        let stall = outcome.stall.as_ref();
        Observation {
            generation: pool.metadata.generation.unwrap_or(0),
            desired_replicas: pool.spec.replicas,
            max_concurrent: pool.spec.policy.boot.max_concurrent,
            selector: derive::selector_string(pool.metadata.name.as_deref().unwrap_or_default()),
            deployment: outcome.deployment,
            ramp_target: outcome.ramp_target,
            effective: outcome
                .settings
                .filter(|_| stall.is_none())
                .map(|s| &s.effective),
            conflicts: &self.conflicts,
            stall,
            aborts: Some(&workers.summary),
            window_seconds: pool.spec.policy.failure.window_seconds,
            gates: outcome.plan.as_ref().map(|plan| status::Gates {
                revision: outcome.revision,
                init: plan.init.as_ref(),
                circuit: plan.circuit.as_ref(),
                waiting: plan.waiting.as_ref().map(|(r, m)| (*r, m.as_str())),
            }),
            initializing: workers.initializing.as_ref(),
            stability: Some(&workers.stability),
        }
    }
}

/// The Events for what changed between the old status and `new`, and the Ready mark to remember.
/// A pod that lost its readiness and regained it (after a crash or an OOM kill) is reported as an
/// abort; announcing Ready again on each such recovery would bury the Events that explain it, so
/// Ready is announced once per revision and size.
fn notices(
    pool: &WorkerPool,
    observed: &Observed<'_>,
    new: &WorkerPoolStatus,
    ramp: Option<RampChange>,
) -> (Vec<Announcement>, Option<(String, i32)>) {
    let mark = (new.revision.clone().unwrap_or_default(), pool.spec.replicas);
    let mut announced = None;
    let mut out = Vec::new();
    for notice in status::notices(observed.old, new, ramp) {
        if notice.reason == status::READY_NOTICE {
            if observed.announced_ready == Some(&mark) {
                continue;
            }
            announced = Some(mark.clone());
        }
        let event = Event {
            type_: match notice.warning {
                true => EventType::Warning,
                false => EventType::Normal,
            },
            reason: notice.reason,
            note: Some(truncate(notice.message, NOTE_LIMIT)),
            action: notice.action.into(),
            secondary: None,
        };
        // A state change is its own Event: folded into a series it would keep its first
        // message ("scaling from 2 to 4") while the pool moves on.
        out.push(Announcement {
            event,
            fold: Fold::Never,
        });
    }
    (out, announced)
}

/// One Warning Event per newly counted abort. The note leaves out restart counts and times so
/// the recorder folds a crash loop's repeats into one Event series.
fn abort_event(pool: &WorkerPool, abort: &AbortRecord) -> Announcement {
    let namespace = pool.metadata.namespace.as_deref().unwrap_or_default();
    let exit = match (abort.exit_code, &abort.signal) {
        (Some(code), Some(signal)) => format!(" exited {code} ({signal})"),
        (Some(code), None) => format!(" exited {code}"),
        _ => String::new(),
    };
    let container = if abort.container.is_empty() {
        String::new()
    } else {
        format!(" container {}", abort.container)
    };
    let detail = abort
        .hint
        .as_deref()
        .or(abort.message.as_deref())
        .map(|h| format!(": {h}"))
        .unwrap_or_default();
    let inferred = if abort.inferred {
        format!(" run {} (inferred)", abort.restart_count)
    } else {
        String::new()
    };
    let note = format!("pod {}{container}{inferred}{exit}{detail}", abort.pod);
    let event = Event {
        type_: EventType::Warning,
        reason: abort.reason.clone(),
        note: Some(truncate(note, NOTE_LIMIT)),
        // Runs counted from the restart count fold into a series of their own, whose note
        // says so.
        action: if abort.inferred {
            "InferWorkerExit"
        } else {
            "ObserveWorker"
        }
        .into(),
        // One series per pod and reason: `kubectl describe wp` names each pod.
        secondary: Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(namespace.to_string()),
            name: Some(abort.pod.clone()),
            ..Default::default()
        }),
    };
    Announcement {
        event,
        fold: Fold::Series,
    }
}

/// When the pool is looked at again: when its pods ask for it (a settling exit, a log to sample,
/// the window moving), when held-back progress is due, and at the latest after [`RESYNC`].
pub fn requeue(recheck: Option<jiff::SignedDuration>, held: Option<Duration>) -> Duration {
    let requeue = recheck
        .and_then(|d| Duration::try_from(d).ok())
        .map_or(RESYNC, |d| d.clamp(Duration::from_secs(1), RESYNC));
    held.map_or(requeue, |held| held.min(requeue))
}

pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// The Event that says a WorkerPool does not match its schema.
pub fn malformed(error: &str) -> Announcement {
    let note = format!("the object does not match the WorkerPool schema: {error}");
    Announcement {
        event: Event {
            type_: EventType::Warning,
            reason: reason::INVALID_SPEC.into(),
            note: Some(truncate(note, NOTE_LIMIT)),
            action: "Validate".into(),
            secondary: None,
        },
        fold: Fold::Never,
    }
}
