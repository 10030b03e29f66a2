//! Reconcile harness on the sandbox's in-memory API server, the one the whole loop runs on,
//! counting every request the reconcile makes and recording its shape.
//!
//! The harness plays the part of the watch caches: after each reconcile it reads the children
//! from the server (in-process, not counted) into the stores the controller reads, and it holds
//! the pool's pods and their logs as a kubelet would.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::watcher;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use workerpool_core::aborts::classify::KubeletEvent;
use workerpool_core::api::{WorkerPool, WorkerPoolStatus};
use workerpool_core::controller::kubelet::EventReader;
use workerpool_core::controller::logs::{LogError, LogReader};
use workerpool_core::controller::metrics::Metrics;
use workerpool_core::controller::pod_cache::PodCache;
use workerpool_core::controller::watched::{Guarded, PackedPool};
use workerpool_core::controller::watched::{PackedBudget, PackedDeployment, Watched};
use workerpool_core::controller::{Caches, Clock, Context, reconcile};
use workerpool_sandbox::apiserver::http::{Fault, RequestRecord};
use workerpool_sandbox::apiserver::{
    ApiServer, ResourceType, ServerConfig, Target, Write, resource_of,
};

pub const NS: &str = "shop";

/// The requests of the reconcile being counted: those the server served since [`Requests::start`]
/// until [`Requests::stop`].
pub struct Requests {
    server: Arc<ApiServer>,
    since: AtomicUsize,
    /// `usize::MAX` while counting.
    until: AtomicUsize,
}

impl Requests {
    pub fn start(&self) {
        self.since
            .store(self.server.request_count(), Ordering::SeqCst);
        self.until.store(usize::MAX, Ordering::SeqCst);
    }

    pub fn stop(&self) {
        self.until
            .store(self.server.request_count(), Ordering::SeqCst);
    }

    /// What the counted reconcile asked of the API server, in order.
    pub fn served(&self) -> Vec<RequestRecord> {
        let all = self.server.requests();
        let until = self.until.load(Ordering::SeqCst).min(all.len());
        let since = self.since.load(Ordering::SeqCst).min(until);
        all[since..until].to_vec()
    }

    pub fn total(&self) -> usize {
        self.served().len()
    }

    /// Refuses every apply of the Deployment named `name` with 422, as admission would.
    pub fn refuse(&self, name: &str) {
        self.server.inject(Fault {
            verb: Some("patch"),
            kind: Some("Deployment"),
            name: Some(name.into()),
            code: 422,
            message: Some(format!(
                "Deployment.apps \"{name}\" is invalid: metadata.labels: Invalid value"
            )),
            times: u32::MAX,
        });
    }

    pub fn accept(&self) {
        self.server.clear_faults();
    }
}

/// One write as the tests name it: `create KIND`, `patch NAME`, `patch status NAME`, …
fn write_name(record: &RequestRecord) -> String {
    let name = record.name.as_deref().unwrap_or_default();
    match (record.verb, record.subresource.as_deref()) {
        ("create", _) => format!("create {}", record.kind),
        ("patch", Some(sub)) => format!("patch {sub} {name}"),
        ("patch", None) => format!("patch {name}"),
        (verb, Some(sub)) => format!("{verb} {sub} {name}"),
        (verb, None) => format!("{verb} {name}"),
    }
}

/// Container logs as the kubelet would serve them, keyed by pod, container and previous/current.
#[derive(Default)]
pub struct Logs {
    pub texts: std::sync::Mutex<std::collections::HashMap<(String, String, bool), String>>,
    pub reads: AtomicUsize,
}

impl Logs {
    pub fn set(&self, pod: &str, container: &str, previous: bool, text: &str) {
        self.texts
            .lock()
            .unwrap()
            .insert((pod.into(), container.into(), previous), text.into());
    }
}

impl LogReader for Logs {
    fn tail<'a>(
        &'a self,
        _namespace: &'a str,
        pod: &'a str,
        container: &'a str,
        previous: bool,
    ) -> BoxFuture<'a, Result<String, LogError>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let text = self
            .texts
            .lock()
            .unwrap()
            .get(&(pod.to_string(), container.to_string(), previous))
            .cloned()
            .unwrap_or_default();
        Box::pin(async move { Ok(text) })
    }
}

/// The kubelet's Events per pod, as the API server would list them.
#[derive(Default)]
pub struct KubeletEvents {
    pub by_pod: std::sync::Mutex<std::collections::HashMap<String, Vec<KubeletEvent>>>,
    pub reads: AtomicUsize,
}

impl KubeletEvents {
    pub fn push(&self, event: KubeletEvent) {
        let mut by_pod = self.by_pod.lock().unwrap();
        by_pod.entry(event.pod.clone()).or_default().push(event);
    }
}

impl EventReader for KubeletEvents {
    fn for_pod<'a>(
        &'a self,
        _namespace: &'a str,
        pod: &'a str,
    ) -> BoxFuture<'a, Result<Vec<KubeletEvent>, kube::Error>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let events = self
            .by_pod
            .lock()
            .unwrap()
            .get(pod)
            .cloned()
            .unwrap_or_default();
        Box::pin(async move { Ok(events) })
    }
}

/// How the controller names itself on the Events it publishes in these tests.
pub fn reporter() -> Reporter {
    Reporter {
        controller: "workerpool-operator".into(),
        instance: None,
    }
}

pub struct Harness {
    pub server: Arc<ApiServer>,
    pub client: kube::Client,
    pub requests: Arc<Requests>,
    pub deployments: Writer<Watched<PackedDeployment>>,
    pub pdbs: Writer<Watched<PackedBudget>>,
    pub pods: PodCache,
    /// A test placed the pods itself ([`Harness::set_pods`]): the Deployment's pods are its own.
    pods_placed: bool,
    pub jobs: Writer<Watched<Job>>,
    pub logs: Arc<Logs>,
    pub events: Arc<KubeletEvents>,
    pub ctx: Arc<Context>,
    /// Seconds since the start of the test, read by the controller's clock.
    pub seconds: Arc<AtomicI64>,
}

pub fn pool(name: &str, spec: serde_json::Value) -> WorkerPool {
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

/// A harness whose API server already holds `pools` and `deployments` (their uids are the
/// server's: read them back).
pub async fn harness(pools: Vec<WorkerPool>, deployments: Vec<Deployment>) -> Harness {
    let seconds = Arc::new(AtomicI64::new(0));
    let clock: Clock = {
        let seconds = seconds.clone();
        let start: jiff::Timestamp = "2026-11-22T10:00:00Z".parse().expect("timestamp");
        Arc::new(move || start + jiff::SignedDuration::from_secs(seconds.load(Ordering::SeqCst)))
    };
    let server = ApiServer::new(clock.clone(), ServerConfig::default());
    for pool in pools {
        create(&server, resource_of::<WorkerPool>(), &pool);
    }
    for deployment in deployments {
        create(&server, resource_of::<Deployment>(), &deployment);
    }
    let client = server.client();
    let requests = Arc::new(Requests {
        server: server.clone(),
        since: AtomicUsize::new(0),
        until: AtomicUsize::new(0),
    });
    let (deployment_store, deployment_writer): (Store<Watched<PackedDeployment>>, _) =
        reflector::store();
    let (pdb_store, pdb_writer): (Store<Watched<PackedBudget>>, _) = reflector::store();
    let pod_cache = PodCache::default();
    let (job_store, job_writer): (Store<Watched<Job>>, _) = reflector::store();
    let logs = Arc::new(Logs::default());
    let events = Arc::new(KubeletEvents::default());
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            Caches {
                deployments: deployment_store,
                pdbs: pdb_store,
                pods: pod_cache.clone(),
                jobs: job_store,
            },
            reporter(),
            Arc::new(Metrics::default()),
            clock,
        )
        .with_logs(logs.clone())
        .with_events(events.clone()),
    );
    let mut harness = Harness {
        server,
        client,
        requests,
        deployments: deployment_writer,
        pdbs: pdb_writer,
        pods: pod_cache,
        pods_placed: false,
        jobs: job_writer,
        logs,
        events,
        ctx,
        seconds,
    };
    harness.sync_caches().await;
    harness
}

fn create<K: serde::Serialize>(server: &ApiServer, resource: &'static ResourceType, object: &K) {
    let value = serde_json::to_value(object).expect("JSON");
    server
        .create(resource, NS, value, Some("kubectl"))
        .expect("the server takes the fixture");
}

/// Every object of a kind in the namespace, as a watch would decode it.
fn listed<K: DeserializeOwned>(server: &ApiServer, resource: &'static ResourceType) -> Vec<K> {
    let (items, _, _) = server.list(
        resource,
        Some(NS),
        &Default::default(),
        &Default::default(),
        None,
        None,
    );
    items
        .iter()
        .map(|item| serde_json::from_value(Value::clone(item)).expect("decodes"))
        .collect()
}

fn relist<K>(writer: &mut Writer<K>, items: Vec<K>)
where
    K: kube::Resource<DynamicType = ()> + Clone,
{
    writer.apply_watcher_event(&watcher::Event::Init);
    for item in items {
        writer.apply_watcher_event(&watcher::Event::InitApply(item));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
}

impl Harness {
    /// Refreshes the stores the way the watches would, without a request the tests count.
    pub async fn sync_caches(&mut self) {
        let deployments = listed(&self.server, resource_of::<Deployment>());
        relist(&mut self.deployments, deployments);
        let pdbs = listed(&self.server, resource_of::<PodDisruptionBudget>());
        relist(&mut self.pdbs, pdbs);
        let jobs = listed(&self.server, resource_of::<Job>());
        relist(&mut self.jobs, jobs);
    }

    fn get<K: DeserializeOwned>(&self, resource: &'static ResourceType, name: &str) -> Option<K> {
        let object = self.server.get(resource, NS, name).ok()?;
        Some(serde_json::from_value(Value::clone(&object)).expect("decodes"))
    }

    pub async fn pool(&self, name: &str) -> WorkerPool {
        self.get(resource_of::<WorkerPool>(), name)
            .expect("pool exists")
    }

    pub async fn deployment(&self, name: &str) -> Option<Deployment> {
        self.get(resource_of::<Deployment>(), name)
    }

    /// Reconciles the pool as stored now, counting requests; then refreshes the caches.
    pub async fn reconcile(&mut self, name: &str) -> Action {
        let pool = self.pool(name).await;
        self.reconcile_object(pool).await
    }

    /// Reconciles this version of a pool (say, one the watch cache still holds after a write);
    /// returns what the reconcile asked of the controller runtime.
    pub async fn reconcile_object(&mut self, pool: WorkerPool) -> Action {
        self.requests.start();
        let action = reconcile(guarded(&pool), self.ctx.clone())
            .await
            .expect("reconcile succeeds");
        self.requests.stop();
        self.sync_caches().await;
        action
    }

    /// Plays the Deployment controller: every pod asked for is Ready.
    pub async fn all_pods_ready(&mut self, name: &str) {
        self.pods_ready(name, None).await;
    }

    /// Plays the Deployment controller and the kubelet: every pod asked for exists, `ready` of
    /// them (all when None) are Ready, each running for an hour; the pod watch delivers them,
    /// unless the test placed the pods itself.
    pub async fn pods_ready(&mut self, name: &str, ready: Option<i32>) {
        let deployment = self.deployment(name).await.expect("deployment");
        let replicas = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(0);
        let ready = ready.unwrap_or(replicas);
        let status = DeploymentStatus {
            observed_generation: deployment.metadata.generation,
            replicas: Some(replicas),
            ready_replicas: Some(ready),
            updated_replicas: Some(replicas),
            available_replicas: Some(ready),
            ..DeploymentStatus::default()
        };
        self.write_status(
            resource_of::<Deployment>(),
            name,
            json!({"status": status}),
            "deployment-controller",
        );
        if !self.pods_placed {
            self.kubelet_runs(name, replicas, ready);
        }
        self.sync_caches().await;
    }

    fn kubelet_runs(&mut self, name: &str, replicas: i32, ready: i32) {
        let since = self.now() - jiff::SignedDuration::from_hours(1);
        for gone in self.pods.pods_of(NS, name) {
            let pod = running_pod(name, &gone.name, false, since);
            self.pods.apply(watcher::Event::Delete(&pod));
        }
        for index in 0..replicas {
            let pod = running_pod(name, &format!("{name}-{index}"), index < ready, since);
            self.pods.apply(watcher::Event::Apply(&pod));
        }
    }

    fn write_status(
        &self,
        resource: &'static ResourceType,
        name: &str,
        patch: Value,
        manager: &str,
    ) {
        self.server
            .write(
                resource,
                NS,
                name,
                Target::Status,
                Write::Merge(patch),
                Some(manager),
            )
            .expect("status written");
    }

    /// First reconcile, every pod Ready, reconcile again: a pool that fits in one ramp step is converged.
    pub async fn converge(&mut self, name: &str) {
        self.reconcile(name).await;
        self.all_pods_ready(name).await;
        self.reconcile(name).await;
    }

    /// Replaces the pod cache, as the pod watch would after the kubelet's writes.
    pub fn set_pods(&mut self, pods: Vec<Pod>) {
        self.pods_placed = true;
        self.pods.apply(watcher::Event::<&Pod>::Init);
        for p in pods {
            self.pods.apply(watcher::Event::InitApply(&p));
        }
        self.pods.apply(watcher::Event::<&Pod>::InitDone);
    }

    /// Changes the pool's spec as `kubectl apply` would; the generation goes up.
    pub async fn patch_spec(&mut self, name: &str, spec: serde_json::Value) {
        self.server
            .write(
                resource_of::<WorkerPool>(),
                NS,
                name,
                Target::Main,
                Write::Merge(json!({ "spec": spec })),
                Some("kubectl"),
            )
            .expect("patch pool spec");
    }

    /// Plays the Job controller: the Job gets a `Complete` or `Failed` condition.
    pub async fn finish_job(&mut self, name: &str, condition: serde_json::Value) {
        self.write_status(
            resource_of::<Job>(),
            name,
            json!({"status": {"conditions": [condition]}}),
            "job-controller",
        );
        self.sync_caches().await;
    }

    pub async fn jobs(&self) -> Vec<Job> {
        listed(&self.server, resource_of::<Job>())
    }

    /// The controller's clock now.
    pub fn now(&self) -> jiff::Timestamp {
        (self.ctx.clock)()
    }

    pub fn advance(&self, seconds: i64) {
        self.seconds.fetch_add(seconds, Ordering::SeqCst);
    }

    /// The counted reconcile's writes, named as [`write_name`] does.
    pub fn writes(&self) -> Vec<String> {
        self.requests
            .served()
            .iter()
            .filter(|r| r.is_write())
            .map(write_name)
            .collect()
    }
}

/// A pod of `pool` whose app container runs since `since`.
pub fn running_pod(pool: &str, name: &str, ready: bool, since: jiff::Timestamp) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"),
                     "labels": {"workerpool.dev/pool": pool}},
        "status": {"phase": "Running", "containerStatuses": [{
            "name": "app", "ready": ready, "restartCount": 0, "image": "app", "imageID": "",
            "state": {"running": {"startedAt": since.to_string()}}
        }]}
    }))
    .expect("pod")
}

pub fn condition<'a>(
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
pub fn assert_stalled(status: &WorkerPoolStatus, reason: &str, needle: &str) {
    let stalled = condition(status, "Stalled");
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", reason)
    );
    assert!(stalled.message.contains(needle), "{}", stalled.message);
}

pub fn replicas(deployment: &Deployment) -> i32 {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(-1)
}

/// A pool as the controller runtime hands it to a reconcile: from the watch cache, packed.
pub fn guarded(pool: &WorkerPool) -> Arc<Guarded<PackedPool>> {
    Arc::new(Guarded(Ok(Box::new(
        PackedPool::pack(pool).expect("a pool packs"),
    ))))
}
