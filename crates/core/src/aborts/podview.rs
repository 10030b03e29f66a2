//! What the operator reads of a pod, and nothing else: identity, the pool and revision it belongs
//! to, and the kubelet's account of its containers. Classification works on this view, and the
//! controller caches it instead of the whole `Pod`, whose every field would be built and kept
//! (sizes in docs/benchmarks.md). Pure.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, Pod, Probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::api::{ProbeTiming, Runtime, Source};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodView {
    pub name: Box<str>,
    pub namespace: Box<str>,
    pub uid: Box<str>,
    /// The `workerpool.dev/pool` label.
    pub pool: Option<Box<str>>,
    /// The operator's revision annotation, else the Deployment controller's `pod-template-hash`.
    pub revision: Option<Box<str>>,
    /// The operator's runtime annotation, when it parses.
    pub runtime: Option<Runtime>,
    /// The Job whose run this pod is (the Job controller's `batch.kubernetes.io/job-name` label).
    pub job: Option<Box<str>>,
    /// When the pod was created: every run of its containers ended after it.
    pub created: Option<Timestamp>,
    /// The pod has a deletion timestamp: it is shutting down.
    pub deleting: bool,
    pub phase: Option<Box<str>>,
    /// Pod-level reason and message, such as `Evicted`.
    pub reason: Option<String>,
    pub message: Option<String>,
    /// The scheduler's message when `PodScheduled` is False with reason `Unschedulable`.
    pub unschedulable: Option<Unschedulable>,
    pub containers: Vec<ContainerView>,
    /// Init containers, in the order they run (sidecars among them keep running).
    pub init_containers: Vec<ContainerView>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unschedulable {
    pub message: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerView {
    pub name: String,
    pub ready: bool,
    pub restart_count: i32,
    pub state: State,
    /// When the current run started, while it runs.
    pub running_since: Option<Timestamp>,
    /// The termination before the last restart (boxed: most containers never restarted, and the
    /// pod cache holds one view per pod).
    pub last_terminated: Option<Box<Termination>>,
    /// The window the container's own startup probe gives its boot (kubelet defaults for unset
    /// fields); None without a startup probe. A run that ends sooner, for no more specific
    /// reason, never finished booting.
    pub boot_window: Option<SignedDuration>,
    /// The signal the container is stopped with, as the kubelet reports it (Kubernetes 1.33+
    /// with the `ContainerStopSignals` feature): the image's `STOPSIGNAL` unless the spec sets one.
    pub stop_signal: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum State {
    #[default]
    Unknown,
    Running,
    Waiting {
        reason: Option<String>,
        message: Option<String>,
    },
    /// Boxed: the cache holds many running containers for each terminated one.
    Terminated(Box<Termination>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Termination {
    pub exit_code: i32,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

impl From<&ContainerStateTerminated> for Termination {
    fn from(t: &ContainerStateTerminated) -> Self {
        Termination {
            exit_code: t.exit_code,
            reason: t.reason.clone(),
            message: t.message.clone(),
            started_at: t.started_at.as_ref().map(|at| at.0),
            finished_at: t.finished_at.as_ref().map(|at| at.0),
        }
    }
}

impl From<&ContainerState> for State {
    fn from(state: &ContainerState) -> Self {
        if let Some(t) = &state.terminated {
            State::Terminated(Box::new(t.into()))
        } else if let Some(w) = &state.waiting {
            State::Waiting {
                reason: w.reason.clone(),
                message: w.message.clone(),
            }
        } else if state.running.is_some() {
            State::Running
        } else {
            State::Unknown
        }
    }
}

impl ContainerView {
    fn new(
        name: String,
        ready: bool,
        restart_count: i32,
        state: Option<&ContainerState>,
        last_state: Option<&ContainerState>,
    ) -> Self {
        ContainerView {
            name,
            ready,
            restart_count,
            state: state.map(State::from).unwrap_or_default(),
            running_since: state
                .and_then(|s| s.running.as_ref())
                .and_then(|r| r.started_at.as_ref())
                .map(|at| at.0),
            last_terminated: last_state
                .and_then(|s| s.terminated.as_ref())
                .map(|t| Box::new(Termination::from(t))),
            boot_window: None,
            stop_signal: None,
        }
    }
}

/// The scheduler's verdict when it found no node: `PodScheduled` False, reason `Unschedulable`.
fn unschedulable(conditions: &[ConditionJson]) -> Option<Unschedulable> {
    conditions
        .iter()
        .find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })
        .map(|c| Unschedulable {
            message: c.message.clone(),
        })
}

/// A whole `Pod` (`kubectl get pod -o json`, a test) is read through its JSON by the decoder the
/// pod watch uses, so there is one reading of a pod.
impl From<&Pod> for PodView {
    fn from(pod: &Pod) -> Self {
        // A `Pod` always serializes to JSON that decodes as [`PodJson`] (every field it requires,
        // a container status's name, is required in `Pod` too); the default is never reached.
        serde_json::to_value(pod)
            .and_then(PodJson::deserialize)
            .map(|json| json.into_view().1)
            .unwrap_or_default()
    }
}

/// A pod's JSON as the operator reads it; every other field (the spec, managed fields, IPs,
/// images, timestamps of conditions) is skipped while parsing instead of being built.
#[derive(Deserialize)]
pub struct PodJson {
    metadata: MetaJson,
    spec: Option<SpecJson>,
    status: Option<StatusJson>,
}

/// Of the spec, only each container's startup probe timing: the boot window of its runs.
#[derive(Deserialize)]
struct SpecJson {
    #[serde(default)]
    containers: Vec<SpecContainerJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecContainerJson {
    name: String,
    startup_probe: Option<Probe>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaJson {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<IgnoredAny>,
    labels: Option<LabelsJson>,
    annotations: Option<AnnotationsJson>,
}

/// The labels read; the names are those of [`crate::api::POOL_LABEL`] and
/// [`crate::api::REVISION_LABEL`].
#[derive(Deserialize)]
struct LabelsJson {
    #[serde(rename = "workerpool.dev/pool")]
    pool: Option<String>,
    #[serde(rename = "pod-template-hash")]
    template_hash: Option<String>,
    #[serde(rename = "batch.kubernetes.io/job-name")]
    job_name: Option<String>,
    /// The label Job controllers before Kubernetes 1.27 wrote, still written beside the new one.
    #[serde(rename = "job-name")]
    legacy_job_name: Option<String>,
}

/// The annotations read; the names are those of [`crate::api::REVISION_ANNOTATION`] and
/// [`crate::api::RUNTIME_ANNOTATION`].
#[derive(Deserialize)]
struct AnnotationsJson {
    #[serde(rename = "workerpool.dev/revision")]
    revision: Option<String>,
    #[serde(rename = "workerpool.dev/runtime")]
    runtime: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusJson {
    phase: Option<String>,
    reason: Option<String>,
    message: Option<String>,
    conditions: Option<Vec<ConditionJson>>,
    container_statuses: Option<Vec<ContainerStatusJson>>,
    init_container_statuses: Option<Vec<ContainerStatusJson>>,
}

#[derive(Deserialize)]
struct ConditionJson {
    #[serde(rename = "type")]
    type_: String,
    status: String,
    reason: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerStatusJson {
    name: String,
    #[serde(default)]
    ready: bool,
    #[serde(default)]
    restart_count: i32,
    state: Option<ContainerState>,
    last_state: Option<ContainerState>,
    stop_signal: Option<String>,
}

impl PodJson {
    /// The pod's resource version and its view.
    pub fn into_view(self) -> (Option<String>, PodView) {
        let PodJson {
            metadata,
            spec,
            status,
        } = self;
        let (labels, annotations) = (metadata.labels, metadata.annotations);
        let (pool, template_hash, job) = labels.map_or((None, None, None), |l| {
            (l.pool, l.template_hash, l.job_name.or(l.legacy_job_name))
        });
        let (revision, runtime) = annotations.map_or((None, None), |a| (a.revision, a.runtime));
        let status = status.unwrap_or(StatusJson {
            phase: None,
            reason: None,
            message: None,
            conditions: None,
            container_statuses: None,
            init_container_statuses: None,
        });
        let mut containers = views(status.container_statuses);
        for container in spec.map(|s| s.containers).unwrap_or_default() {
            if let (Some(probe), Some(view)) = (
                container.startup_probe,
                containers.iter_mut().find(|c| c.name == container.name),
            ) {
                view.boot_window = Some(SignedDuration::from_secs(
                    ProbeTiming::of(&probe, Source::Template).window_seconds(),
                ));
            }
        }
        let init_containers = views(status.init_container_statuses);
        let view = PodView {
            name: metadata.name.unwrap_or_default().into(),
            namespace: metadata.namespace.unwrap_or_default().into(),
            uid: metadata.uid.unwrap_or_default().into(),
            pool: pool.map(String::into_boxed_str),
            revision: revision.or(template_hash).map(String::into_boxed_str),
            runtime: runtime.and_then(|r| r.parse().ok()),
            job: job.map(String::into_boxed_str),
            created: metadata.creation_timestamp.map(|t| t.0),
            deleting: metadata.deletion_timestamp.is_some(),
            phase: status.phase.map(String::into_boxed_str),
            reason: status.reason,
            message: status.message,
            unschedulable: unschedulable(status.conditions.as_deref().unwrap_or_default()),
            containers,
            init_containers,
        };
        (metadata.resource_version, view)
    }
}

/// Sized to fit: collecting in place would keep the decoded statuses' larger allocation for as
/// long as the view is cached.
fn views(statuses: Option<Vec<ContainerStatusJson>>) -> Vec<ContainerView> {
    let statuses = statuses.unwrap_or_default();
    let mut views = Vec::with_capacity(statuses.len());
    views.extend(statuses.into_iter().map(|c| ContainerView {
        stop_signal: c.stop_signal,
        ..ContainerView::new(
            c.name,
            c.ready,
            c.restart_count,
            c.state.as_ref(),
            c.last_state.as_ref(),
        )
    }));
    views
}

impl PodView {
    /// Every container ready; a pod that shows no container yet is not.
    pub fn all_containers_ready(&self) -> bool {
        !self.containers.is_empty() && self.containers.iter().all(|c| c.ready)
    }

    /// The stop signal the kubelet reports for an app container: none for a Job's pod, which
    /// runs no app server.
    pub fn app_stop_signal(&self, container: &str) -> Option<&str> {
        if self.job.is_some() {
            return None;
        }
        self.container(container)?.stop_signal.as_deref()
    }

    /// A container or init container by name (the two share one namespace of names).
    pub fn container(&self, name: &str) -> Option<&ContainerView> {
        self.containers
            .iter()
            .chain(&self.init_containers)
            .find(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{POOL_LABEL, REVISION_ANNOTATION, REVISION_LABEL, RUNTIME_ANNOTATION};
    use serde_json::json;

    fn full_pod() -> serde_json::Value {
        json!({
            "metadata": {
                "name": "api-1", "namespace": "shop", "uid": "u1", "resourceVersion": "42",
                "deletionTimestamp": "2026-11-22T10:00:05Z",
                "labels": {"workerpool.dev/pool": "api", "pod-template-hash": "abc"},
                "annotations": {"workerpool.dev/runtime": "gunicorn"},
                "managedFields": [{"manager": "kubelet", "operation": "Update", "fieldsType": "FieldsV1",
                                   "fieldsV1": {"f:status": {"f:phase": {}}}}],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-abc", "uid": "rs"}]
            },
            "spec": {"containers": [{"name": "app", "image": "shop:1", "env": [{"name": "A", "value": "1"}]}]},
            "status": {
                "phase": "Running", "podIP": "10.0.0.1",
                "containerStatuses": [{
                    "name": "app", "image": "shop:1", "imageID": "sha", "ready": false, "restartCount": 1,
                    "state": {"running": {"startedAt": "2026-11-22T10:00:01Z"}},
                    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
                }],
                "initContainerStatuses": [{
                    "name": "migrate", "image": "shop:1", "imageID": "sha", "ready": true, "restartCount": 2,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}
                }]
            }
        })
    }

    #[test]
    fn a_pod_decoded_into_its_view_reads_as_the_whole_pod() {
        let scheduling = json!({"metadata": {"name": "api-2", "annotations": {"workerpool.dev/revision": "r7"}},
            "status": {"phase": "Pending", "reason": "Evicted", "message": "low on memory",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                "message": "0/3 nodes", "lastTransitionTime": "2026-11-22T10:00:00Z"}]}});
        let bare = json!({"metadata": {"name": "api-3"}});
        for value in [full_pod(), scheduling, bare] {
            let text = value.to_string();
            let json: PodJson = serde_json::from_str(&text).expect("pod json");
            let pod: Pod = serde_json::from_str(&text).expect("pod");
            let (version, view) = json.into_view();
            assert_eq!(view, PodView::from(&pod), "{text}");
            assert_eq!(
                view.containers.capacity(),
                view.containers.len(),
                "the cached view holds no spare room"
            );
            assert_eq!(version, pod.metadata.resource_version);
        }
    }

    #[test]
    fn the_labels_and_annotations_read_are_the_operators() {
        let value = json!({"metadata": {
            "labels": {POOL_LABEL: "api", REVISION_LABEL: "abc"},
            "annotations": {REVISION_ANNOTATION: "r7", RUNTIME_ANNOTATION: "gunicorn"}}});
        let json: PodJson = serde_json::from_value(value).expect("pod json");
        let (_, view) = json.into_view();
        assert_eq!(view.pool.as_deref(), Some("api"));
        assert_eq!(view.revision.as_deref(), Some("r7"));
        assert_eq!(view.runtime, Some(Runtime::Gunicorn));
        let value = json!({"metadata": {"labels": {REVISION_LABEL: "abc"}}});
        let json: PodJson = serde_json::from_value(value).expect("pod json");
        assert_eq!(json.into_view().1.revision.as_deref(), Some("abc"));
    }

    #[test]
    fn keeps_what_classification_reads() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": "api-1", "namespace": "shop", "uid": "u1",
                "deletionTimestamp": "2026-11-22T10:00:05Z",
                "labels": {"workerpool.dev/pool": "api", "pod-template-hash": "abc", "team": "x"},
                "annotations": {"workerpool.dev/runtime": "gunicorn", "workerpool.dev/revision": "r7"}
            },
            "spec": {"containers": [{"name": "app", "image": "shop:1"}]},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}],
                "containerStatuses": [{
                    "name": "app", "image": "shop:1", "imageID": "sha", "ready": false, "restartCount": 2,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}},
                    "lastState": {"terminated": {"exitCode": 3, "reason": "Error", "finishedAt": "2026-11-22T10:00:00Z"}}
                }]
            }
        }))
        .expect("pod");
        let view = PodView::from(&pod);
        assert_eq!(&*view.name, "api-1");
        assert_eq!(&*view.namespace, "shop");
        assert_eq!(&*view.uid, "u1");
        assert_eq!(view.pool.as_deref(), Some("api"));
        assert_eq!(view.revision.as_deref(), Some("r7"), "the annotation wins");
        assert_eq!(view.runtime, Some(Runtime::Gunicorn));
        assert!(view.deleting);
        assert_eq!(
            view.unschedulable,
            Some(Unschedulable {
                message: Some("0/3 nodes".into())
            })
        );
        let app = view.container("app").expect("app");
        assert_eq!(app.restart_count, 2);
        assert!(!app.ready);
        assert_eq!(
            app.state,
            State::Waiting {
                reason: Some("CrashLoopBackOff".into()),
                message: Some("back-off 20s".into())
            }
        );
        let last = app.last_terminated.as_ref().expect("last termination");
        assert_eq!(last.exit_code, 3);
        assert_eq!(
            last.finished_at,
            Some("2026-11-22T10:00:00Z".parse().expect("time"))
        );
    }

    #[test]
    fn the_template_hash_is_the_revision_without_the_annotation() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "labels": {"pod-template-hash": "abc"}}
        }))
        .expect("pod");
        let view = PodView::from(&pod);
        assert_eq!(view.revision.as_deref(), Some("abc"));
        assert_eq!(view.runtime, None);
        assert!(view.containers.is_empty());
        assert_eq!(view.phase, None);
    }
}
