//! Reconcile harness on an in-memory API (kube-fake-client) that counts every request.
//!
//! The fake has no watch, so the harness plays the part of the watch caches: after each
//! reconcile it lists the children (uncounted) into the stores the controller reads, and it
//! holds the pool's pods and their logs as a kubelet would.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::watcher;
use kube_fake_client::{ClientBuilder, PatchType, interceptor};
use serde_json::json;
use workerpool_core::aborts::classify::KubeletEvent;
use workerpool_core::api::{WorkerPool, WorkerPoolStatus};
use workerpool_core::controller::kubelet::EventReader;
use workerpool_core::controller::logs::{LogError, LogReader};
use workerpool_core::controller::metrics::Metrics;
use workerpool_core::controller::pod_cache::PodCache;
use workerpool_core::controller::watched::Guarded;
use workerpool_core::controller::watched::Watched;
use workerpool_core::controller::{Caches, Clock, Context, reconcile};

pub const NS: &str = "shop";

#[derive(Default)]
pub struct Requests {
    pub counting: AtomicBool,
    pub writes: AtomicUsize,
    pub reads: AtomicUsize,
    pub patches: std::sync::Mutex<Vec<String>>,
    /// An object name whose applies the fake API server refuses with 422, as admission would.
    pub refuse: std::sync::Mutex<Option<String>>,
}

impl Requests {
    pub fn read(&self) {
        if self.counting.load(Ordering::SeqCst) {
            self.reads.fetch_add(1, Ordering::SeqCst);
        }
    }
    pub fn write(&self, what: String) {
        if self.counting.load(Ordering::SeqCst) {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.patches.lock().unwrap().push(what);
        }
    }
    pub fn total(&self) -> usize {
        self.reads.load(Ordering::SeqCst) + self.writes.load(Ordering::SeqCst)
    }
    pub fn reset(&self) {
        self.reads.store(0, Ordering::SeqCst);
        self.writes.store(0, Ordering::SeqCst);
        self.patches.lock().unwrap().clear();
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
    pub client: kube::Client,
    pub requests: Arc<Requests>,
    pub deployments: Writer<Watched<Deployment>>,
    pub pdbs: Writer<Watched<PodDisruptionBudget>>,
    pub pods: PodCache,
    pub jobs: Writer<Watched<Job>>,
    pub logs: Arc<Logs>,
    pub events: Arc<KubeletEvents>,
    pub ctx: Arc<Context>,
    /// Seconds since the start of the test, read by the controller's clock.
    pub seconds: Arc<AtomicI64>,
}

pub fn counting_interceptors(requests: Arc<Requests>) -> interceptor::Funcs {
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
        if r.refuse.lock().unwrap().as_deref() == Some(ctx.name) {
            return Err(kube_fake_client::Error::InvalidRequest(format!(
                "Deployment.apps \"{}\" is invalid: metadata.labels: Invalid value",
                ctx.name
            )));
        }
        Ok(None)
    });
    let r = requests.clone();
    let funcs = funcs.patch_status(move |ctx| {
        r.write(format!("patch status {}", ctx.name));
        if ctx.patch_type != PatchType::ApplyPatch {
            return Ok(None);
        }
        // The fake merges an apply like a merge patch; a real server removes the fields the
        // status's only manager leaves out, which replacing the status reproduces.
        let mut pool: WorkerPool = ctx.client.get(ctx.namespace, ctx.name)?;
        pool.status = serde_json::from_value(ctx.patch["status"].clone())?;
        let written = ctx
            .client
            .update_status(ctx.namespace, &pool, &PostParams::default())?;
        Ok(Some(serde_json::to_value(written)?))
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

pub async fn harness(pools: Vec<WorkerPool>, deployments: Vec<Deployment>) -> Harness {
    let requests = Arc::new(Requests::default());
    let client = ClientBuilder::new()
        .with_resource::<WorkerPool>()
        .with_status_subresource::<WorkerPool>()
        .with_status_subresource::<Deployment>()
        .with_status_subresource::<Job>()
        .with_objects(pools)
        .with_objects(deployments)
        .with_interceptor_funcs(counting_interceptors(requests.clone()))
        .build()
        .await
        .expect("fake client");
    let (deployment_store, deployment_writer): (Store<Watched<Deployment>>, _) = reflector::store();
    let (pdb_store, pdb_writer): (Store<Watched<PodDisruptionBudget>>, _) = reflector::store();
    let pod_cache = PodCache::default();
    let (job_store, job_writer): (Store<Watched<Job>>, _) = reflector::store();
    let logs = Arc::new(Logs::default());
    let events = Arc::new(KubeletEvents::default());
    let seconds = Arc::new(AtomicI64::new(0));
    let clock: Clock = {
        let seconds = seconds.clone();
        let start: jiff::Timestamp = "2026-11-22T10:00:00Z".parse().expect("timestamp");
        Arc::new(move || start + jiff::SignedDuration::from_secs(seconds.load(Ordering::SeqCst)))
    };
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
    Harness {
        client,
        requests,
        deployments: deployment_writer,
        pdbs: pdb_writer,
        pods: pod_cache,
        jobs: job_writer,
        logs,
        events,
        ctx,
        seconds,
    }
}

impl Harness {
    /// Refreshes the stores the way the watches would, without counting the requests.
    pub async fn sync_caches(&mut self) {
        self.requests.counting.store(false, Ordering::SeqCst);
        let deployments: Api<Watched<Deployment>> = Api::namespaced(self.client.clone(), NS);
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
        let pdbs: Api<Watched<PodDisruptionBudget>> = Api::namespaced(self.client.clone(), NS);
        let list = pdbs.list(&ListParams::default()).await.expect("list pdbs");
        self.pdbs.apply_watcher_event(&watcher::Event::Init);
        for p in list.items {
            self.pdbs.apply_watcher_event(&watcher::Event::InitApply(p));
        }
        self.pdbs.apply_watcher_event(&watcher::Event::InitDone);
        let jobs: Api<Watched<Job>> = Api::namespaced(self.client.clone(), NS);
        let list = jobs.list(&ListParams::default()).await.expect("list jobs");
        self.jobs.apply_watcher_event(&watcher::Event::Init);
        for j in list.items {
            self.jobs.apply_watcher_event(&watcher::Event::InitApply(j));
        }
        self.jobs.apply_watcher_event(&watcher::Event::InitDone);
    }

    pub async fn pool(&self, name: &str) -> WorkerPool {
        self.requests.counting.store(false, Ordering::SeqCst);
        let api: Api<WorkerPool> = Api::namespaced(self.client.clone(), NS);
        api.get(name).await.expect("pool exists")
    }

    pub async fn deployment(&self, name: &str) -> Option<Deployment> {
        self.requests.counting.store(false, Ordering::SeqCst);
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), NS);
        api.get_opt(name).await.expect("get deployment")
    }

    /// Reconciles the pool as stored now, counting requests; then refreshes the caches.
    pub async fn reconcile(&mut self, name: &str) -> Action {
        let pool = self.pool(name).await;
        self.reconcile_object(pool).await
    }

    /// Reconciles this version of a pool (say, one the watch cache still holds after a write);
    /// returns what the reconcile asked of the controller runtime.
    pub async fn reconcile_object(&mut self, pool: WorkerPool) -> Action {
        self.requests.reset();
        self.requests.counting.store(true, Ordering::SeqCst);
        let action = reconcile(Arc::new(Guarded(Ok(Box::new(pool)))), self.ctx.clone())
            .await
            .expect("reconcile succeeds");
        self.requests.counting.store(false, Ordering::SeqCst);
        self.sync_caches().await;
        action
    }

    /// Plays the Deployment controller: every pod asked for is Ready.
    pub async fn all_pods_ready(&mut self, name: &str) {
        self.pods_ready(name, None).await;
    }

    /// Plays the Deployment controller: every pod asked for exists, `ready` of them (all when
    /// None) are Ready.
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
    pub async fn converge(&mut self, name: &str) {
        self.reconcile(name).await;
        self.all_pods_ready(name).await;
        self.reconcile(name).await;
    }

    /// Replaces the pod cache, as the pod watch would after the kubelet's writes.
    pub fn set_pods(&mut self, pods: Vec<Pod>) {
        self.pods.apply(watcher::Event::<&Pod>::Init);
        for p in pods {
            self.pods.apply(watcher::Event::InitApply(&p));
        }
        self.pods.apply(watcher::Event::<&Pod>::InitDone);
    }

    /// Changes the pool's spec as `kubectl apply` would; the generation goes up.
    pub async fn patch_spec(&mut self, name: &str, spec: serde_json::Value) {
        self.requests.counting.store(false, Ordering::SeqCst);
        let api: Api<WorkerPool> = Api::namespaced(self.client.clone(), NS);
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await
        .expect("patch pool spec");
    }

    /// Plays the Job controller: the Job gets a `Complete` or `Failed` condition.
    pub async fn finish_job(&mut self, name: &str, condition: serde_json::Value) {
        self.requests.counting.store(false, Ordering::SeqCst);
        let api: Api<Job> = Api::namespaced(self.client.clone(), NS);
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [condition]}})),
        )
        .await
        .expect("patch job status");
        self.sync_caches().await;
    }

    pub async fn jobs(&self) -> Vec<Job> {
        self.requests.counting.store(false, Ordering::SeqCst);
        let api: Api<Job> = Api::namespaced(self.client.clone(), NS);
        api.list(&ListParams::default())
            .await
            .expect("list jobs")
            .items
    }

    /// The controller's clock now.
    pub fn now(&self) -> jiff::Timestamp {
        (self.ctx.clock)()
    }

    pub fn advance(&self, seconds: i64) {
        self.seconds.fetch_add(seconds, Ordering::SeqCst);
    }

    pub fn writes(&self) -> Vec<String> {
        self.requests.patches.lock().unwrap().clone()
    }
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
