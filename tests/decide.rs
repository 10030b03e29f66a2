//! One reconcile's decision from fixtures, with no client: what a pool's observations come to
//! (children to write, status, Events, requeue), and a pool driven to rest by carrying out its own
//! decisions on a few objects in memory.

mod common;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::runtime::events::EventType;
use serde_json::{Value, json};
use workerpool_core::aborts::report::Report;
use workerpool_core::api::{AbortRecord, DisruptionBudget, WorkerPool, WorkerPoolStatus, reason};
use workerpool_core::decide::{
    BudgetWrite, Child, Decision, DeploymentWrite, Fold, LiveChildren, Observed, Prepared, RESYNC,
    decide, requeue,
};
use workerpool_core::pool::Stall;
use workerpool_core::pool::derive::PoolRef;
use workerpool_core::pool::drift::Verified;

const UID: &str = "pool-uid-1";
const PDB_UID: &str = "pdb-uid-1";
const DEPLOYMENT_UID: &str = "deployment-uid-1";

fn now() -> Timestamp {
    "2026-12-01T10:00:00Z".parse().expect("time")
}

fn pool(overlay: Value) -> WorkerPool {
    let mut manifest = json!({
        "apiVersion": "workerpool.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": "api", "namespace": "shop", "uid": UID, "generation": 1},
        "spec": {
            "replicas": 4,
            "runtime": "gunicorn",
            "health": {"path": "/healthz", "port": "http"},
            "policy": {"boot": {"maxConcurrent": 2}}
        }
    });
    common::merge(
        &mut manifest,
        &json!({"spec": common::app_container_with(json!({"command": ["gunicorn", "app:wsgi"]}))}),
    );
    common::merge(&mut manifest, &overlay);
    serde_json::from_value(manifest).expect("a WorkerPool")
}

fn identity(pool: &WorkerPool) -> PoolRef {
    PoolRef {
        name: pool.metadata.name.clone().expect("name"),
        namespace: pool.metadata.namespace.clone().expect("namespace"),
        uid: pool.metadata.uid.clone(),
    }
}

/// The pool's objects as a server would hold them, changed only by carrying out decisions.
#[derive(Default)]
struct World {
    deployment: Option<Deployment>,
    pdb: Option<PodDisruptionBudget>,
    status: Option<WorkerPoolStatus>,
    announced_ready: Option<(String, i32)>,
    verified: Vec<Verified>,
}

impl World {
    /// Decides with the Deployment's ready pods all seen in the pod cache.
    fn decide(&self, pool: &WorkerPool, refused: Option<Stall>) -> Decision {
        let mut workers = Report::default();
        workers.stability.ready = self.ready_pods();
        self.decide_with(pool, &workers, refused)
    }

    fn ready_pods(&self) -> usize {
        let ready = self
            .deployment
            .as_ref()
            .and_then(|d| d.status.as_ref())
            .and_then(|s| s.ready_replicas);
        ready.and_then(|n| usize::try_from(n).ok()).unwrap_or(0)
    }

    fn decide_with(&self, pool: &WorkerPool, workers: &Report, refused: Option<Stall>) -> Decision {
        let identity = identity(pool);
        let prepared = Prepared::new(pool, &identity);
        let live = LiveChildren {
            deployment: child(self.deployment.as_ref()),
            pdb: child(self.pdb.as_ref()),
            init_job: None,
        };
        let observed = Observed {
            old: self.status.as_ref(),
            last_write: None,
            announced_ready: self.announced_ready.as_ref(),
            workers,
            children: &live,
            refused,
            verified: &self.verified,
            now: now(),
        };
        decide(&prepared, &observed).expect("a decision")
    }

    /// Writes what the decision asks for; the Deployment's pods all come up Ready at once.
    fn carry_out(&mut self, decision: Decision) {
        self.verified = decision.verified;
        match decision.writes.deployment {
            Some(DeploymentWrite::Apply(mut deployment)) => {
                deployment.metadata.uid = Some(DEPLOYMENT_UID.into());
                self.deployment = Some(*deployment);
            }
            Some(DeploymentWrite::Hold { .. }) => panic!("no init Job holds this pool"),
            None => {}
        }
        match decision.writes.pdb {
            Some(BudgetWrite::Apply(mut pdb)) => {
                pdb.metadata.uid = Some(PDB_UID.into());
                pdb.metadata.generation = Some(1);
                self.pdb = Some(*pdb);
            }
            Some(BudgetWrite::Delete { uid }) => {
                let live = self.pdb.take().expect("a budget to delete");
                assert_eq!(live.metadata.uid.as_deref(), Some(uid.as_str()));
            }
            None => {}
        }
        if let Some(deployment) = self.deployment.as_mut() {
            let replicas = deployment.spec.as_ref().and_then(|s| s.replicas);
            deployment.metadata.generation = Some(1);
            deployment.status = Some(DeploymentStatus {
                observed_generation: Some(1),
                replicas,
                ready_replicas: replicas,
                updated_replicas: replicas,
                available_replicas: replicas,
                ..DeploymentStatus::default()
            });
        }
        if decision.write_status {
            self.status = Some(decision.status);
        }
        if let Some(mark) = decision.announced_ready {
            self.announced_ready = Some(mark);
        }
    }
}

fn child<K: kube::Resource>(object: Option<&K>) -> Child<'_, K> {
    let owned = |o: &K| {
        o.meta()
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == UID && o.controller == Some(true))
    };
    match object {
        Some(o) if owned(o) => Child::Ours(o),
        Some(_) => Child::Foreign,
        None => Child::Absent,
    }
}

fn reasons(decision: &Decision) -> Vec<String> {
    decision
        .notices
        .iter()
        .map(|n| n.event.reason.clone())
        .collect()
}

fn condition<'a>(status: &'a WorkerPoolStatus, type_: &str) -> (&'a str, &'a str) {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
        .unwrap_or_else(|| panic!("no {type_} condition in {status:?}"))
}

fn deployment_replicas(decision: &Decision) -> Option<i32> {
    match &decision.writes.deployment {
        Some(DeploymentWrite::Apply(d)) => d.spec.as_ref().and_then(|s| s.replicas),
        _ => None,
    }
}

#[test]
fn a_new_pool_creates_its_children_at_the_first_ramp_step() {
    let pool = pool(json!({}));
    let decision = World::default().decide(&pool, None);
    assert_eq!(deployment_replicas(&decision), Some(2), "maxConcurrent");
    assert!(decision.writes.pdb.is_some());
    assert!(decision.writes.init_job.is_none(), "no init policy");
    assert!(decision.write_status);
    assert_eq!(reasons(&decision), ["Created"]);
    assert!(decision.aborts.is_empty());
}

#[test]
fn a_pool_carried_to_rest_decides_nothing_and_announces_ready_once() {
    let pool = pool(json!({}));
    let mut world = World::default();
    let mut announced = Vec::new();
    let mut steps = 0;
    loop {
        let decision = world.decide(&pool, None);
        if decision.writes.is_empty() && !decision.write_status {
            assert!(decision.notices.is_empty() && decision.aborts.is_empty());
            assert_eq!(decision.requeue, RESYNC, "nothing to come back for early");
            break;
        }
        announced.extend(reasons(&decision));
        world.carry_out(decision);
        steps += 1;
        assert!(steps < 8, "no rest after {steps} steps: {announced:?}");
    }
    assert_eq!(announced, ["Created", "RampStep", "Ready"]);
    let status = world.status.as_ref().expect("a status");
    assert_eq!(condition(status, "Ready").0, "True");
    assert_eq!(status.ready_replicas, 4);

    // A pod that lost its readiness and got it back: written, but Ready is old news.
    if let Some(s) = world.deployment.as_mut().and_then(|d| d.status.as_mut()) {
        s.ready_replicas = Some(3);
    }
    let unready = world.decide(&pool, None);
    assert!(unready.write_status && unready.writes.is_empty());
    assert_eq!(condition(&unready.status, "Ready").0, "False");
    world.carry_out(unready);
    let again = world.decide(&pool, None);
    assert_eq!(condition(&again.status, "Ready").0, "True");
    assert!(again.write_status);
    assert!(reasons(&again).is_empty(), "{:?}", reasons(&again));
    assert_eq!(again.announced_ready, None);
    world.carry_out(again);

    // A new size is news again.
    let bigger = self::pool(json!({"spec": {"replicas": 5}}));
    let mut notices = Vec::new();
    for _ in 0..4 {
        let decision = world.decide(&bigger, None);
        notices.extend(reasons(&decision));
        world.carry_out(decision);
    }
    assert_eq!(notices, ["RampStep", "Ready"]);
}

/// A pool carried to rest: Ready, nothing left to write.
fn converged(pool: &WorkerPool) -> World {
    let mut world = World::default();
    for _ in 0..8 {
        let decision = world.decide(pool, None);
        world.carry_out(decision);
    }
    let rest = world.decide(pool, None);
    assert!(rest.writes.is_empty() && !rest.write_status, "not at rest");
    world
}

#[test]
fn a_child_found_current_is_not_serialized_again_until_its_generation_or_metadata_moves() {
    let pool = pool(json!({}));
    let mut world = converged(&pool);
    let rest = world.decide(&pool, None);
    assert_eq!(rest.verified.len(), 2, "the Deployment and the budget");
    world.verified = rest.verified;
    // Changed under the same generation, which the API server never does: only the memory of
    // the last check can leave it unwritten.
    let spec = world.deployment.as_mut().and_then(|d| d.spec.as_mut());
    let pod = spec
        .and_then(|s| s.template.spec.as_mut())
        .expect("a pod spec");
    pod.termination_grace_period_seconds = Some(1);
    let tampered = world.decide(&pool, None);
    assert!(tampered.writes.deployment.is_none(), "answered from memory");
    let forgotten = World {
        verified: Vec::new(),
        ..world_clone(&world)
    }
    .decide(&pool, None);
    assert!(
        forgotten.writes.deployment.is_some(),
        "without the memory the drift is seen"
    );
    let deployment = world.deployment.as_mut().expect("a Deployment");
    deployment.metadata.generation = Some(2);
    assert!(
        world.decide(&pool, None).writes.deployment.is_some(),
        "a new generation is checked again"
    );
    let deployment = world.deployment.as_mut().expect("a Deployment");
    deployment.metadata.generation = Some(1);
    let labels = deployment.metadata.labels.get_or_insert_default();
    labels.insert("team".into(), "shop".into());
    assert!(
        world.decide(&pool, None).writes.deployment.is_some(),
        "so are new labels"
    );
}

#[test]
fn a_child_verified_for_this_generation_of_the_pool_is_not_derived_again() {
    let pool = pool(json!({}));
    let mut world = converged(&pool);
    let rest = world.decide(&pool, None);
    world.verified = rest.verified;
    // Another spec under the same generation, which the API server never serves: only a decision
    // that skips deriving the children leaves it unwritten.
    let same_generation =
        self::pool(json!({"spec": {"policy": {"shutdown": {"drainSeconds": 9}}}}));
    assert_eq!(
        same_generation.metadata.generation,
        pool.metadata.generation
    );
    let remembered = world.decide(&same_generation, None);
    assert!(remembered.writes.is_empty(), "answered from memory");
    assert_eq!(remembered.verified, world.verified, "and remembered again");
    // The server moves the generation with the spec: the children are derived and checked again.
    let mut next_generation = same_generation.clone();
    next_generation.metadata.generation = Some(2);
    let checked = world.decide(&next_generation, None);
    assert!(
        checked.writes.deployment.is_some(),
        "a new generation is derived again"
    );
    // The budget is derived again too, and found current: it is remembered for the new source.
    assert!(checked.writes.pdb.is_none());
    assert_eq!(checked.verified.len(), 1, "the budget");
    assert_ne!(checked.verified[0], world.verified[1]);
}

fn world_clone(world: &World) -> World {
    World {
        deployment: world.deployment.clone(),
        pdb: world.pdb.clone(),
        status: world.status.clone(),
        announced_ready: world.announced_ready.clone(),
        verified: world.verified.clone(),
    }
}

#[test]
fn the_drift_check_reads_no_metadata_of_a_child_that_its_print_leaves_out() {
    let pool = pool(json!({"spec": {"policy": {"init": {"command": ["migrate"]}}}}));
    let first = World::default().decide(&pool, None);
    let mut children: Vec<Value> = Vec::new();
    if let Some(DeploymentWrite::Apply(deployment)) = &first.writes.deployment {
        children.push(serde_json::to_value(deployment).expect("json"));
    }
    if let Some(BudgetWrite::Apply(pdb)) = &first.writes.pdb {
        children.push(serde_json::to_value(pdb).expect("json"));
    }
    assert_eq!(children.len(), 2);
    // `drift::live_print` hashes these of a live child; any other key the operator set would be
    // compared by the drift check but not move the print.
    let printed = [
        "name",
        "namespace",
        "labels",
        "annotations",
        "ownerReferences",
    ];
    for child in &children {
        let metadata = child["metadata"].as_object().expect("metadata");
        for key in metadata.keys() {
            assert!(printed.contains(&key.as_str()), "metadata.{key} is set");
        }
    }
}

#[test]
fn a_template_change_is_not_ready_on_the_pods_of_the_template_it_replaces() {
    let pool = pool(json!({}));
    let world = converged(&pool);
    let changed = self::pool(json!({
        "metadata": {"generation": 2},
        "spec": {"template": {"metadata": {"annotations": {"release": "2"}}}}
    }));
    let decision = world.decide(&changed, None);
    assert!(matches!(
        decision.writes.deployment,
        Some(DeploymentWrite::Apply(_))
    ));
    // Written at once, at the new generation, and not Ready on the old pods' counts: kstatus and
    // `kubectl wait` (which compare generations) must not read the change as rolled out.
    assert!(decision.write_status);
    assert_eq!(decision.status.observed_generation, 2);
    assert_eq!(
        condition(&decision.status, "Ready"),
        ("False", reason::PROGRESSING)
    );
    assert_eq!(
        condition(&decision.status, "Reconciling"),
        ("True", reason::PROGRESSING)
    );
    assert!(reasons(&decision).is_empty(), "{:?}", reasons(&decision));

    // A repair of the Deployment's own labels changes no spec: the pool stays Ready.
    let mut stripped = converged(&pool);
    if let Some(labels) = stripped
        .deployment
        .as_mut()
        .and_then(|d| d.metadata.labels.as_mut())
    {
        labels.clear();
    }
    let repair = stripped.decide(&pool, None);
    assert!(matches!(
        repair.writes.deployment,
        Some(DeploymentWrite::Apply(_))
    ));
    assert!(!repair.write_status, "{:?}", repair.status.conditions);
    assert_eq!(condition(&repair.status, "Ready").0, "True");
}

#[test]
fn a_same_named_deployment_of_someone_else_is_never_written() {
    let pool = pool(json!({}));
    let mut foreign = Deployment::default();
    foreign.metadata.owner_references = Some(vec![OwnerReference {
        uid: "someone-else".into(),
        controller: Some(true),
        ..OwnerReference::default()
    }]);
    let world = World {
        deployment: Some(foreign),
        ..World::default()
    };
    let decision = world.decide(&pool, None);
    assert!(decision.writes.is_empty());
    assert_eq!(
        condition(&decision.status, "Stalled"),
        ("True", reason::NOT_OWNED)
    );
    assert_eq!(reasons(&decision), [reason::NOT_OWNED]);
}

#[test]
fn a_budget_is_made_only_where_it_protects_a_pod_and_removed_when_the_pool_turns_it_off() {
    let budget = |decision: &Decision| {
        decision
            .status
            .effective
            .as_ref()
            .map(|e| e.disruption_budget)
    };
    // One replica that maxUnavailable 1 may take, and 60 % of 2 rounded up: nothing to protect.
    for overlay in [
        json!({"spec": {"replicas": 1}}),
        json!({"spec": {"replicas": 2, "policy": {"disruption": {"maxUnavailable": "60%"}}}}),
    ] {
        let decision = World::default().decide(&pool(overlay.clone()), None);
        assert!(decision.writes.pdb.is_none(), "{overlay}");
        assert_eq!(budget(&decision), Some(DisruptionBudget::NothingToProtect));
    }
    // 49 % of 3 rounded up is 2: one pod is protected.
    let three =
        pool(json!({"spec": {"replicas": 3, "policy": {"disruption": {"maxUnavailable": "49%"}}}}));
    let decision = World::default().decide(&three, None);
    assert!(matches!(decision.writes.pdb, Some(BudgetWrite::Apply(_))));
    assert_eq!(budget(&decision), Some(DisruptionBudget::Applied));

    // A running pool that turns its budget off deletes its own, named by uid, and only that.
    let mut world = World::default();
    world.carry_out(world.decide(&pool(json!({})), None));
    assert!(world.pdb.is_some());
    let off = pool(json!({"spec": {"policy": {"disruption": {"budget": false}}}}));
    let decision = world.decide(&off, None);
    assert!(
        matches!(&decision.writes.pdb, Some(BudgetWrite::Delete { uid }) if uid == PDB_UID),
        "{:?}",
        decision.writes.pdb
    );
    assert_eq!(budget(&decision), Some(DisruptionBudget::Disabled));
    world.carry_out(decision);
    assert!(world.pdb.is_none());
    assert!(world.decide(&off, None).writes.pdb.is_none());
}

#[test]
fn a_same_named_budget_of_someone_else_stalls_only_a_pool_that_wants_one() {
    let foreign = PodDisruptionBudget {
        metadata: kube::api::ObjectMeta {
            uid: Some("theirs".into()),
            ..kube::api::ObjectMeta::default()
        },
        ..PodDisruptionBudget::default()
    };
    let world = World {
        pdb: Some(foreign),
        ..World::default()
    };
    let wants = world.decide(&pool(json!({})), None);
    assert_eq!(
        condition(&wants.status, "Stalled"),
        ("True", reason::NOT_OWNED)
    );
    assert!(wants.writes.is_empty());
    let off = pool(json!({"spec": {"policy": {"disruption": {"budget": false}}}}));
    let decision = world.decide(&off, None);
    assert_eq!(condition(&decision.status, "Stalled").0, "False");
    assert!(decision.writes.pdb.is_none(), "never deleted: not ours");
    assert!(decision.writes.deployment.is_some());
}

#[test]
fn a_refused_write_is_decided_on_again_as_a_stall_with_nothing_to_write() {
    let pool = pool(json!({}));
    let refused = Stall {
        reason: reason::WRITE_REFUSED,
        message: "the API server refused to apply Deployment shop/api (422 Invalid)".into(),
    };
    let decision = World::default().decide(&pool, Some(refused));
    assert!(decision.writes.is_empty());
    assert_eq!(
        condition(&decision.status, "Stalled"),
        ("True", reason::WRITE_REFUSED)
    );
    let warning = &decision.notices[0].event;
    assert!(matches!(warning.type_, EventType::Warning));
    assert!(warning.note.as_deref().unwrap_or_default().contains("422"));
}

#[test]
fn an_invalid_spec_leaves_the_running_pool_untouched() {
    let valid = pool(json!({}));
    let mut world = World::default();
    world.carry_out(world.decide(&valid, None));
    let invalid = pool(json!({"spec": {"container": "missing"}}));
    let decision = world.decide(&invalid, None);
    assert!(decision.writes.is_empty());
    let stalled = decision
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .expect("Stalled");
    assert_eq!(stalled.reason, reason::INVALID_SPEC);
    assert!(
        stalled
            .message
            .contains("the running pool was left untouched"),
        "{}",
        stalled.message
    );
    assert_eq!(
        decision.status.ready_replicas, 2,
        "still read from the Deployment"
    );
}

#[test]
fn each_newly_counted_abort_is_a_warning_folded_by_pod_and_a_metric_increment() {
    let pool = pool(json!({}));
    let workers = Report {
        fresh: vec![AbortRecord {
            pod: "api-7d9-x2".into(),
            container: "app".into(),
            reason: "BootFailed".into(),
            exit_code: Some(3),
            signal: None,
            restart_count: 2,
            time: None,
            message: None,
            hint: Some("ModuleNotFoundError: No module named 'shop'".into()),
            inferred: false,
        }],
        ..Report::default()
    };
    let decision = World::default().decide_with(&pool, &workers, None);
    let [abort] = decision.aborts.as_slice() else {
        panic!("one abort Event");
    };
    assert_eq!(abort.fold, Fold::Series);
    assert_eq!(abort.event.reason, "BootFailed");
    assert_eq!(
        abort.event.note.as_deref(),
        Some("pod api-7d9-x2 container app exited 3: ModuleNotFoundError: No module named 'shop'")
    );
    let pod = abort
        .event
        .secondary
        .as_ref()
        .and_then(|r| r.name.as_deref());
    assert_eq!(pod, Some("api-7d9-x2"));
}

#[test]
fn the_pool_comes_back_when_its_pods_or_held_progress_ask_and_at_least_hourly() {
    let secs = |recheck: Option<i64>, held: Option<u64>| {
        requeue(
            recheck.map(SignedDuration::from_secs),
            held.map(Duration::from_secs),
        )
        .as_secs()
    };
    assert_eq!(secs(None, None), RESYNC.as_secs());
    assert_eq!(secs(Some(30), None), 30);
    assert_eq!(secs(Some(0), None), 1, "never a hot loop");
    assert_eq!(secs(Some(30), Some(2)), 2);
    assert_eq!(secs(Some(1), Some(2)), 1);
    assert_eq!(secs(Some(i64::MAX / 2), None), RESYNC.as_secs());
}
