//! An in-memory Kubernetes API server: the storage and semantics behind the sandbox's HTTP API.
//!
//! Objects are stored as JSON. Every write goes through [`ApiServer::write`], which applies the
//! same rules as the real server: status and scale subresources, `generation` bumped on spec
//! changes only, server-side apply with field managers, resourceVersion preconditions, and no
//! resourceVersion bump or watch event when a write changes nothing.

pub mod apply;
pub mod http;
pub mod select;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::meter::CpuMeter;
use select::{FieldSelector, LabelSelector};
use workerpool_core::controller::Clock;

/// A resource the sandbox serves.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    /// Has a `status` subresource: the main resource ignores status, `/status` ignores the rest.
    pub status: bool,
    /// Has a `scale` subresource over `.spec.replicas`.
    pub scale: bool,
    /// Tracks `metadata.generation` (pods do not in Kubernetes 1.32).
    pub generation: bool,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

const fn resource(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    status: bool,
    scale: bool,
    generation: bool,
) -> ResourceType {
    ResourceType {
        group,
        version,
        plural,
        kind,
        status,
        scale,
        generation,
    }
}

pub static RESOURCES: [ResourceType; 7] = [
    resource("", "v1", "pods", "Pod", true, false, false),
    resource("", "v1", "events", "Event", false, false, false),
    resource("apps", "v1", "deployments", "Deployment", true, true, true),
    resource("batch", "v1", "jobs", "Job", true, false, true),
    resource(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
        false,
        true,
    ),
    resource(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        false,
        false,
        false,
    ),
    resource(
        "workerpool.dev",
        "v1alpha1",
        "workerpools",
        "WorkerPool",
        true,
        true,
        true,
    ),
];

pub fn find_resource(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The served resource of a typed Kubernetes object.
pub fn resource_of<K: kube::Resource<DynamicType = ()>>() -> &'static ResourceType {
    let group = K::group(&());
    let version = K::version(&());
    let plural = K::plural(&());
    find_resource(&group, &version, &plural).unwrap_or(&RESOURCES[0])
}

fn index_of(resource: &ResourceType) -> usize {
    RESOURCES
        .iter()
        .position(|r| std::ptr::eq(r, resource))
        .unwrap_or(0)
}

/// An API error, rendered as a `Status` object with the real server's reasons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }
    fn not_found(resource: &ResourceType, name: &str) -> Self {
        let what = if resource.group.is_empty() {
            resource.plural.to_string()
        } else {
            format!("{}.{}", resource.plural, resource.group)
        };
        Self::new(404, "NotFound", format!("{what} \"{name}\" not found"))
    }
    fn modified(resource: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                resource.plural
            ),
        )
    }
    pub fn status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}

/// Which part of an object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Main,
    Status,
    Scale,
}

/// A write: a full replacement (PUT), a JSON merge patch, or a server-side apply.
#[derive(Clone, Debug)]
pub enum Write {
    Replace(Value),
    Merge(Value),
    Apply { patch: Value, force: bool },
}

/// One committed change, as watchers and the sandbox's observers see it.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    /// When it was committed, on the server's clock.
    pub at: jiff::Timestamp,
    pub resource: &'static ResourceType,
    pub old: Option<Arc<Value>>,
    /// None when the object was removed.
    pub new: Option<Arc<Value>>,
}

/// What a watch stream carries before it is rendered as JSON lines.
#[derive(Clone, Debug)]
pub enum WatchItem {
    Event(&'static str, Arc<Value>),
    /// The requested resourceVersion is older than the retained history.
    Gone(String),
}

struct Watcher {
    resource: usize,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    tx: mpsc::UnboundedSender<WatchItem>,
}

impl Watcher {
    /// The event this change means for this watcher: objects entering or leaving the selection
    /// are ADDED or DELETED, as the real server reports them.
    fn event(&self, change: &Change) -> Option<WatchItem> {
        let selects = |object: &Option<Arc<Value>>| {
            object.as_ref().is_some_and(|o| {
                let namespace = o.pointer("/metadata/namespace").and_then(Value::as_str);
                self.namespace
                    .as_deref()
                    .is_none_or(|ns| Some(ns) == namespace)
                    && self.labels.matches(o)
                    && self.fields.matches(o)
            })
        };
        let (was, is) = (selects(&change.old), selects(&change.new));
        let (kind, object) = match (was, is, &change.new) {
            (false, true, Some(new)) => ("ADDED", new.clone()),
            (true, true, Some(new)) => ("MODIFIED", new.clone()),
            (true, false, Some(new)) => ("DELETED", new.clone()),
            (true, _, None) => ("DELETED", change.old.clone()?),
            _ => return None,
        };
        Some(WatchItem::Event(kind, object))
    }
}

#[derive(Default)]
struct ContainerLog {
    current: String,
    previous: Option<String>,
}

type Key = (usize, String, String);

struct State {
    rv: u64,
    clock: Clock,
    objects: BTreeMap<Key, Arc<Value>>,
    /// The last configuration each apply manager sent, per object.
    applied: HashMap<(Key, String), Value>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Watches from a resourceVersion at or below this get 410 Gone.
    compacted: u64,
    watchers: Vec<Watcher>,
    observers: Vec<mpsc::UnboundedSender<Arc<Change>>>,
    logs: HashMap<(String, String, String), ContainerLog>,
    uids: u64,
    rng: StdRng,
}

/// Counts and limits for a sandbox API server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Changes kept for watches that resume from a resourceVersion.
    pub history_limit: usize,
    pub seed: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            history_limit: 10_000,
            seed: 1,
        }
    }
}

pub struct ApiServer {
    state: Mutex<State>,
    clock: Clock,
    pub(crate) traffic: http::Traffic,
    /// CPU time spent answering requests and writing watch events.
    pub cpu: CpuMeter,
}

fn metadata(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata").and_then(Value::as_object)
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    metadata(object)?.get(field)?.as_str()
}

fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    match object.get_mut("metadata") {
        Some(Value::Object(meta)) => meta,
        _ => unreachable!("metadata was just made an object"),
    }
}

/// The object without metadata and status: what `generation` counts changes of.
fn spec_part(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Value::Object(map) = &mut copy {
        for key in ["metadata", "status", "apiVersion", "kind"] {
            map.remove(key);
        }
    }
    copy
}

/// The object as compared for no-op detection: managed-field timestamps do not count.
fn comparable(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(Value::Array(entries)) = copy.pointer_mut("/metadata/managedFields") {
        for entry in entries {
            if let Value::Object(entry) = entry {
                entry.remove("time");
            }
        }
    }
    copy
}

const SYSTEM_METADATA: [&str; 8] = [
    "uid",
    "creationTimestamp",
    "generation",
    "resourceVersion",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ApiServer {
    pub fn new(clock: Clock, config: ServerConfig) -> Arc<Self> {
        Arc::new(ApiServer {
            state: Mutex::new(State {
                rv: 1,
                clock: clock.clone(),
                objects: BTreeMap::new(),
                applied: HashMap::new(),
                history: VecDeque::new(),
                history_limit: config.history_limit.max(1),
                compacted: 0,
                watchers: Vec::new(),
                observers: Vec::new(),
                logs: HashMap::new(),
                uids: 0,
                rng: StdRng::seed_from_u64(config.seed),
            }),
            clock,
            traffic: http::Traffic::default(),
            cpu: CpuMeter::default(),
        })
    }

    fn now(&self) -> String {
        let now = (self.clock)();
        jiff::Timestamp::from_second(now.as_second())
            .unwrap_or(now)
            .to_string()
    }

    pub fn resource_version(&self) -> u64 {
        lock(&self.state).rv
    }

    /// Every committed change from now on, for the sandbox's simulated controllers.
    pub fn observe(&self) -> mpsc::UnboundedReceiver<Arc<Change>> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.state).observers.push(tx);
        rx
    }

    pub fn get(
        &self,
        resource: &'static ResourceType,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<Value>, ApiError> {
        let key = (index_of(resource), namespace.to_string(), name.to_string());
        lock(&self.state)
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(resource, name))
    }

    /// Objects in name order, from after `continue_after`, at most `limit`; returns the
    /// collection's resourceVersion and the continue token when more remain.
    pub fn list(
        &self,
        resource: &'static ResourceType,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: Option<usize>,
        continue_after: Option<&str>,
    ) -> (Vec<Arc<Value>>, u64, Option<String>) {
        let state = lock(&self.state);
        let index = index_of(resource);
        let mut items = Vec::new();
        let mut more = None;
        let start = continue_after.unwrap_or_default();
        for ((_, ns, name), object) in state
            .objects
            .range((index, String::new(), String::new())..(index + 1, String::new(), String::new()))
        {
            if namespace.is_some_and(|n| n != ns) {
                continue;
            }
            let position = format!("{ns}/{name}");
            if !start.is_empty() && position.as_str() <= start {
                continue;
            }
            if !(labels.matches(object) && fields.matches(object)) {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                more = items.last().map(|last: &Arc<Value>| {
                    format!(
                        "{}/{}",
                        meta_str(last, "namespace").unwrap_or_default(),
                        meta_str(last, "name").unwrap_or_default()
                    )
                });
                break;
            }
            items.push(object.clone());
        }
        (items, state.rv, more)
    }

    /// Starts a watch. Without a resourceVersion every selected object is sent as ADDED first;
    /// with one, the retained changes after it are replayed, or 410 Gone when it is too old.
    pub fn watch(
        &self,
        resource: &'static ResourceType,
        namespace: Option<&str>,
        labels: LabelSelector,
        fields: FieldSelector,
        since: Option<u64>,
    ) -> mpsc::UnboundedReceiver<WatchItem> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = lock(&self.state);
        let index = index_of(resource);
        let watcher = Watcher {
            resource: index,
            namespace: namespace.map(str::to_string),
            labels,
            fields,
            tx,
        };
        match since {
            None => {
                for ((i, _, _), object) in state.objects.iter() {
                    if *i != index {
                        continue;
                    }
                    let change = Change {
                        rv: 0,
                        at: jiff::Timestamp::UNIX_EPOCH,
                        resource,
                        old: None,
                        new: Some(object.clone()),
                    };
                    if let Some(item) = watcher.event(&change) {
                        let _ = watcher.tx.send(item);
                    }
                }
            }
            Some(rv) if rv < state.compacted => {
                let _ = watcher.tx.send(WatchItem::Gone(format!(
                    "too old resource version: {rv} ({})",
                    state.compacted + 1
                )));
                return rx;
            }
            Some(rv) => {
                for change in state.history.iter().filter(|c| c.rv > rv) {
                    if std::ptr::eq(change.resource, resource)
                        && let Some(item) = watcher.event(change)
                    {
                        let _ = watcher.tx.send(item);
                    }
                }
            }
        }
        state.watchers.push(watcher);
        rx
    }

    /// Ends every open watch, as an API server restart or a load balancer timeout does.
    pub fn drop_watches(&self) -> usize {
        let mut state = lock(&self.state);
        let count = state.watchers.len();
        state.watchers.clear();
        count
    }

    pub fn create(
        &self,
        resource: &'static ResourceType,
        namespace: &str,
        object: Value,
        manager: Option<&str>,
    ) -> Result<Arc<Value>, ApiError> {
        let now = self.now();
        let mut state = lock(&self.state);
        self.create_locked(
            &mut state, resource, namespace, object, manager, "Update", &now,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn create_locked(
        &self,
        state: &mut State,
        resource: &'static ResourceType,
        namespace: &str,
        mut object: Value,
        manager: Option<&str>,
        operation: &str,
        now: &str,
    ) -> Result<Arc<Value>, ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        let name = match meta_str(&object, "name") {
            Some(name) if !name.is_empty() => name.to_string(),
            _ => match meta_str(&object, "generateName") {
                Some(prefix) if !prefix.is_empty() => {
                    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
                    let suffix: String = (0..5)
                        .map(|_| ALPHABET[state.rng.random_range(0..ALPHABET.len())] as char)
                        .collect();
                    format!("{prefix}{suffix}")
                }
                _ => {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        format!(
                            "{} is invalid: metadata.name: Required value: name or generateName is required",
                            resource.kind
                        ),
                    ));
                }
            },
        };
        if let Some(ns) = meta_str(&object, "namespace")
            && ns != namespace
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let key = (index_of(resource), namespace.to_string(), name.clone());
        if state.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", resource.plural),
            ));
        }
        state.uids += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", state.uids);
        object["apiVersion"] = json!(resource.api_version());
        object["kind"] = json!(resource.kind);
        let fields = apply::fields_v1(&spec_part(&object));
        if resource.status {
            if let Value::Object(map) = &mut object {
                map.remove("status");
            }
            if resource.plural == "pods" {
                object["status"] = json!({"phase": "Pending"});
            }
        }
        let meta = meta_mut(&mut object);
        for field in SYSTEM_METADATA {
            meta.remove(field);
        }
        meta.insert("name".into(), json!(name));
        meta.insert("namespace".into(), json!(namespace));
        meta.insert("uid".into(), json!(uid));
        meta.insert("creationTimestamp".into(), json!(now));
        if is_event_v1(resource) {
            stamp_event(&mut object, None, (self.clock)());
        }
        let meta = meta_mut(&mut object);
        if resource.generation {
            meta.insert("generation".into(), json!(1));
        }
        if let Some(manager) = manager {
            meta.insert(
                "managedFields".into(),
                json!([managed_entry(resource, manager, operation, fields, now)]),
            );
        }
        Ok(state
            .commit(resource, key, None, Some(object))
            .unwrap_or_default())
    }

    /// Writes the object, its status or its scale. Returns the stored object; a write that
    /// changes nothing returns it unchanged, without a new resourceVersion or watch event.
    pub fn write(
        &self,
        resource: &'static ResourceType,
        namespace: &str,
        name: &str,
        target: Target,
        write: Write,
        manager: Option<&str>,
    ) -> Result<Arc<Value>, ApiError> {
        let now = self.now();
        let mut state = lock(&self.state);
        let index = index_of(resource);
        let key = (index, namespace.to_string(), name.to_string());
        if (target == Target::Status && !resource.status)
            || (target == Target::Scale && !resource.scale)
        {
            return Err(ApiError::not_found(resource, name));
        }
        let Some(old) = state.objects.get(&key).cloned() else {
            return match (&write, target, manager) {
                (Write::Apply { patch, .. }, Target::Main, Some(manager)) => {
                    let created = self.create_locked(
                        &mut state,
                        resource,
                        namespace,
                        patch.clone(),
                        Some(manager),
                        "Apply",
                        &now,
                    )?;
                    state
                        .applied
                        .insert((key, manager.to_string()), patch.clone());
                    Ok(created)
                }
                _ => Err(ApiError::not_found(resource, name)),
            };
        };
        let view = match target {
            Target::Scale => scale_view(&old),
            _ => (*old).clone(),
        };
        let (candidate, patch_fields) = match &write {
            Write::Replace(object) => (object.clone(), None),
            Write::Merge(patch) => {
                let mut candidate = view.clone();
                apply::merge_patch(&mut candidate, patch);
                (candidate, Some(apply::fields_v1(&spec_part(patch))))
            }
            Write::Apply { patch, force } => {
                let Some(manager) = manager else {
                    return Err(ApiError::bad_request(
                        "PATCH, application/apply-patch+yaml requires fieldManager to be set",
                    ));
                };
                if !force {
                    state.apply_conflicts(&key, manager, patch, &view)?;
                }
                let mut candidate = view.clone();
                if let Some(previous) = state.applied.get(&(key.clone(), manager.to_string())) {
                    apply::prune(&mut candidate, previous, patch);
                }
                apply::apply_merge(&mut candidate, patch);
                (candidate, Some(apply::fields_v1(&spec_part(patch))))
            }
        };
        if let Some(expected) = meta_str(&candidate, "resourceVersion")
            && Some(expected) != meta_str(&view, "resourceVersion")
        {
            return Err(ApiError::modified(resource, name));
        }
        if meta_str(&candidate, "name").is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        let mut new = (*old).clone();
        match target {
            Target::Main => {
                new = candidate;
                let old_meta = metadata(&old).cloned().unwrap_or_default();
                let meta = meta_mut(&mut new);
                for field in SYSTEM_METADATA.iter().chain(["name", "namespace"].iter()) {
                    match old_meta.get(*field) {
                        Some(value) => meta.insert(field.to_string(), value.clone()),
                        None => meta.remove(*field),
                    };
                }
                if resource.status
                    && let Value::Object(map) = &mut new
                {
                    match old.get("status") {
                        Some(status) => map.insert("status".into(), status.clone()),
                        None => map.remove("status"),
                    };
                }
            }
            Target::Status => match candidate.get("status") {
                Some(status) => new["status"] = status.clone(),
                None => {
                    if let Value::Object(map) = &mut new {
                        map.remove("status");
                    }
                }
            },
            Target::Scale => {
                let replicas = candidate
                    .pointer("/spec/replicas")
                    .cloned()
                    .unwrap_or(json!(0));
                if !replicas.is_i64() || replicas.as_i64().is_some_and(|r| r < 0) {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        "spec.replicas: must be greater than or equal to 0",
                    ));
                }
                new["spec"]["replicas"] = replicas;
            }
        }
        new["apiVersion"] = json!(resource.api_version());
        new["kind"] = json!(resource.kind);
        if is_event_v1(resource) && target == Target::Main {
            stamp_event(&mut new, Some(&old), (self.clock)());
        }
        if let Some(manager) = manager {
            let (operation, subresource) = match (&write, target) {
                (Write::Apply { .. }, Target::Main) => ("Apply", None),
                (Write::Apply { .. }, Target::Status) => ("Apply", Some("status")),
                (_, Target::Status) => ("Update", Some("status")),
                (_, Target::Scale) => ("Update", Some("scale")),
                _ => ("Update", None),
            };
            record_manager(
                &mut new,
                resource,
                manager,
                operation,
                subresource,
                patch_fields,
                &now,
            );
        }
        if resource.generation && target != Target::Status && spec_part(&new) != spec_part(&old) {
            let generation = metadata(&old)
                .and_then(|m| m.get("generation"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), json!(generation + 1));
        }
        if let (Write::Apply { patch, .. }, Some(manager)) = (&write, manager) {
            let stored = if target == Target::Main {
                patch.clone()
            } else {
                json!({"status": patch.get("status").cloned().unwrap_or(Value::Null)})
            };
            state
                .applied
                .insert((key.clone(), manager.to_string()), stored);
        }
        if comparable(&new) == comparable(&old) {
            return Ok(old);
        }
        // An object marked for deletion goes once its last finalizer is removed.
        let finalized = metadata(&new).is_some_and(|m| {
            m.contains_key("deletionTimestamp")
                && m.get("finalizers")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty)
        }) && resource.plural != "pods";
        if finalized {
            state.remove_with_dependents(resource, key, &now, None);
            return Ok(old);
        }
        Ok(state
            .commit(resource, key, Some(old), Some(new))
            .unwrap_or_default())
    }

    /// Deletes as the real server does: pods get a grace period (the kubelet removes them
    /// later), objects with finalizers are only marked, the rest go at once with their
    /// dependents unless `propagation` is `Orphan`.
    pub fn delete(
        &self,
        resource: &'static ResourceType,
        namespace: &str,
        name: &str,
        grace_seconds: Option<i64>,
        propagation: Option<&str>,
    ) -> Result<Arc<Value>, ApiError> {
        let now = self.now();
        let mut state = lock(&self.state);
        let key = (index_of(resource), namespace.to_string(), name.to_string());
        let old = state
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(resource, name))?;
        state
            .delete_locked(resource, key, old, grace_seconds, propagation, &now)
            .ok_or_else(|| ApiError::not_found(resource, name))
    }

    pub fn append_log(&self, namespace: &str, pod: &str, container: &str, line: &str) {
        let mut state = lock(&self.state);
        let log = state
            .logs
            .entry((namespace.into(), pod.into(), container.into()))
            .or_default();
        log.current.push_str(line);
        log.current.push('\n');
    }

    /// A container restarted: its log becomes the previous run's.
    pub fn rotate_log(&self, namespace: &str, pod: &str, container: &str) {
        let mut state = lock(&self.state);
        let log = state
            .logs
            .entry((namespace.into(), pod.into(), container.into()))
            .or_default();
        log.previous = Some(std::mem::take(&mut log.current));
    }

    pub fn read_log(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
        tail_lines: Option<usize>,
        limit_bytes: Option<usize>,
    ) -> Result<String, ApiError> {
        let state = lock(&self.state);
        let resource = &RESOURCES[0];
        if !state
            .objects
            .contains_key(&(0, namespace.to_string(), pod.to_string()))
        {
            return Err(ApiError::not_found(resource, pod));
        }
        let log = state
            .logs
            .get(&(namespace.into(), pod.into(), container.into()));
        let text = match (log, previous) {
            (Some(log), true) => log.previous.clone().ok_or_else(|| {
                ApiError::bad_request(format!(
                    "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                ))
            })?,
            (Some(log), false) => log.current.clone(),
            (None, true) => {
                return Err(ApiError::bad_request(format!(
                    "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                )));
            }
            (None, false) => String::new(),
        };
        let mut text = match tail_lines {
            Some(n) => {
                let lines: Vec<&str> = text.lines().collect();
                let start = lines.len().saturating_sub(n);
                lines[start..].iter().map(|l| format!("{l}\n")).collect()
            }
            None => text,
        };
        if let Some(limit) = limit_bytes
            && text.len() > limit
        {
            let mut cut = limit;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        Ok(text)
    }
}

fn is_event_v1(resource: &ResourceType) -> bool {
    resource.group == "events.k8s.io" && resource.plural == "events"
}

/// kube's event recorder stamps `eventTime` and `series.lastObservedTime` with the process's
/// wall clock; the simulated server restamps them with its own clock as the writes arrive, so a
/// run is the same for the same seed. `eventTime` stays what it was at creation, as a real
/// server keeps it.
fn stamp_event(object: &mut Value, old: Option<&Value>, now: jiff::Timestamp) {
    let micro = |t: jiff::Timestamp| {
        let seconds = jiff::Timestamp::from_second(t.as_second()).unwrap_or(t);
        format!(
            "{}.{:06}Z",
            seconds.to_string().trim_end_matches('Z'),
            t.subsec_microsecond()
        )
    };
    let created = old
        .and_then(|o| o.get("eventTime").cloned())
        .unwrap_or_else(|| json!(micro(now)));
    object["eventTime"] = created;
    if let Some(series) = object.get_mut("series").filter(|s| s.is_object()) {
        series["lastObservedTime"] = json!(micro(now));
    }
}

fn managed_entry(
    resource: &ResourceType,
    manager: &str,
    operation: &str,
    fields: Value,
    now: &str,
) -> Value {
    json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": resource.api_version(),
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    })
}

fn record_manager(
    object: &mut Value,
    resource: &ResourceType,
    manager: &str,
    operation: &str,
    subresource: Option<&str>,
    fields: Option<Value>,
    now: &str,
) {
    let meta = meta_mut(object);
    let entries = meta.entry("managedFields").or_insert_with(|| json!([]));
    if !entries.is_array() {
        *entries = json!([]);
    }
    let Value::Array(entries) = entries else {
        return;
    };
    let same = |e: &Value| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some(operation)
            && e.get("subresource").and_then(Value::as_str) == subresource
    };
    let fields = fields.unwrap_or_else(|| {
        entries
            .iter()
            .find(|e| same(e))
            .and_then(|e| e.get("fieldsV1").cloned())
            .unwrap_or(json!({}))
    });
    let mut entry = managed_entry(resource, manager, operation, fields, now);
    if let Some(subresource) = subresource {
        entry["subresource"] = json!(subresource);
    }
    match entries.iter_mut().find(|e| same(e)) {
        Some(existing) => *existing = entry,
        None => entries.push(entry),
    }
}

/// The `autoscaling/v1` Scale view of an object with `.spec.replicas`.
pub fn scale_view(object: &Value) -> Value {
    let meta = metadata(object).cloned().unwrap_or_default();
    let selector = object
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        });
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": object.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": object.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

impl State {
    fn commit(
        &mut self,
        resource: &'static ResourceType,
        key: Key,
        old: Option<Arc<Value>>,
        new: Option<Value>,
    ) -> Option<Arc<Value>> {
        self.rv += 1;
        let rv = self.rv;
        let new = new.map(|mut object| {
            meta_mut(&mut object).insert("resourceVersion".into(), json!(rv.to_string()));
            Arc::new(object)
        });
        let (old, new_for_change) = match &new {
            Some(object) => {
                self.objects.insert(key, object.clone());
                (old, Some(object.clone()))
            }
            None => {
                self.objects.remove(&key);
                self.applied.retain(|(k, _), _| *k != key);
                // The DELETED event carries the deletion's resourceVersion.
                let old = old.map(|o| {
                    let mut object = (*o).clone();
                    meta_mut(&mut object).insert("resourceVersion".into(), json!(rv.to_string()));
                    Arc::new(object)
                });
                (old, None)
            }
        };
        let change = Arc::new(Change {
            rv,
            at: (self.clock)(),
            resource,
            old,
            new: new_for_change,
        });
        let index = index_of(resource);
        self.watchers.retain(|w| {
            if w.resource != index {
                return !w.tx.is_closed();
            }
            match w.event(&change) {
                Some(item) => w.tx.send(item).is_ok(),
                None => !w.tx.is_closed(),
            }
        });
        self.observers.retain(|o| o.send(change.clone()).is_ok());
        self.history.push_back(change);
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.rv;
            }
        }
        new
    }

    /// 409 when another apply manager set a field this apply changes.
    fn apply_conflicts(
        &self,
        key: &Key,
        manager: &str,
        patch: &Value,
        live: &Value,
    ) -> Result<(), ApiError> {
        let mut conflicts = Vec::new();
        for ((k, other), config) in &self.applied {
            if k != key || other == manager {
                continue;
            }
            for path in apply::leaves(patch) {
                if apply::lookup(config, &path).is_some()
                    && apply::lookup(live, &path) != apply::lookup(patch, &path)
                {
                    conflicts.push(format!(
                        "conflict with \"{other}\": {}",
                        apply::render_path(&path)
                    ));
                }
            }
        }
        if conflicts.is_empty() {
            return Ok(());
        }
        conflicts.sort();
        Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {} conflict(s): {}",
                conflicts.len(),
                conflicts.join(", ")
            ),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn delete_locked(
        &mut self,
        resource: &'static ResourceType,
        key: Key,
        old: Arc<Value>,
        grace_seconds: Option<i64>,
        propagation: Option<&str>,
        now: &str,
    ) -> Option<Arc<Value>> {
        let marked = metadata(&old).is_some_and(|m| m.contains_key("deletionTimestamp"));
        if resource.plural == "pods" {
            let grace = grace_seconds
                .or_else(|| {
                    old.pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                })
                .unwrap_or(30)
                .max(0);
            // A pod that never started, or a zero grace period, goes at once.
            let scheduled = old
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some();
            if grace == 0 || !scheduled {
                self.logs
                    .retain(|(ns, pod, _), _| !(*ns == key.1 && *pod == key.2));
                self.commit(resource, key, Some(old.clone()), None);
                return Some(old);
            }
            if marked {
                return Some(old);
            }
            let mut new = (*old).clone();
            let at = (self.clock)()
                .checked_add(jiff::SignedDuration::from_secs(grace))
                .map(|t| {
                    jiff::Timestamp::from_second(t.as_second())
                        .unwrap_or(t)
                        .to_string()
                })
                .unwrap_or_else(|_| now.to_string());
            let meta = meta_mut(&mut new);
            meta.insert("deletionTimestamp".into(), json!(at));
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
            return self.commit(resource, key, Some(old), Some(new));
        }
        let has_finalizers = metadata(&old)
            .and_then(|m| m.get("finalizers"))
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if marked {
                return Some(old);
            }
            let mut new = (*old).clone();
            meta_mut(&mut new).insert("deletionTimestamp".into(), json!(now));
            return self.commit(resource, key, Some(old), Some(new));
        }
        self.remove_with_dependents(resource, key, now, propagation);
        Some(old)
    }

    /// Removes the object, then deletes (or orphans) everything that names it as an owner.
    fn remove_with_dependents(
        &mut self,
        resource: &'static ResourceType,
        key: Key,
        now: &str,
        propagation: Option<&str>,
    ) {
        let Some(old) = self.objects.get(&key).cloned() else {
            return;
        };
        let uid = meta_str(&old, "uid").unwrap_or_default().to_string();
        self.commit(resource, key, Some(old), None);
        let dependents: Vec<(Key, Arc<Value>)> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                metadata(o)
                    .and_then(|m| m.get("ownerReferences"))
                    .and_then(Value::as_array)
                    .is_some_and(|refs| {
                        refs.iter()
                            .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid.as_str()))
                    })
            })
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect();
        for (key, object) in dependents {
            let dependent_resource = &RESOURCES[key.0];
            if propagation == Some("Orphan") {
                let mut new = (*object).clone();
                if let Some(Value::Array(refs)) = new.pointer_mut("/metadata/ownerReferences") {
                    refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()));
                }
                self.commit(dependent_resource, key, Some(object), Some(new));
            } else {
                self.delete_locked(dependent_resource, key, object, None, None, now);
            }
        }
    }
}
