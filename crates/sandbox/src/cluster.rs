//! The simulated cluster around the embedded API: a Deployment controller (rolling updates with
//! maxSurge/maxUnavailable, scale-up all at once as the ReplicaSet controller does), a Job
//! controller, and a kubelet that runs each pod through the scenario and writes the container
//! statuses and Events a real kubelet writes.
//!
//! Simplifications, none of which the operator can observe: pods are owned by their Deployment
//! directly (no ReplicaSet objects), are bound to a node when created, and the core/v1 Events
//! of the kubelet and the events.k8s.io/v1 Events of the operator are stored apart.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::apiserver::{ApiServer, Change, RESOURCES, ResourceType, Target, Write};
use super::scenario::Scenario;
use super::timeline::Timeline;
use k8s_openapi::api::core::v1::Container;

use workerpool_core::api::{RUNTIME_ANNOTATION, Runtime};
use workerpool_core::pool::celery;
use workerpool_core::pool::policy::{
    self, ExplicitFlags, GUNICORN_DEFAULT_TIMEOUT_SECONDS, WorkerClass, WorkerKind,
};

const PODS: &ResourceType = &RESOURCES[0];
const EVENTS: &ResourceType = &RESOURCES[1];
const DEPLOYMENTS: &ResourceType = &RESOURCES[2];
const JOBS: &ResourceType = &RESOURCES[3];
const SYSTEM: &str = "sandbox-cluster";
const NODE: &str = "sandbox-node";

type Key = (String, String);

fn key_of(object: &Value) -> Key {
    (
        str_at(object, "/metadata/namespace").to_string(),
        str_at(object, "/metadata/name").to_string(),
    )
}

fn str_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn i64_at(object: &Value, pointer: &str) -> Option<i64> {
    object.pointer(pointer).and_then(Value::as_i64)
}

/// Kubernetes memory quantity in MiB (`512Mi`, `1Gi`, `1G`, `1000000`).
pub fn quantity_mib(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let bytes = match unit {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0_f64.powi(4),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "m" => 1e-3,
        _ => return None,
    };
    Some(number * bytes / (1024.0 * 1024.0))
}

fn probe_window(probe: &Value) -> f64 {
    let delay = i64_at(probe, "/initialDelaySeconds").unwrap_or(0);
    let period = i64_at(probe, "/periodSeconds").unwrap_or(10).max(1);
    let failures = i64_at(probe, "/failureThreshold").unwrap_or(3).max(1);
    (delay + period * failures) as f64
}

/// The preStop sleep: the native sleep action or an exec of `sleep N`.
fn pre_stop_seconds(container: &Value) -> f64 {
    if let Some(seconds) = i64_at(container, "/lifecycle/preStop/sleep/seconds") {
        return seconds as f64;
    }
    let command = container
        .pointer("/lifecycle/preStop/exec/command")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    command
        .split_whitespace()
        .skip_while(|w| *w != "sleep")
        .nth(1)
        .and_then(|n| n.trim_end_matches(';').parse().ok())
        .unwrap_or(0.0)
}

/// Memory a simulated node has for its pods: a container without a limit is OOM-killed by the
/// kernel when it has taken this much.
pub const NODE_MEMORY_MIB: f64 = 2048.0;

/// CPUs of a simulated node: what `os.cpu_count()` says in every container on it.
pub const NODE_CPUS: usize = 16;

/// Memory of a celery worker's main process, beside its pool's children.
const CELERY_MAIN_MIB: f64 = 100.0;

/// A celery worker's prefork pool, with its options read as celery reads them.
#[derive(Clone, Debug, Default)]
struct CeleryPool {
    /// `--concurrency`, else the node's CPUs (billiard's `cpu_count()`).
    concurrency: usize,
    /// `--time-limit`, in seconds.
    time_limit: Option<f64>,
    /// `--max-memory-per-child`, in MiB.
    max_memory_per_child: Option<f64>,
    children: Vec<PoolChild>,
    /// The number the next child's name takes (`ForkPoolWorker-N`).
    next: u32,
    /// Recycling at `--max-memory-per-child` was said on the timeline.
    recycle_told: bool,
}

#[derive(Clone, Debug)]
struct PoolChild {
    number: u32,
    pid: u32,
    forked: f64,
    task_started: Option<f64>,
    /// When the next task arrives for it.
    next_task_at: f64,
}

impl CeleryPool {
    fn of(container: &Value) -> CeleryPool {
        let options = serde_json::from_value::<Container>(container.clone())
            .map(|c| celery::worker_options(&c))
            .unwrap_or_default();
        let seconds = |given| match given {
            Some(celery::Given::Value(v)) if v > 0.0 => Some(v),
            _ => None,
        };
        CeleryPool {
            concurrency: celery::whole(options.concurrency)
                .map_or(NODE_CPUS, |n| usize::try_from(n.max(1)).unwrap_or(1)),
            time_limit: seconds(options.time_limit),
            max_memory_per_child: seconds(options.max_memory_per_child).map(|kib| kib / 1024.0),
            ..CeleryPool::default()
        }
    }

    /// Forks a child for slot `slot` (or a new one), as billiard replaces one that exited.
    fn fork(&mut self, slot: Option<usize>, pid: &mut u32, now: f64) {
        self.next += 1;
        *pid += 1;
        let child = PoolChild {
            number: self.next,
            pid: *pid,
            forked: now,
            task_started: None,
            next_task_at: now,
        };
        match slot.and_then(|i| self.children.get_mut(i)) {
            Some(old) => *old = child,
            None => self.children.push(child),
        }
    }

    /// When the last task running ends.
    fn tasks_end(&self, length: Option<f64>) -> Option<f64> {
        let length = length?;
        self.children
            .iter()
            .filter_map(|c| c.task_started)
            .map(|started| started + length)
            .reduce(f64::max)
    }
}

/// gunicorn's effective flags, read exactly as the policy engine reads them: the command line
/// beats `GUNICORN_CMD_ARGS`, which beats gunicorn's defaults.
fn gunicorn_flags(container: &Value) -> ExplicitFlags {
    serde_json::from_value::<Container>(container.clone())
        .map(|c| policy::explicit_flags(Runtime::Gunicorn, &c))
        .unwrap_or_default()
}

fn probe_failure(probe: &Value, container: &Value, ip: &str, booting: bool) -> String {
    if let Some(get) = probe.get("httpGet") {
        let port = match get.get("port") {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(name)) => container
                .get("ports")
                .and_then(Value::as_array)
                .and_then(|ports| ports.iter().find(|p| str_at(p, "/name") == name))
                .and_then(|p| i64_at(p, "/containerPort"))
                .map(|p| p.to_string())
                .unwrap_or_else(|| name.clone()),
            _ => "80".into(),
        };
        let path = get.get("path").and_then(Value::as_str).unwrap_or("/");
        if booting {
            format!(
                "Get \"http://{ip}:{port}{path}\": dial tcp {ip}:{port}: connect: connection refused"
            )
        } else {
            format!(
                "Get \"http://{ip}:{port}{path}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            )
        }
    } else if let Some(tcp) = probe.get("tcpSocket") {
        let port = tcp
            .get("port")
            .map(|p| p.to_string().trim_matches('"').to_string())
            .unwrap_or_default();
        format!("dial tcp {ip}:{port}: connect: connection refused")
    } else {
        "command timed out".into()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// Waiting to start the container (first start or immediate restart).
    Creating { until: f64 },
    /// The container runs; `booted` says whether it serves.
    Running,
    /// CrashLoopBackOff until the next restart.
    BackOff { until: f64, seconds: f64 },
    /// Terminating: SIGTERM at `sigterm_at`, SIGKILL at `kill_at`.
    Stopping { sigterm_at: f64, kill_at: f64 },
    /// The container has exited and will not restart.
    Exited,
}

#[derive(Clone, Debug)]
struct Termination {
    code: i32,
    reason: &'static str,
    started: f64,
    finished: f64,
}

#[derive(Debug)]
struct SimPod {
    namespace: String,
    name: String,
    uid: String,
    owner: Option<String>,
    hash: Option<String>,
    job: bool,
    gunicorn: bool,
    /// A celery worker: it runs tasks, and SIGTERM is its warm shutdown.
    celery: bool,
    /// Its prefork pool, while it runs.
    pool: CeleryPool,
    /// The warm shutdown was logged.
    warm_shutdown_told: bool,
    /// When the worker last tried its broker, and how many times it has.
    broker_tried: Option<(f64, u32)>,
    app: Value,
    others: Vec<(String, String)>,
    ip: String,
    startup_window: Option<f64>,
    liveness_window: Option<f64>,
    grace: f64,
    pre_stop: f64,
    memory_limit: Option<f64>,
    /// gunicorn's `--timeout`; None for other app servers.
    worker_timeout: Option<f64>,
    /// gunicorn's `--preload`: the master imports the app before it forks any worker.
    preload: bool,
    /// gunicorn's worker class; None for other app servers.
    worker_class: Option<WorkerClass>,
    /// When the slow request being served started.
    request_started: Option<f64>,
    /// A slow request ran to its end: said once on the timeline.
    slow_request_told: bool,
    created: f64,
    phase: Phase,
    restarts: i32,
    last: Option<Termination>,
    current_exit: Option<Termination>,
    started_at: f64,
    worker_started_at: f64,
    ready_since: Option<f64>,
    boot_need: f64,
    progress: f64,
    booted: bool,
    memory: f64,
    pid: u32,
    deleting: bool,
    removal_due: Option<f64>,
    dirty: bool,
}

impl SimPod {
    fn app_name(&self) -> &str {
        str_at(&self.app, "/name")
    }

    fn booting(&self) -> bool {
        matches!(self.phase, Phase::Creating { .. })
            || (self.phase == Phase::Running && !self.booted)
    }

    fn ready(&self) -> bool {
        self.phase == Phase::Running && self.booted && !self.deleting
    }

    fn status(&self, epoch: jiff::Timestamp) -> Value {
        let time = |s: f64| time_at(epoch, s);
        let terminated = |t: &Termination| {
            json!({"terminated": {
                "exitCode": t.code,
                "reason": t.reason,
                "startedAt": time(t.started),
                "finishedAt": time(t.finished),
                "containerID": format!("containerd://{}-{}", self.uid, self.restarts),
            }})
        };
        let state = match (self.phase, &self.current_exit) {
            (Phase::Creating { .. }, _) if self.restarts == 0 => {
                json!({"waiting": {"reason": "ContainerCreating"}})
            }
            (Phase::Creating { .. }, _) => json!({"waiting": {"reason": "ContainerCreating"}}),
            (Phase::BackOff { seconds, .. }, _) => json!({"waiting": {
                "reason": "CrashLoopBackOff",
                "message": format!("back-off {seconds}s restarting failed container={} pod={}_{}({})", self.app_name(), self.name, self.namespace, self.uid),
            }}),
            (Phase::Exited, Some(exit)) => terminated(exit),
            _ => json!({"running": {"startedAt": time(self.started_at)}}),
        };
        let ready = self.ready();
        let started =
            self.phase == Phase::Running && (self.booted || self.startup_window.is_none());
        let mut app = json!({
            "name": self.app_name(),
            "image": str_at(&self.app, "/image"),
            "imageID": format!("{}@sha256:0000", str_at(&self.app, "/image")),
            "ready": ready,
            "started": started,
            "restartCount": self.restarts,
            "state": state,
        });
        if let Some(last) = &self.last {
            app["lastState"] = terminated(last);
        }
        let others_running = !matches!(self.phase, Phase::Exited);
        let mut statuses = vec![app];
        for (name, image) in &self.others {
            statuses.push(json!({
                "name": name,
                "image": image,
                "imageID": format!("{image}@sha256:0000"),
                "ready": others_running && !self.deleting,
                "started": others_running,
                "restartCount": 0,
                "state": if others_running { json!({"running": {"startedAt": time(self.created + 1.0)}}) } else { json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": time(self.created + 1.0), "finishedAt": time(self.current_exit.as_ref().map_or(self.created, |e| e.finished))}}) },
            }));
        }
        let all_ready = ready && (others_running && !self.deleting);
        let phase = match (&self.phase, &self.current_exit) {
            (Phase::Exited, Some(exit)) if exit.code == 0 => "Succeeded",
            (Phase::Exited, _) => "Failed",
            (Phase::Creating { .. }, _) if self.restarts == 0 && self.last.is_none() => "Pending",
            _ => "Running",
        };
        let condition = |kind: &str, status: bool, since: f64| json!({"type": kind, "status": if status { "True" } else { "False" }, "lastTransitionTime": time(since)});
        let ready_at = self.ready_since.unwrap_or(self.created);
        json!({
            "phase": phase,
            "hostIP": "10.0.0.1",
            "podIP": self.ip,
            "startTime": time(self.created),
            "qosClass": "Burstable",
            "conditions": [
                condition("PodScheduled", true, self.created),
                condition("Initialized", true, self.created),
                condition("ContainersReady", all_ready, ready_at),
                condition("Ready", all_ready, ready_at),
            ],
            "containerStatuses": statuses,
        })
    }
}

/// Pool-level observations the report needs.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub booting: usize,
    pub ready: usize,
}

pub struct Cluster {
    server: Arc<ApiServer>,
    scenario: Scenario,
    rng: StdRng,
    changes: mpsc::UnboundedReceiver<Arc<Change>>,
    deployments: BTreeMap<Key, Arc<Value>>,
    jobs: BTreeMap<Key, Arc<Value>>,
    pods: BTreeMap<Key, SimPod>,
    owned: HashMap<String, BTreeSet<Key>>,
    deployment_keys: HashMap<String, Key>,
    dirty_deployments: BTreeSet<Key>,
    pub timeline: Timeline,
    pub max_booting: usize,
    /// The instant the simulation's second 0 stands for; every timestamp it writes counts from it.
    epoch: jiff::Timestamp,
    events: u64,
    ips: u32,
}

/// A simulated second as the timestamp the API shows.
fn time_at(epoch: jiff::Timestamp, seconds: f64) -> String {
    epoch
        .checked_add(jiff::SignedDuration::from_secs(seconds.floor() as i64))
        .unwrap_or(epoch)
        .to_string()
}

fn template_hash(template: &Value) -> String {
    let digest = Sha256::digest(serde_json::to_vec(template).unwrap_or_default());
    digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

/// maxSurge / maxUnavailable as a count: percentages round up for surge, down for unavailable.
fn resolve(value: Option<&Value>, desired: i64, default_percent: i64, round_up: bool) -> i64 {
    let percent = |p: i64| {
        let scaled = desired * p;
        if round_up {
            (scaled + 99) / 100
        } else {
            scaled / 100
        }
    };
    match value {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => s.trim_end_matches('%').parse().map(percent).unwrap_or(0),
        _ => percent(default_percent),
    }
}

impl Cluster {
    pub fn new(
        server: Arc<ApiServer>,
        scenario: Scenario,
        seed: u64,
        timeline_limit: usize,
        epoch: jiff::Timestamp,
    ) -> Self {
        let changes = server.observe();
        Cluster {
            server,
            epoch,
            scenario,
            rng: StdRng::seed_from_u64(seed.wrapping_add(7)),
            changes,
            deployments: BTreeMap::new(),
            jobs: BTreeMap::new(),
            pods: BTreeMap::new(),
            owned: HashMap::new(),
            deployment_keys: HashMap::new(),
            dirty_deployments: BTreeSet::new(),
            timeline: Timeline::new(timeline_limit),
            max_booting: 0,
            events: 0,
            ips: 0,
        }
    }

    /// Pods of Deployments booting and ready now, across the cluster.
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for pod in self.pods.values().filter(|p| !p.job && !p.deleting) {
            if pod.booting() {
                counts.booting += 1;
            }
            if pod.ready() {
                counts.ready += 1;
            }
        }
        counts
    }

    /// Ready, non-terminating pods of a Deployment that run its current template.
    pub fn ready_current(&self, namespace: &str, name: &str) -> Option<(usize, usize)> {
        let deployment = self
            .deployments
            .get(&(namespace.to_string(), name.to_string()))?;
        let hash = template_hash(deployment.pointer("/spec/template").unwrap_or(&Value::Null));
        let uid = str_at(deployment, "/metadata/uid");
        let keys = self.owned.get(uid)?;
        let pods: Vec<&SimPod> = keys
            .iter()
            .filter_map(|k| self.pods.get(k))
            .filter(|p| !p.deleting)
            .collect();
        let ready = pods
            .iter()
            .filter(|p| p.ready() && p.hash.as_deref() == Some(hash.as_str()))
            .count();
        Some((ready, pods.len()))
    }

    /// One simulated second: take in the API's changes, run the controllers and the kubelet.
    pub fn tick(&mut self, now: f64) {
        self.take_changes(now);
        self.reconcile_dirty_deployments();
        let jobs: Vec<Key> = self.jobs.keys().cloned().collect();
        for key in jobs {
            self.reconcile_job(&key, now);
        }
        self.run_kubelet(now);
        // The ReplicaSet and Deployment controllers count a changed pod within milliseconds,
        // not a second later: the Deployment's status follows the kubelet's write at once.
        self.reconcile_dirty_deployments();
        let booting = self.counts().booting;
        self.max_booting = self.max_booting.max(booting);
    }

    fn reconcile_dirty_deployments(&mut self) {
        let dirty: Vec<Key> = std::mem::take(&mut self.dirty_deployments)
            .into_iter()
            .collect();
        for key in dirty {
            self.reconcile_deployment(&key);
        }
    }

    fn take_changes(&mut self, tick: f64) {
        while let Ok(change) = self.changes.try_recv() {
            let now = change
                .at
                .duration_since(self.epoch)
                .as_secs_f64()
                .clamp(0.0, tick);
            match (change.resource.plural, change.resource.group) {
                ("pods", "") => self.pod_changed(&change, now),
                ("deployments", _) => {
                    if let Some(new) = &change.new {
                        self.deployment_timeline(change.old.as_deref(), new, now);
                        let key = key_of(new);
                        self.deployment_keys
                            .insert(str_at(new, "/metadata/uid").to_string(), key.clone());
                        self.deployments.insert(key.clone(), new.clone());
                        self.dirty_deployments.insert(key);
                    } else if let Some(old) = &change.old {
                        self.deployments.remove(&key_of(old));
                        self.deployment_keys.remove(str_at(old, "/metadata/uid"));
                        self.timeline.push(
                            now,
                            "deployment",
                            str_at(old, "/metadata/name"),
                            "deleted",
                        );
                    }
                }
                ("jobs", _) => match (&change.old, &change.new) {
                    (_, Some(new)) => {
                        if change.old.is_none() {
                            self.timeline.push(
                                now,
                                "job",
                                str_at(new, "/metadata/name"),
                                "created",
                            );
                        }
                        self.jobs.insert(key_of(new), new.clone());
                    }
                    (Some(old), None) => {
                        self.jobs.remove(&key_of(old));
                        self.timeline.push(
                            now,
                            "job",
                            str_at(old, "/metadata/name"),
                            "deleted (TTL after finishing)",
                        );
                    }
                    _ => {}
                },
                ("events", "events.k8s.io") => self.operator_event_timeline(&change, now),
                ("workerpools", _) => self.pool_timeline(&change, now),
                _ => {}
            }
        }
    }

    fn pod_changed(&mut self, change: &Change, now: f64) {
        match (&change.old, &change.new) {
            (None, Some(new)) => {
                let pod = self.admit(new, now);
                if let Some(owner) = &pod.owner {
                    self.owned
                        .entry(owner.clone())
                        .or_default()
                        .insert((pod.namespace.clone(), pod.name.clone()));
                }
                self.pods
                    .insert((pod.namespace.clone(), pod.name.clone()), pod);
            }
            (Some(_), Some(new)) => {
                let marked = new.pointer("/metadata/deletionTimestamp").is_some();
                let key = key_of(new);
                if let Some(pod) = self.pods.get_mut(&key)
                    && marked
                    && !pod.deleting
                {
                    pod.deleting = true;
                    pod.dirty = true;
                    pod.grace = i64_at(new, "/metadata/deletionGracePeriodSeconds")
                        .unwrap_or(pod.grace as i64) as f64;
                    let owner = pod.owner.clone();
                    Self::begin_stop(pod, &self.server, &mut self.timeline, &mut self.events, now);
                    if let Some(owner) = owner {
                        self.dirty_owner(&owner);
                    }
                }
            }
            (Some(old), None) => {
                let key = key_of(old);
                if let Some(pod) = self.pods.remove(&key)
                    && let Some(owner) = &pod.owner
                {
                    if let Some(set) = self.owned.get_mut(owner) {
                        set.remove(&key);
                    }
                    self.dirty_owner(owner);
                }
            }
            (None, None) => {}
        }
    }

    fn dirty_owner(&mut self, owner_uid: &str) {
        if let Some(key) = self.deployment_keys.get(owner_uid) {
            self.dirty_deployments.insert(key.clone());
        }
    }

    /// A new pod as the kubelet sees it: what the scenario needs from its spec.
    fn admit(&mut self, pod: &Value, now: f64) -> SimPod {
        let containers = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let runtime = str_at(
            pod,
            &format!(
                "/metadata/annotations/{}",
                RUNTIME_ANNOTATION.replace('/', "~1")
            ),
        )
        .to_string();
        // The app container is the one with probes, else the first.
        let app = containers
            .iter()
            .find(|c| c.get("startupProbe").is_some() || c.get("readinessProbe").is_some())
            .or(containers.first())
            .cloned()
            .unwrap_or(json!({"name": "app"}));
        let others = containers
            .iter()
            .filter(|c| str_at(c, "/name") != str_at(&app, "/name"))
            .map(|c| {
                (
                    str_at(c, "/name").to_string(),
                    str_at(c, "/image").to_string(),
                )
            })
            .collect();
        let owner = pod
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|refs| {
                refs.iter()
                    .find(|r| r.get("controller") == Some(&json!(true)))
            })
            .map(|r| str_at(r, "/uid").to_string());
        self.ips += 1;
        let job = str_at(pod, "/spec/restartPolicy") == "Never";
        let gunicorn = (runtime == "gunicorn").then(|| gunicorn_flags(&app));
        SimPod {
            namespace: str_at(pod, "/metadata/namespace").into(),
            name: str_at(pod, "/metadata/name").into(),
            uid: str_at(pod, "/metadata/uid").into(),
            owner,
            hash: pod
                .pointer("/metadata/labels/pod-template-hash")
                .and_then(Value::as_str)
                .map(str::to_string),
            job,
            gunicorn: runtime == "gunicorn",
            celery: runtime == "celery",
            pool: if runtime == "celery" {
                CeleryPool::of(&app)
            } else {
                CeleryPool::default()
            },
            warm_shutdown_told: false,
            broker_tried: None,
            startup_window: app.get("startupProbe").map(probe_window),
            liveness_window: app.get("livenessProbe").map(probe_window),
            grace: i64_at(pod, "/spec/terminationGracePeriodSeconds").unwrap_or(30) as f64,
            pre_stop: pre_stop_seconds(&app),
            memory_limit: app
                .pointer("/resources/limits/memory")
                .and_then(Value::as_str)
                .and_then(quantity_mib),
            worker_timeout: gunicorn
                .as_ref()
                .map(|f| f.worker_timeout.unwrap_or(GUNICORN_DEFAULT_TIMEOUT_SECONDS) as f64),
            preload: gunicorn.as_ref().is_some_and(|f| f.preload),
            worker_class: gunicorn.as_ref().map(WorkerClass::of),
            request_started: None,
            slow_request_told: false,
            app,
            others,
            ip: format!("10.1.{}.{}", self.ips / 250, self.ips % 250 + 2),
            created: now,
            phase: Phase::Creating { until: now + 1.0 },
            restarts: 0,
            last: None,
            current_exit: None,
            started_at: now,
            worker_started_at: now,
            ready_since: None,
            boot_need: 0.0,
            progress: 0.0,
            booted: false,
            memory: 0.0,
            pid: 7,
            deleting: false,
            removal_due: None,
            dirty: true,
        }
    }

    fn event(
        server: &ApiServer,
        seq: &mut u64,
        pod: &SimPod,
        reason: &str,
        message: &str,
        warning: bool,
        count: i64,
    ) {
        *seq += 1;
        let event = json!({
            "metadata": {"name": format!("{}.{:016x}", pod.name, seq), "namespace": pod.namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod.name,
                "namespace": pod.namespace,
                "uid": pod.uid,
                "fieldPath": format!("spec.containers{{{}}}", pod.app_name()),
            },
            "reason": reason,
            "message": message,
            "type": if warning { "Warning" } else { "Normal" },
            "count": count,
            "source": {"component": "kubelet", "host": NODE},
            "reportingComponent": "kubelet",
            "reportingInstance": NODE,
        });
        let _ = server.create(EVENTS, &pod.namespace, event, Some("kubelet"));
    }

    fn log(server: &ApiServer, pod: &SimPod, line: &str) {
        server.append_log(&pod.namespace, &pod.name, pod.app_name(), line);
    }

    /// The pod is being deleted: preStop, then SIGTERM, then SIGKILL at the end of the grace period.
    fn begin_stop(
        pod: &mut SimPod,
        server: &ApiServer,
        timeline: &mut Timeline,
        seq: &mut u64,
        now: f64,
    ) {
        match pod.phase {
            Phase::Running => {
                let app = pod.app_name().to_string();
                Self::event(
                    server,
                    seq,
                    pod,
                    "Killing",
                    &format!("Stopping container {app}"),
                    false,
                    1,
                );
                timeline.push(
                    now,
                    "pod",
                    pod.name.clone(),
                    format!(
                        "terminating: preStop {}s, then SIGTERM; SIGKILL at {}s",
                        pod.pre_stop, pod.grace
                    ),
                );
                pod.phase = Phase::Stopping {
                    sigterm_at: now + pod.pre_stop,
                    kill_at: now + pod.grace,
                };
            }
            Phase::Stopping { .. } | Phase::Exited => {}
            Phase::Creating { .. } | Phase::BackOff { .. } => {
                pod.current_exit = pod.last.clone();
                pod.phase = Phase::Exited;
                timeline.push(
                    now,
                    "pod",
                    pod.name.clone(),
                    "terminating: no container running",
                );
            }
        }
        pod.dirty = true;
    }

    fn reconcile_deployment(&mut self, key: &Key) {
        let Some(deployment) = self.deployments.get(key).cloned() else {
            return;
        };
        let (namespace, name) = key;
        let uid = str_at(&deployment, "/metadata/uid").to_string();
        let template = deployment
            .pointer("/spec/template")
            .cloned()
            .unwrap_or(Value::Null);
        let desired = i64_at(&deployment, "/spec/replicas").unwrap_or(1).max(0);
        let paused = deployment.pointer("/spec/paused") == Some(&json!(true));
        let mut current_hash = template_hash(&template);
        let keys: Vec<Key> = self
            .owned
            .get(&uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let active: Vec<&SimPod> = keys
            .iter()
            .filter_map(|k| self.pods.get(k))
            .filter(|p| !p.deleting)
            .collect();
        if paused
            && !active
                .iter()
                .any(|p| p.hash.as_deref() == Some(current_hash.as_str()))
        {
            // A paused Deployment does not start a rollout; it only scales what runs.
            if let Some(newest) = active
                .iter()
                .max_by(|a, b| a.created.total_cmp(&b.created))
                .and_then(|p| p.hash.clone())
            {
                current_hash = newest;
            }
        }
        let (new, old): (Vec<&SimPod>, Vec<&SimPod>) = active
            .iter()
            .partition(|p| p.hash.as_deref() == Some(current_hash.as_str()));
        let surge = resolve(
            deployment.pointer("/spec/strategy/rollingUpdate/maxSurge"),
            desired,
            25,
            true,
        );
        let mut unavailable = resolve(
            deployment.pointer("/spec/strategy/rollingUpdate/maxUnavailable"),
            desired,
            25,
            false,
        );
        if surge == 0 && unavailable == 0 {
            unavailable = 1;
        }
        let (new_count, old_count) = (new.len() as i64, old.len() as i64);
        let target_new = if old.is_empty() {
            desired
        } else {
            desired.min(new_count.max(desired + surge - old_count))
        };
        let mut create = 0;
        let mut delete: Vec<Key> = Vec::new();
        // Prefer removing pods that are not ready, then the newest, as the ReplicaSet controller does.
        let by_preference = |pods: &[&SimPod]| {
            let mut sorted: Vec<&SimPod> = pods.to_vec();
            sorted.sort_by(|a, b| {
                a.ready()
                    .cmp(&b.ready())
                    .then(b.created.total_cmp(&a.created))
            });
            sorted
                .into_iter()
                .map(|p| (p.namespace.clone(), p.name.clone()))
                .collect::<Vec<_>>()
        };
        if target_new > new_count {
            create = target_new - new_count;
        } else if target_new < new_count {
            delete.extend(
                by_preference(&new)
                    .into_iter()
                    .take((new_count - target_new) as usize),
            );
        }
        if !old.is_empty() {
            let min_available = desired - unavailable;
            let new_unready = new.iter().filter(|p| !p.ready()).count() as i64;
            // The Deployment controller's maxScaledDown: unready old pods go first, healthy
            // ones only while enough pods stay available.
            let removable =
                (new_count + old_count - min_available - new_unready).clamp(0, old_count);
            delete.extend(by_preference(&old).into_iter().take(removable as usize));
        }
        let ready = active.iter().filter(|p| p.ready()).count() as i64;
        let updated = new_count;
        let replicas = active.len() as i64;
        for (namespace, pod) in &delete {
            let _ = self.server.delete(PODS, namespace, pod, None, None);
        }
        if create > 0 {
            let mut metadata = template.get("metadata").cloned().unwrap_or(json!({}));
            metadata["labels"]["pod-template-hash"] = json!(current_hash);
            metadata["generateName"] = json!(format!("{name}-{current_hash}-"));
            metadata["ownerReferences"] = json!([{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid,
                "controller": true, "blockOwnerDeletion": true,
            }]);
            let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
            spec["nodeName"] = json!(NODE);
            let pod =
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec});
            for _ in 0..create {
                let _ = self
                    .server
                    .create(PODS, namespace, pod.clone(), Some(SYSTEM));
            }
        }
        let generation = i64_at(&deployment, "/metadata/generation").unwrap_or(1);
        let available = ready;
        let progressing = if updated == desired && old.is_empty() && ready == desired {
            (
                "NewReplicaSetAvailable",
                format!("Deployment \"{name}\" has successfully progressed."),
            )
        } else {
            (
                "ReplicaSetUpdated",
                format!("Deployment \"{name}\" is progressing."),
            )
        };
        let status = json!({"status": {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "unavailableReplicas": (desired - available).max(0),
            "conditions": [
                {"type": "Available", "status": if available >= desired - unavailable { "True" } else { "False" },
                 "reason": if available >= desired - unavailable { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" }},
                {"type": "Progressing", "status": "True", "reason": progressing.0, "message": progressing.1},
            ],
        }});
        let _ = self.server.write(
            DEPLOYMENTS,
            namespace,
            name,
            Target::Status,
            Write::Merge(status),
            Some(SYSTEM),
        );
    }

    fn reconcile_job(&mut self, key: &Key, now: f64) {
        let Some(job) = self.jobs.get(key).cloned() else {
            return;
        };
        let (namespace, name) = key;
        let uid = str_at(&job, "/metadata/uid").to_string();
        let finished = job
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|c| {
                c.iter().find(|c| {
                    matches!(str_at(c, "/type"), "Complete" | "Failed")
                        && str_at(c, "/status") == "True"
                })
            })
            .map(|c| {
                str_at(c, "/lastTransitionTime")
                    .parse::<jiff::Timestamp>()
                    .ok()
            });
        if let Some(finished_at) = finished {
            if let (Some(ttl), Some(at)) =
                (i64_at(&job, "/spec/ttlSecondsAfterFinished"), finished_at)
            {
                let elapsed = at.duration_since(self.epoch).as_secs_f64();
                if now >= elapsed + ttl as f64 {
                    let _ = self
                        .server
                        .delete(JOBS, namespace, name, None, Some("Background"));
                }
            }
            return;
        }
        let keys: Vec<Key> = self
            .owned
            .get(&uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let pods: Vec<&SimPod> = keys.iter().filter_map(|k| self.pods.get(k)).collect();
        let succeeded = pods
            .iter()
            .filter(|p| {
                p.phase == Phase::Exited && p.current_exit.as_ref().is_some_and(|e| e.code == 0)
            })
            .count() as i64;
        let failed = pods
            .iter()
            .filter(|p| {
                p.phase == Phase::Exited && p.current_exit.as_ref().is_some_and(|e| e.code != 0)
            })
            .count() as i64;
        let active = pods
            .iter()
            .filter(|p| p.phase != Phase::Exited && !p.deleting)
            .count() as i64;
        let started = job
            .pointer("/status/startTime")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        let start_seconds = started
            .map(|t| t.duration_since(self.epoch).as_secs_f64())
            .unwrap_or(now);
        let backoff_limit = i64_at(&job, "/spec/backoffLimit").unwrap_or(6);
        let deadline = i64_at(&job, "/spec/activeDeadlineSeconds");
        let time = time_at(self.epoch, now);
        let finish = |kind: &str, reason: &str, message: &str| {
            json!({"status": {
                "startTime": time_at(self.epoch, start_seconds),
                "active": 0, "succeeded": succeeded, "failed": failed,
                "completionTime": if kind == "Complete" { json!(time) } else { Value::Null },
                "conditions": [
                    {"type": if kind == "Complete" { "SuccessCriteriaMet" } else { "FailureTarget" }, "status": "True", "reason": reason, "message": message, "lastTransitionTime": time},
                    {"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": time},
                ],
            }})
        };
        let status = if succeeded > 0 {
            self.timeline.push(now, "job", name.clone(), "complete");
            finish(
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            )
        } else if failed > backoff_limit {
            self.timeline.push(
                now,
                "job",
                name.clone(),
                format!("failed: {failed} pods failed, backoffLimit {backoff_limit}"),
            );
            finish(
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            )
        } else if deadline.is_some_and(|d| now - start_seconds >= d as f64) {
            for key in &keys {
                let _ = self.server.delete(PODS, &key.0, &key.1, None, None);
            }
            self.timeline
                .push(now, "job", name.clone(), "failed: active deadline exceeded");
            finish(
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            )
        } else {
            if active == 0 {
                let template = job
                    .pointer("/spec/template")
                    .cloned()
                    .unwrap_or(Value::Null);
                let mut metadata = template.get("metadata").cloned().unwrap_or(json!({}));
                metadata["generateName"] = json!(format!("{name}-"));
                metadata["labels"]["job-name"] = json!(name);
                metadata["labels"]["batch.kubernetes.io/job-name"] = json!(name);
                metadata["labels"]["batch.kubernetes.io/controller-uid"] = json!(uid);
                metadata["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}]);
                let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
                spec["nodeName"] = json!(NODE);
                let _ = self.server.create(
                    PODS,
                    namespace,
                    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}),
                    Some(SYSTEM),
                );
            }
            json!({"status": {
                "startTime": time_at(self.epoch, start_seconds),
                "active": active.max(1), "succeeded": succeeded, "failed": failed,
            }})
        };
        let _ = self.server.write(
            JOBS,
            namespace,
            name,
            Target::Status,
            Write::Merge(status),
            Some(SYSTEM),
        );
    }

    fn run_kubelet(&mut self, now: f64) {
        // Boots slow each other down within a Deployment (shared database, CPU, cache warm-up).
        let mut booting: HashMap<Option<String>, usize> = HashMap::new();
        for pod in self
            .pods
            .values()
            .filter(|p| p.phase == Phase::Running && !p.booted && !p.job)
        {
            *booting.entry(pod.owner.clone()).or_default() += 1;
        }
        let keys: Vec<Key> = self.pods.keys().cloned().collect();
        for key in keys {
            let Some(mut pod) = self.pods.remove(&key) else {
                continue;
            };
            let others = booting
                .get(&pod.owner)
                .copied()
                .unwrap_or(1)
                .saturating_sub(1);
            self.step(&mut pod, now, others);
            if pod.dirty {
                pod.dirty = false;
                // The ReplicaSet controller recounts its pods whenever one changes.
                if let Some(owner) = &pod.owner {
                    self.dirty_owner(owner);
                }
                let _ = self.server.write(
                    PODS,
                    &pod.namespace,
                    &pod.name,
                    Target::Status,
                    Write::Merge(json!({"status": pod.status(self.epoch)})),
                    Some("kubelet"),
                );
            }
            if pod.removal_due.is_some_and(|due| now >= due) {
                let _ = self
                    .server
                    .delete(PODS, &pod.namespace, &pod.name, Some(0), None);
            }
            self.pods.insert(key, pod);
        }
    }

    fn start_container(&mut self, pod: &mut SimPod, now: f64) {
        pod.phase = Phase::Running;
        pod.started_at = now;
        pod.worker_started_at = now;
        pod.booted = false;
        pod.progress = 0.0;
        pod.ready_since = None;
        pod.request_started = None;
        let base = if pod.job {
            self.scenario.init.seconds
        } else {
            self.scenario.boot_seconds
        };
        let jitter = self.scenario.boot_jitter;
        let factor = if jitter > 0.0 {
            self.rng.random_range(1.0 - jitter..1.0 + jitter)
        } else {
            1.0
        };
        pod.boot_need = base * factor;
        pod.pid += 1;
        pod.pool.children.clear();
        pod.warm_shutdown_told = false;
        pod.broker_tried = None;
        if pod.job {
            Self::log(&self.server, pod, "Running migrations:");
        } else if pod.celery {
            Self::log(
                &self.server,
                pod,
                "[INFO/MainProcess] Connected to redis://redis.shop:6379/0",
            );
        } else if pod.gunicorn {
            Self::log(&self.server, pod, "[INFO] Starting gunicorn 23.0.0");
            Self::log(
                &self.server,
                pod,
                "[INFO] Listening at: http://0.0.0.0:8000 (1)",
            );
            Self::log(
                &self.server,
                pod,
                &format!("[INFO] Booting worker with pid: {}", pod.pid),
            );
        } else {
            Self::log(
                &self.server,
                pod,
                "INFO:     Waiting for application startup.",
            );
        }
        let what = if pod.restarts == 0 {
            "started".to_string()
        } else {
            format!("restarted (restart {})", pod.restarts)
        };
        self.timeline
            .push(now, "pod", pod.name.clone(), format!("{what}; booting"));
        pod.dirty = true;
    }

    /// The container exits; it restarts (after back-off) unless the pod is a Job's or is going away.
    fn exit(&mut self, pod: &mut SimPod, now: f64, code: i32, reason: &'static str, why: &str) {
        let termination = Termination {
            code,
            reason,
            started: pod.started_at,
            finished: now,
        };
        pod.booted = false;
        pod.ready_since = None;
        pod.dirty = true;
        self.timeline.push(
            now,
            "pod",
            pod.name.clone(),
            format!(
                "{} exited with code {code} ({reason}): {why}",
                pod.app_name()
            ),
        );
        if pod.job || pod.deleting {
            pod.current_exit = Some(termination);
            pod.phase = Phase::Exited;
            if pod.deleting {
                // The kubelet removes the pod once its final status is written.
                pod.removal_due = Some(now + 1.0);
            }
            return;
        }
        pod.last = Some(termination);
        pod.restarts += 1;
        self.server
            .rotate_log(&pod.namespace, &pod.name, pod.app_name());
        let delay = if pod.restarts <= 1 {
            0.0
        } else {
            (10.0 * 2f64.powi(pod.restarts - 2)).min(300.0)
        };
        if delay == 0.0 {
            pod.phase = Phase::Creating { until: now + 1.0 };
        } else {
            pod.phase = Phase::BackOff {
                until: now + delay,
                seconds: delay,
            };
            let message = format!(
                "Back-off restarting failed container {} in pod {}_{}({})",
                pod.app_name(),
                pod.name,
                pod.namespace,
                pod.uid
            );
            Self::event(
                &self.server,
                &mut self.events,
                pod,
                "BackOff",
                &message,
                true,
                1,
            );
            self.timeline.push(
                now,
                "pod",
                pod.name.clone(),
                format!("CrashLoopBackOff: next restart in {delay}s"),
            );
        }
    }

    fn kill_by_probe(&mut self, pod: &mut SimPod, now: f64, probe: &str, window: f64) {
        let spec = pod
            .app
            .get(format!("{probe}Probe"))
            .cloned()
            .unwrap_or(Value::Null);
        let failures = i64_at(&spec, "/failureThreshold").unwrap_or(3);
        let capitalized = if probe == "startup" {
            "Startup"
        } else {
            "Liveness"
        };
        let message = format!(
            "{capitalized} probe failed: {}",
            probe_failure(&spec, &pod.app, &pod.ip, probe == "startup")
        );
        Self::event(
            &self.server,
            &mut self.events,
            pod,
            "Unhealthy",
            &message,
            true,
            failures,
        );
        let app = pod.app_name().to_string();
        Self::event(
            &self.server,
            &mut self.events,
            pod,
            "Killing",
            &format!("Container {app} failed {probe} probe, will be restarted"),
            false,
            1,
        );
        let (code, reason) = if self.scenario.ignore_sigterm {
            (137, "Error")
        } else {
            (0, "Completed")
        };
        self.exit(
            pod,
            now,
            code,
            reason,
            &format!("killed by the kubelet: {probe} probe failed {failures} times in {window}s"),
        );
    }

    fn step(&mut self, pod: &mut SimPod, now: f64, others_booting: usize) {
        match pod.phase {
            Phase::Creating { until } | Phase::BackOff { until, .. }
                if now >= until && !pod.deleting =>
            {
                self.start_container(pod, now);
            }
            Phase::Running if !pod.booted => {
                // A celery worker's boot ends with its first connection to the broker.
                if self.reaches_broker(pod, now) {
                    pod.progress +=
                        1.0 / (1.0 + self.scenario.boot_contention * others_booting as f64);
                }
                let since_start = now - pod.started_at;
                if pod.progress >= pod.boot_need {
                    self.booted(pod, now);
                } else if let Some(window) =
                    pod.startup_window.filter(|w| since_start >= *w && !pod.job)
                {
                    self.kill_by_probe(pod, now, "startup", window);
                } else if let Some(timeout) = pod
                    .worker_timeout
                    .filter(|t| *t > 0.0 && !pod.preload && now - pod.worker_started_at >= *t)
                {
                    // Without --preload each worker imports the app, and gunicorn's master counts
                    // that against --timeout; with it the master imports before any worker exists.
                    self.timeline.push(now, "pod", pod.name.clone(), format!("gunicorn killed its booting worker after --timeout {timeout}s; booting a new one"));
                    self.gunicorn_times_out_worker(pod);
                    pod.worker_started_at = now;
                    pod.progress = 0.0;
                }
            }
            Phase::Running => {
                if let Some(length) = self.scenario.slow_request_seconds {
                    self.serve_slow_request(pod, now, length);
                }
                if pod.celery {
                    self.run_pool(pod, now);
                }
                let serving = now - pod.ready_since.unwrap_or(now);
                if let (false, Some(memory)) = (pod.celery, &self.scenario.memory) {
                    pod.memory = memory.start_mib + memory.growth_mib_per_minute * serving / 60.0;
                    // Without a limit the container may take what the node has; when the node
                    // runs out, the kernel's OOM killer picks the biggest process: this one.
                    let (limit, what) = match pod.memory_limit {
                        Some(limit) => (limit, "its limit"),
                        None => (
                            NODE_MEMORY_MIB,
                            "the node's memory (the container has no limit)",
                        ),
                    };
                    if pod.memory > limit {
                        self.exit(
                            pod,
                            now,
                            137,
                            "OOMKilled",
                            &format!(
                                "memory {:.0} MiB passed {what}, {limit:.0} MiB: the kernel OOM-killed it",
                                pod.memory
                            ),
                        );
                        return;
                    }
                }
                if let (Some(after), Some(window)) = (
                    self.scenario.liveness_fails_after_seconds,
                    pod.liveness_window,
                ) && serving >= after + window
                {
                    self.kill_by_probe(pod, now, "liveness", window);
                }
            }
            Phase::Stopping {
                sigterm_at,
                kill_at,
            } => {
                let mut exit_at = sigterm_at + self.scenario.shutdown_seconds;
                if pod.celery {
                    exit_at = exit_at.max(self.warm_shutdown(pod, now, sigterm_at));
                }
                if !self.scenario.ignore_sigterm
                    && now >= exit_at.min(kill_at)
                    && exit_at <= kill_at
                {
                    self.exit(
                        pod,
                        now,
                        0,
                        "Completed",
                        "shut down gracefully after SIGTERM",
                    );
                } else if now >= kill_at {
                    self.exit(
                        pod,
                        now,
                        137,
                        "Error",
                        &format!(
                            "SIGKILL: still running when the {}s grace period ended",
                            pod.grace
                        ),
                    );
                }
            }
            Phase::Exited if pod.deleting && pod.removal_due.is_none() => {
                pod.removal_due = Some(now + 1.0);
            }
            _ => {}
        }
    }

    /// A celery worker's pool at work: each child runs tasks one after another; billiard kills a
    /// child whose task outlives the hard time limit and recycles one past
    /// `--max-memory-per-child` once its task is done; the kernel OOM-kills the biggest child when
    /// the children no longer fit in the container.
    fn run_pool(&mut self, pod: &mut SimPod, now: f64) {
        let length = self.scenario.task_seconds;
        let grows = self.scenario.memory.clone();
        let child_mib = |child: &PoolChild| {
            grows.as_ref().map_or(0.0, |m| {
                m.start_mib + m.growth_mib_per_minute * (now - child.forked) / 60.0
            })
        };
        let every = self.scenario.task_every_seconds;
        for slot in 0..pod.pool.children.len() {
            let child = pod.pool.children[slot].clone();
            // An idle child takes the next task when it arrives.
            let started = match (child.task_started, length) {
                (Some(started), _) => started,
                (None, Some(_)) => {
                    if now >= child.next_task_at {
                        pod.pool.children[slot].task_started = Some(now);
                    }
                    continue;
                }
                // No tasks modelled: short ones, each a chance to recycle.
                (None, None) => now,
            };
            let ran = now - started;
            let limit = pod
                .pool
                .time_limit
                .filter(|t| length.is_some_and(|l| l > *t));
            if let Some(limit) = limit.filter(|t| ran >= *t) {
                Self::log(
                    &self.server,
                    pod,
                    &format!(
                        "[ERROR/MainProcess] Hard time limit ({limit:.1}s) exceeded for shop.tasks.work[{}-{}]",
                        child.pid, started as u64
                    ),
                );
                Self::log(
                    &self.server,
                    pod,
                    &format!(
                        "[ERROR/MainProcess] Process 'ForkPoolWorker-{}' pid:{} exited with 'signal 15 (SIGTERM)'",
                        child.number, child.pid
                    ),
                );
                self.timeline.push(now, "pod", pod.name.clone(), format!("billiard killed pool child pid {} whose task outlived the hard time limit ({limit:.0}s)", child.pid));
                pod.pool.fork(Some(slot), &mut pod.pid, now);
                continue;
            }
            if length.is_some_and(|l| ran < l) {
                continue;
            }
            let over = pod
                .pool
                .max_memory_per_child
                .filter(|m| child_mib(&child) > *m);
            if let Some(max) = over {
                if !pod.pool.recycle_told {
                    self.timeline.push(now, "pod", pod.name.clone(), format!("pool child pid {} recycled after its task at --max-memory-per-child ({max:.0} MiB); children are replaced before the container's limit", child.pid));
                    pod.pool.recycle_told = true;
                }
                pod.pool.fork(Some(slot), &mut pod.pid, now);
                continue;
            }
            if let Some(length) = length {
                let next = &mut pod.pool.children[slot];
                next.task_started = None;
                next.next_task_at = started + every.unwrap_or(length).max(length);
            }
        }
        let total = CELERY_MAIN_MIB + pod.pool.children.iter().map(child_mib).sum::<f64>();
        pod.memory = total;
        let limit = pod.memory_limit.unwrap_or(NODE_MEMORY_MIB);
        if grows.is_some() && total > limit {
            // The kernel picks the biggest process in the container: the oldest child.
            let Some((slot, child)) = pod
                .pool
                .children
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.forked.total_cmp(&b.1.forked))
                .map(|(i, c)| (i, c.clone()))
            else {
                return;
            };
            Self::log(
                &self.server,
                pod,
                &format!(
                    "[ERROR/MainProcess] Process 'ForkPoolWorker-{}' pid:{} exited with 'signal 9 (SIGKILL)'",
                    child.number, child.pid
                ),
            );
            self.timeline.push(now, "pod", pod.name.clone(), format!("the kernel OOM-killed pool child pid {} ({total:.0} MiB in the container, limit {limit:.0} MiB); the worker runs on", child.pid));
            pod.pool.fork(Some(slot), &mut pod.pid, now);
        }
    }

    /// Whether a celery worker reaches its broker now; while it does not, it retries every 2 s
    /// and logs each attempt as celery does (kombu masks the password).
    fn reaches_broker(&mut self, pod: &mut SimPod, now: f64) -> bool {
        let down = self.scenario.broker_down_seconds.unwrap_or(0.0);
        if !pod.celery || now >= down {
            return true;
        }
        let (last, attempts) = pod.broker_tried.unwrap_or((f64::MIN, 0));
        if now - last >= 2.0 {
            let attempts = attempts + 1;
            Self::log(
                &self.server,
                pod,
                "[ERROR/MainProcess] consumer: Cannot connect to redis://:**@redis.shop:6379/0: \
                 Error 111 connecting to redis.shop:6379. Connection refused..",
            );
            Self::log(
                &self.server,
                pod,
                &format!("Trying again in 2.00 seconds... ({attempts}/100)"),
            );
            if attempts == 1 {
                self.timeline.push(
                    now,
                    "pod",
                    pod.name.clone(),
                    "celery cannot reach its broker; retrying every 2 s",
                );
            }
            pod.broker_tried = Some((now, attempts));
        }
        false
    }

    /// celery's warm shutdown: from SIGTERM on it takes no task and waits for the one running;
    /// returns when that one ends.
    fn warm_shutdown(&mut self, pod: &mut SimPod, now: f64, sigterm_at: f64) -> f64 {
        let task_end = pod
            .pool
            .tasks_end(self.scenario.task_seconds)
            .filter(|_| pod.booted)
            .unwrap_or(sigterm_at)
            .max(sigterm_at);
        if now >= sigterm_at && !pod.warm_shutdown_told {
            Self::log(&self.server, pod, "worker: Warm shutdown (MainProcess)");
            let waits = task_end - sigterm_at;
            if waits > 0.0 {
                self.timeline.push(
                    now,
                    "pod",
                    pod.name.clone(),
                    format!("celery's warm shutdown waits {waits:.0}s for the tasks running"),
                );
            }
            pod.warm_shutdown_told = true;
        }
        task_end
    }

    /// gunicorn's master kills the worker that outlived `--timeout` and forks a new one, with the
    /// lines it logs for that.
    fn gunicorn_times_out_worker(&self, pod: &mut SimPod) {
        Self::log(
            &self.server,
            pod,
            &format!("[CRITICAL] WORKER TIMEOUT (pid:{})", pod.pid),
        );
        Self::log(
            &self.server,
            pod,
            &format!(
                "[ERROR] Worker (pid:{}) was sent SIGKILL! Perhaps out of memory?",
                pod.pid
            ),
        );
        pod.pid += 1;
        Self::log(
            &self.server,
            pod,
            &format!("[INFO] Booting worker with pid: {}", pod.pid),
        );
    }

    /// One slow request after another: gunicorn's `sync` worker is killed when one outlives
    /// `--timeout`; any other class keeps checking in while the request runs on, and uvicorn has
    /// no request timeout at all.
    fn serve_slow_request(&mut self, pod: &mut SimPod, now: f64, length: f64) {
        let Some(started) = pod.request_started else {
            pod.request_started = Some(now);
            return;
        };
        let sync = pod
            .worker_class
            .as_ref()
            .is_some_and(|c| c.kind == Some(WorkerKind::Sync));
        let timeout = pod.worker_timeout.filter(|t| *t > 0.0 && *t < length);
        if let (true, Some(timeout)) = (sync, timeout)
            && now - started >= timeout
        {
            self.timeline.push(
                now,
                "pod",
                pod.name.clone(),
                format!(
                    "gunicorn killed worker pid {} in the middle of a {length:.0}s request after --timeout {timeout:.0}s; the client got an error",
                    pod.pid
                ),
            );
            self.gunicorn_times_out_worker(pod);
            pod.request_started = None;
        } else if now - started >= length {
            if !pod.slow_request_told && !sync {
                let why = match (&pod.worker_class, pod.worker_timeout) {
                    (Some(class), Some(timeout)) => format!(
                        "under worker class {}, --timeout {timeout:.0}s is a heartbeat and cut nothing",
                        class.name
                    ),
                    _ => "uvicorn bounds no request".to_string(),
                };
                self.timeline.push(
                    now,
                    "pod",
                    pod.name.clone(),
                    format!("a {length:.0}s request ran to its end: {why}"),
                );
                pod.slow_request_told = true;
            }
            pod.request_started = None;
        }
    }

    fn booted(&mut self, pod: &mut SimPod, now: f64) {
        let took = now - pod.started_at;
        if pod.job {
            let code = self.scenario.init.exit_code;
            Self::log(
                &self.server,
                pod,
                if code == 0 {
                    "  Applying migrations... OK"
                } else {
                    "django.db.utils.OperationalError: could not connect to server"
                },
            );
            let reason = if code == 0 { "Completed" } else { "Error" };
            self.exit(
                pod,
                now,
                code,
                reason,
                &format!("init finished after {took:.0}s"),
            );
            return;
        }
        if let Some(code) = self.scenario.boot_exit_code {
            if pod.gunicorn {
                Self::log(&self.server, pod, "[ERROR] Exception in worker process");
                Self::log(
                    &self.server,
                    pod,
                    "ModuleNotFoundError: No module named 'shop.settings_prod'",
                );
                Self::log(
                    &self.server,
                    pod,
                    &format!("[INFO] Worker exiting (pid: {})", pod.pid),
                );
                Self::log(&self.server, pod, "[INFO] Shutting down: Master");
                Self::log(&self.server, pod, "[INFO] Reason: Worker failed to boot.");
            } else {
                Self::log(
                    &self.server,
                    pod,
                    "ERROR:    Application startup failed. Exiting.",
                );
            }
            self.exit(
                pod,
                now,
                code,
                "Error",
                &format!("boot failed after {took:.0}s"),
            );
            return;
        }
        if pod.celery {
            for _ in 0..pod.pool.concurrency {
                pod.pool.fork(None, &mut pod.pid, now);
            }
            let ready = format!("[INFO/MainProcess] celery@{} ready.", pod.name);
            Self::log(&self.server, pod, &ready);
        }
        pod.booted = true;
        pod.ready_since = Some(now);
        pod.dirty = true;
        self.timeline.push(
            now,
            "pod",
            pod.name.clone(),
            format!("ready (booted in {took:.0}s)"),
        );
    }

    fn deployment_timeline(&mut self, old: Option<&Value>, new: &Value, now: f64) {
        let name = str_at(new, "/metadata/name").to_string();
        let replicas = |d: &Value| i64_at(d, "/spec/replicas");
        let paused = |d: &Value| d.pointer("/spec/paused") == Some(&json!(true));
        let revision = |d: &Value| {
            d.pointer("/spec/template/metadata/annotations/workerpool.dev~1revision")
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        match old {
            None => self.timeline.push(
                now,
                "deployment",
                name,
                format!("created with {} replicas", replicas(new).unwrap_or(1)),
            ),
            Some(old) => {
                if replicas(old) != replicas(new) {
                    self.timeline.push(
                        now,
                        "deployment",
                        name.clone(),
                        format!(
                            "replicas {} -> {}",
                            replicas(old).unwrap_or(1),
                            replicas(new).unwrap_or(1)
                        ),
                    );
                }
                if paused(old) != paused(new) {
                    self.timeline.push(
                        now,
                        "deployment",
                        name.clone(),
                        if paused(new) { "paused" } else { "resumed" },
                    );
                }
                if revision(old) != revision(new) {
                    self.timeline.push(
                        now,
                        "deployment",
                        name,
                        format!(
                            "template changed to revision {}",
                            revision(new).unwrap_or_default()
                        ),
                    );
                }
            }
        }
    }

    fn operator_event_timeline(&mut self, change: &Change, now: f64) {
        let (Some(new), None) = (&change.new, &change.old) else {
            return;
        };
        self.timeline.push(
            now,
            "event",
            str_at(new, "/regarding/name"),
            format!(
                "{} {}: {}",
                str_at(new, "/type"),
                str_at(new, "/reason"),
                str_at(new, "/note")
            ),
        );
    }

    fn pool_timeline(&mut self, change: &Change, now: f64) {
        let Some(new) = &change.new else {
            return;
        };
        let name = str_at(new, "/metadata/name").to_string();
        let conditions = |pool: Option<&Value>| -> BTreeMap<String, (String, String, String)> {
            pool.and_then(|p| p.pointer("/status/conditions"))
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .map(|c| {
                            (
                                str_at(c, "/type").to_string(),
                                (
                                    str_at(c, "/status").to_string(),
                                    str_at(c, "/reason").to_string(),
                                    str_at(c, "/message").to_string(),
                                ),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let before = conditions(change.old.as_deref());
        for (kind, (status, reason, message)) in conditions(Some(new)) {
            let changed = before
                .get(&kind)
                .is_none_or(|(s, r, _)| *s != status || *r != reason);
            if changed {
                let detail = if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                };
                self.timeline.push(
                    now,
                    "pool",
                    name.clone(),
                    format!("{kind}={status} ({reason}){detail}"),
                );
            }
        }
        let replicas = |p: Option<&Value>| p.and_then(|p| i64_at(p, "/spec/replicas"));
        if change.old.is_none() {
            self.timeline.push(
                now,
                "pool",
                name,
                format!("created with {} replicas", replicas(Some(new)).unwrap_or(1)),
            );
        } else if replicas(change.old.as_deref()) != replicas(Some(new)) {
            self.timeline.push(
                now,
                "pool",
                name,
                format!(
                    "spec.replicas {} -> {}",
                    replicas(change.old.as_deref()).unwrap_or(1),
                    replicas(Some(new)).unwrap_or(1)
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_in_mib() {
        assert_eq!(quantity_mib("512Mi"), Some(512.0));
        assert_eq!(quantity_mib("1Gi"), Some(1024.0));
        assert!(quantity_mib("1G").is_some_and(|m| (m - 953.67).abs() < 0.01));
        assert_eq!(quantity_mib("lots"), None);
    }

    #[test]
    fn rolling_update_bounds_resolve_like_kubernetes() {
        assert_eq!(resolve(None, 10, 25, true), 3);
        assert_eq!(resolve(None, 10, 25, false), 2);
        assert_eq!(resolve(Some(&json!("50%")), 3, 0, true), 2);
        assert_eq!(resolve(Some(&json!(1)), 3, 25, false), 1);
    }

    #[test]
    fn container_details_the_kubelet_reads() {
        let container = json!({
            "name": "app",
            "env": [{"name": "GUNICORN_CMD_ARGS", "value": "--timeout=90 --graceful-timeout=25"}],
            "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
        });
        assert_eq!(gunicorn_flags(&container).worker_timeout, Some(90));
        // As gunicorn reads them: the command line beats GUNICORN_CMD_ARGS.
        let both = json!({
            "name": "app",
            "command": ["gunicorn", "--timeout", "10", "shop.wsgi"],
            "env": [{"name": "GUNICORN_CMD_ARGS", "value": "--timeout=60 --preload"}],
        });
        let flags = gunicorn_flags(&both);
        assert_eq!(flags.worker_timeout, Some(10));
        assert!(flags.preload);
        assert_eq!(pre_stop_seconds(&container), 5.0);
        assert_eq!(
            pre_stop_seconds(
                &json!({"lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "sleep 7"]}}}})
            ),
            7.0
        );
        assert_eq!(
            probe_window(&json!({"periodSeconds": 5, "failureThreshold": 18})),
            90.0
        );
    }
}
