//! The reconcile pipeline against an in-memory API (kube-fake-client), counting every request.
//!
//! The fake has no watch, so the harness plays the part of the watch caches: after each
//! reconcile it lists the children (uncounted) into the stores the controller reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::watcher;
use kube_fake_client::{ClientBuilder, interceptor};
use serde_json::json;
use workerpool_operator::api::{WorkerPool, WorkerPoolStatus};
use workerpool_operator::controller::metrics::Metrics;
use workerpool_operator::controller::{Clock, Context, reconcile};

const NS: &str = "shop";

#[derive(Default)]
struct Requests {
    counting: AtomicBool,
    writes: AtomicUsize,
    reads: AtomicUsize,
    patches: std::sync::Mutex<Vec<String>>,
}

impl Requests {
    fn read(&self) {
        if self.counting.load(Ordering::SeqCst) {
            self.reads.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn write(&self, what: String) {
        if self.counting.load(Ordering::SeqCst) {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.patches.lock().unwrap().push(what);
        }
    }
    fn total(&self) -> usize {
        self.reads.load(Ordering::SeqCst) + self.writes.load(Ordering::SeqCst)
    }
    fn reset(&self) {
        self.reads.store(0, Ordering::SeqCst);
        self.writes.store(0, Ordering::SeqCst);
        self.patches.lock().unwrap().clear();
    }
}

struct Harness {
    client: kube::Client,
    requests: Arc<Requests>,
    deployments: Writer<Deployment>,
    pdbs: Writer<PodDisruptionBudget>,
    ctx: Arc<Context>,
    /// Seconds since the start of the test, read by the controller's clock.
    seconds: Arc<AtomicI64>,
}

fn counting_interceptors(requests: Arc<Requests>) -> interceptor::Funcs {
    let r = requests.clone();
    let funcs = interceptor::Funcs::new().get(move |_| {
        r.read();
        Ok(None)
    });
    let r = requests.clone();
    let funcs = funcs.list(move |_| {
        r.read();
        Ok(None)
    });
    let r = requests.clone();
    let funcs = funcs.create(move |ctx| {
        r.write(format!(
            "create {}",
            ctx.object["kind"].as_str().unwrap_or_default()
        ));
        Ok(None)
    });
    let r = requests.clone();
    let funcs = funcs.patch(move |ctx| {
        r.write(format!("patch {}", ctx.name));
        Ok(None)
    });
    let r = requests.clone();
    let funcs = funcs.patch_status(move |ctx| {
        r.write(format!("patch status {}", ctx.name));
        Ok(None)
    });
    let r = requests.clone();
    let funcs = funcs.replace(move |_| {
        r.write("replace".into());
        Ok(None)
    });
    let r = requests.clone();
    let funcs = funcs.update(move |_| {
        r.write("update".into());
        Ok(None)
    });
    let r = requests;
    funcs.delete(move |_| {
        r.write("delete".into());
        Ok(None)
    })
}

fn pool(name: &str, spec: serde_json::Value) -> WorkerPool {
    let mut value = json!({
        "apiVersion": "workerpool.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"), "generation": 1},
        "spec": {
            "replicas": 6,
            "runtime": "gunicorn",
            "template": {"spec": {"containers": [
                {"name": "app", "image": "example/app:1", "ports": [{"name": "http", "containerPort": 8000}]}
            ]}}
        }
    });
    if let (Some(base), Some(extra)) = (value["spec"].as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(value).expect("test pool")
}

async fn harness(pools: Vec<WorkerPool>, deployments: Vec<Deployment>) -> Harness {
    let requests = Arc::new(Requests::default());
    let client = ClientBuilder::new()
        .with_resource::<WorkerPool>()
        .with_status_subresource::<WorkerPool>()
        .with_status_subresource::<Deployment>()
        .with_objects(pools)
        .with_objects(deployments)
        .with_interceptor_funcs(counting_interceptors(requests.clone()))
        .build()
        .await
        .expect("fake client");
    let (deployment_store, deployment_writer): (Store<Deployment>, _) = reflector::store();
    let (pdb_store, pdb_writer): (Store<PodDisruptionBudget>, _) = reflector::store();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "workerpool-operator".into(),
            instance: None,
        },
    );
    let seconds = Arc::new(AtomicI64::new(0));
    let clock: Clock = {
        let seconds = seconds.clone();
        let start: jiff::Timestamp = "2026-11-22T10:00:00Z".parse().expect("timestamp");
        Arc::new(move || start + jiff::SignedDuration::from_secs(seconds.load(Ordering::SeqCst)))
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        deployment_store,
        pdb_store,
        recorder,
        Arc::new(Metrics::default()),
        clock,
    ));
    Harness {
        client,
        requests,
        deployments: deployment_writer,
        pdbs: pdb_writer,
        ctx,
        seconds,
    }
}

impl Harness {
    /// Refreshes the stores the way the watches would, without counting the requests.
    async fn sync_caches(&mut self) {
        self.requests.counting.store(false, Ordering::SeqCst);
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), NS);
        let list = deployments
            .list(&ListParams::default())
            .await
            .expect("list deployments");
        self.deployments.apply_watcher_event(&watcher::Event::Init);
        for d in list.items {
            self.deployments
                .apply_watcher_event(&watcher::Event::InitApply(d));
        }
        self.deployments
            .apply_watcher_event(&watcher::Event::InitDone);
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), NS);
        let list = pdbs.list(&ListParams::default()).await.expect("list pdbs");
        self.pdbs.apply_watcher_event(&watcher::Event::Init);
        for p in list.items {
            self.pdbs.apply_watcher_event(&watcher::Event::InitApply(p));
        }
        self.pdbs.apply_watcher_event(&watcher::Event::InitDone);
    }

    async fn pool(&self, name: &str) -> WorkerPool {
        self.requests.counting.store(false, Ordering::SeqCst);
        let api: Api<WorkerPool> = Api::namespaced(self.client.clone(), NS);
        api.get(name).await.expect("pool exists")
    }

    async fn deployment(&self, name: &str) -> Option<Deployment> {
        self.requests.counting.store(false, Ordering::SeqCst);
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), NS);
        api.get_opt(name).await.expect("get deployment")
    }

    /// Reconciles the pool as stored now, counting requests; then refreshes the caches.
    async fn reconcile(&mut self, name: &str) {
        let pool = self.pool(name).await;
        self.requests.reset();
        self.requests.counting.store(true, Ordering::SeqCst);
        reconcile(Arc::new(DeserializeGuard(Ok(pool))), self.ctx.clone())
            .await
            .expect("reconcile succeeds");
        self.requests.counting.store(false, Ordering::SeqCst);
        self.sync_caches().await;
    }

    /// Plays the Deployment controller: every pod asked for is Ready.
    async fn all_pods_ready(&mut self, name: &str) {
        let deployment = self.deployment(name).await.expect("deployment");
        let replicas = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(0);
        let status = DeploymentStatus {
            observed_generation: deployment.metadata.generation,
            replicas: Some(replicas),
            ready_replicas: Some(replicas),
            updated_replicas: Some(replicas),
            available_replicas: Some(replicas),
            ..DeploymentStatus::default()
        };
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), NS);
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .expect("patch deployment status");
        self.sync_caches().await;
    }

    /// First reconcile, every pod Ready, reconcile again: a pool that fits in one ramp step is converged.
    async fn converge(&mut self, name: &str) {
        self.reconcile(name).await;
        self.all_pods_ready(name).await;
        self.reconcile(name).await;
    }

    fn advance(&self, seconds: i64) {
        self.seconds.fetch_add(seconds, Ordering::SeqCst);
    }

    fn writes(&self) -> Vec<String> {
        self.requests.patches.lock().unwrap().clone()
    }
}

fn condition<'a>(
    status: &'a WorkerPoolStatus,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

/// Asserts `Stalled=True` with this reason and a message containing `needle`.
fn assert_stalled(status: &WorkerPoolStatus, reason: &str, needle: &str) {
    let stalled = condition(status, "Stalled");
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", reason)
    );
    assert!(stalled.message.contains(needle), "{}", stalled.message);
}

fn replicas(deployment: &Deployment) -> i32 {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(-1)
}

#[tokio::test]
async fn first_reconcile_creates_children_and_status() {
    let mut h = harness(vec![pool("api", json!({}))], vec![]).await;
    h.reconcile("api").await;
    let writes = h.writes();
    assert!(writes.contains(&"patch api".to_string()), "{writes:?}");
    let deployment = h.deployment("api").await.expect("Deployment created");
    assert_eq!(replicas(&deployment), 2, "first step is maxConcurrent");
    let owner = &deployment
        .metadata
        .owner_references
        .as_ref()
        .expect("owner")[0];
    assert_eq!(owner.uid, "uid-api");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(h.client.clone(), NS);
    assert!(
        pdbs.get_opt("api").await.unwrap().is_some(),
        "PodDisruptionBudget created"
    );
    let status = h.pool("api").await.status.expect("status written");
    assert_eq!(status.observed_generation, 1);
    assert_eq!(status.selector.as_deref(), Some("workerpool.dev/pool=api"));
    assert_eq!(condition(&status, "Ready").status, "False");
    assert_eq!(condition(&status, "Reconciling").status, "True");
    assert_eq!(condition(&status, "Stalled").status, "False");
    assert!(condition(&status, "Ready").observed_generation == Some(1));
    let effective = status.effective.expect("effective numbers");
    assert_eq!(effective.termination_grace_period_seconds, 40);
}

#[tokio::test]
async fn converged_pool_costs_no_requests() {
    let mut h = harness(vec![pool("api", json!({"replicas": 2}))], vec![]).await;
    h.converge("api").await;
    let status = h.pool("api").await.status.expect("status");
    assert_eq!(condition(&status, "Ready").status, "True", "{status:?}");
    h.reconcile("api").await;
    assert_eq!(
        h.requests.total(),
        0,
        "converged pool made requests: {:?}",
        h.writes()
    );
    h.reconcile("api").await;
    assert_eq!(
        h.requests.total(),
        0,
        "converged pool made requests: {:?}",
        h.writes()
    );
}

#[tokio::test]
async fn ramp_grows_only_when_the_previous_step_is_ready() {
    let mut h = harness(vec![pool("api", json!({"replicas": 5}))], vec![]).await;
    h.reconcile("api").await;
    assert_eq!(replicas(&h.deployment("api").await.unwrap()), 2);
    // Not ready yet: the target holds.
    h.reconcile("api").await;
    assert_eq!(replicas(&h.deployment("api").await.unwrap()), 2);
    for expected in [4, 5] {
        h.all_pods_ready("api").await;
        h.reconcile("api").await;
        assert_eq!(replicas(&h.deployment("api").await.unwrap()), expected);
        let status = h.pool("api").await.status.unwrap();
        assert_eq!(status.ramp_target, Some(expected));
    }
    h.all_pods_ready("api").await;
    h.reconcile("api").await;
    assert_eq!(
        condition(&h.pool("api").await.status.unwrap(), "Ready").status,
        "True"
    );
}

#[tokio::test]
async fn scale_down_is_immediate() {
    let mut h = harness(vec![pool("api", json!({"replicas": 2}))], vec![]).await;
    h.reconcile("api").await;
    h.all_pods_ready("api").await;
    let api: Api<WorkerPool> = Api::namespaced(h.client.clone(), NS);
    api.patch(
        "api",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    h.reconcile("api").await;
    assert_eq!(replicas(&h.deployment("api").await.unwrap()), 1);
}

#[tokio::test]
async fn changed_spec_updates_the_deployment_once() {
    let mut h = harness(vec![pool("api", json!({"replicas": 2}))], vec![]).await;
    h.converge("api").await;
    let api: Api<WorkerPool> = Api::namespaced(h.client.clone(), NS);
    api.patch(
        "api",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"policy": {"shutdown": {"drainSeconds": 10}}}})),
    )
    .await
    .unwrap();
    h.reconcile("api").await;
    let deployment_writes = h.writes().iter().filter(|w| *w == "patch api").count();
    // One apply of the Deployment (the PDB is unchanged), then the status.
    assert_eq!(deployment_writes, 1, "{:?}", h.writes());
    let pod = h
        .deployment("api")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    assert_eq!(pod.termination_grace_period_seconds, Some(10 + 30 + 5));
}

fn foreign_deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": {"team": "other"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "other"}},
            "template": {"metadata": {"labels": {"app": "other"}}, "spec": {"containers": [{"name": "x", "image": "other:1"}]}}
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn foreign_deployment_is_left_alone_and_reported() {
    let mut h = harness(
        vec![pool("api", json!({}))],
        vec![foreign_deployment("api")],
    )
    .await;
    h.reconcile("api").await;
    let deployment = h.deployment("api").await.unwrap();
    assert_eq!(deployment, foreign_deployment_after_store(&deployment));
    assert_eq!(replicas(&deployment), 3);
    assert!(
        deployment.metadata.owner_references.is_none(),
        "not adopted"
    );
    assert!(
        h.writes().iter().all(|w| w != "patch api"),
        "{:?}",
        h.writes()
    );
    let status = h.pool("api").await.status.unwrap();
    assert_stalled(&status, "ChildNotOwned", "Deployment shop/api");
}

/// The foreign object as stored, to compare before and after: only its own fields.
fn foreign_deployment_after_store(stored: &Deployment) -> Deployment {
    let mut expected = foreign_deployment("api");
    expected.metadata = stored.metadata.clone();
    expected.status = stored.status.clone();
    expected
}

#[tokio::test]
async fn invalid_pool_stalls_and_leaves_the_running_deployment_untouched() {
    let mut h = harness(vec![pool("api", json!({"replicas": 2}))], vec![]).await;
    h.converge("api").await;
    let before = h.deployment("api").await.unwrap();
    let api: Api<WorkerPool> = Api::namespaced(h.client.clone(), NS);
    api.patch(
        "api",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"container": "web", "replicas": 9}})),
    )
    .await
    .unwrap();
    h.reconcile("api").await;
    assert!(
        h.writes().iter().all(|w| w != "patch api"),
        "Deployment was written: {:?}",
        h.writes()
    );
    let after = h.deployment("api").await.unwrap();
    assert_eq!(before.spec, after.spec);
    let status = h.pool("api").await.status.unwrap();
    assert_stalled(&status, "InvalidSpec", "spec.container");
    assert_eq!(condition(&status, "Ready").status, "False");
    assert!(
        status.effective.is_some(),
        "the last applied numbers stay published"
    );
    // A stalled pool does not loop: the next reconcile writes nothing.
    h.reconcile("api").await;
    assert_eq!(h.requests.total(), 0, "{:?}", h.writes());
}

#[tokio::test]
async fn template_conflict_sets_a_condition_naming_both_numbers() {
    let spec = json!({"template": {"spec": {"terminationGracePeriodSeconds": 10, "containers": [
        {"name": "app", "image": "example/app:1", "ports": [{"name": "http", "containerPort": 8000}]}
    ]}}});
    let mut h = harness(vec![pool("api", spec)], vec![]).await;
    h.reconcile("api").await;
    let status = h.pool("api").await.status.unwrap();
    let conflict = condition(&status, "PolicyConflict");
    assert_eq!(conflict.status, "True");
    assert!(
        conflict.message.contains("10") && conflict.message.contains("35"),
        "{}",
        conflict.message
    );
}

#[tokio::test]
async fn status_transition_time_moves_only_on_a_flip() {
    let mut h = harness(vec![pool("api", json!({"replicas": 4}))], vec![]).await;
    h.reconcile("api").await;
    h.reconcile("api").await;
    let first = condition(&h.pool("api").await.status.unwrap(), "Ready")
        .last_transition_time
        .clone();
    h.advance(30);
    h.all_pods_ready("api").await;
    h.reconcile("api").await;
    let status = h.pool("api").await.status.unwrap();
    // Still ramping (2 → 4): the message changed, the status did not.
    let ready = condition(&status, "Ready");
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("target 4"), "{}", ready.message);
    assert_eq!(ready.last_transition_time, first);
    h.advance(30);
    h.all_pods_ready("api").await;
    h.reconcile("api").await;
    let ready = condition(&h.pool("api").await.status.unwrap(), "Ready").clone();
    assert_eq!(ready.status, "True");
    assert_eq!(
        ready.last_transition_time.0,
        first.0 + jiff::SignedDuration::from_secs(60)
    );
}

#[tokio::test]
async fn malformed_pool_gets_a_warning_event() {
    let h = harness(vec![], vec![]).await;
    let invalid = InvalidObject {
        error: "spec.runtime: unknown variant `php`".into(),
        metadata: kube::core::ObjectMeta {
            name: Some("broken".into()),
            namespace: Some(NS.into()),
            uid: Some("uid-broken".into()),
            ..Default::default()
        },
    };
    h.requests.counting.store(true, Ordering::SeqCst);
    reconcile(Arc::new(DeserializeGuard(Err(invalid))), h.ctx.clone())
        .await
        .expect("reconcile");
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(h.client.clone(), NS);
    let list = events
        .list(&ListParams::default())
        .await
        .expect("list events");
    let event = list.items.first().expect("an Event was published");
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.reason.as_deref(), Some("InvalidSpec"));
    assert!(
        event
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("unknown variant"),
        "{event:?}"
    );
    assert_eq!(
        event.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("broken")
    );
}

#[tokio::test]
async fn first_reconcile_publishes_a_created_event() {
    let mut h = harness(vec![pool("api", json!({}))], vec![]).await;
    h.reconcile("api").await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(h.client.clone(), NS);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert_eq!(reasons, ["Created"]);
}
