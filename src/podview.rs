//! What the operator reads of a pod, and nothing else: identity, the pool and revision it belongs
//! to, and the kubelet's account of its containers. Classification works on this view, and the
//! controller caches it instead of the whole `Pod` (a `k8s_openapi` Pod is 2 KiB before any of
//! its strings). Pure.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus, Pod};

use crate::api::{POOL_LABEL, REVISION_ANNOTATION, RUNTIME_ANNOTATION, Runtime};
use crate::observe::REVISION_LABEL;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// The `workerpool.dev/pool` label.
    pub pool: Option<String>,
    /// The operator's revision annotation, else the Deployment controller's `pod-template-hash`.
    pub revision: Option<String>,
    /// The operator's runtime annotation, when it parses.
    pub runtime: Option<Runtime>,
    /// The pod has a deletion timestamp: it is shutting down.
    pub deleting: bool,
    pub phase: Option<String>,
    /// Pod-level reason and message, such as `Evicted`.
    pub reason: Option<String>,
    pub message: Option<String>,
    /// The scheduler's message when `PodScheduled` is False with reason `Unschedulable`.
    pub unschedulable: Option<Unschedulable>,
    pub containers: Vec<ContainerView>,
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
    /// The termination before the last restart.
    pub last_terminated: Option<Termination>,
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
    Terminated(Termination),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Termination {
    pub exit_code: i32,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub finished_at: Option<Timestamp>,
}

impl From<&ContainerStateTerminated> for Termination {
    fn from(t: &ContainerStateTerminated) -> Self {
        Termination {
            exit_code: t.exit_code,
            reason: t.reason.clone(),
            message: t.message.clone(),
            finished_at: t.finished_at.as_ref().map(|at| at.0),
        }
    }
}

impl From<&ContainerState> for State {
    fn from(state: &ContainerState) -> Self {
        if let Some(t) = &state.terminated {
            State::Terminated(t.into())
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

impl From<&ContainerStatus> for ContainerView {
    fn from(status: &ContainerStatus) -> Self {
        ContainerView {
            name: status.name.clone(),
            ready: status.ready,
            restart_count: status.restart_count,
            state: status.state.as_ref().map(State::from).unwrap_or_default(),
            running_since: status
                .state
                .as_ref()
                .and_then(|s| s.running.as_ref())
                .and_then(|r| r.started_at.as_ref())
                .map(|at| at.0),
            last_terminated: status
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(Termination::from),
        }
    }
}

impl From<&Pod> for PodView {
    fn from(pod: &Pod) -> Self {
        let meta = &pod.metadata;
        let label = |key: &str| meta.labels.as_ref().and_then(|l| l.get(key)).cloned();
        let annotation = |key: &str| meta.annotations.as_ref().and_then(|a| a.get(key)).cloned();
        let status = pod.status.as_ref();
        let unschedulable = status
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default()
            .iter()
            .find(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
            .map(|c| Unschedulable {
                message: c.message.clone(),
            });
        PodView {
            name: meta.name.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            pool: label(POOL_LABEL),
            revision: annotation(REVISION_ANNOTATION).or_else(|| label(REVISION_LABEL)),
            runtime: annotation(RUNTIME_ANNOTATION).and_then(|r| r.parse().ok()),
            deleting: meta.deletion_timestamp.is_some(),
            phase: status.and_then(|s| s.phase.clone()),
            reason: status.and_then(|s| s.reason.clone()),
            message: status.and_then(|s| s.message.clone()),
            unschedulable,
            containers: status
                .and_then(|s| s.container_statuses.as_deref())
                .unwrap_or_default()
                .iter()
                .map(ContainerView::from)
                .collect(),
        }
    }
}

impl PodView {
    pub fn container(&self, name: &str) -> Option<&ContainerView> {
        self.containers.iter().find(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watched::WatchedPod;
    use kube::Resource;
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
                }]
            }
        })
    }

    #[test]
    fn a_watched_pod_skips_spec_and_managed_fields_and_reads_the_same() {
        let text = full_pod().to_string();
        let watched: WatchedPod = serde_json::from_str(&text).expect("watched pod");
        let pod: Pod = serde_json::from_str(&text).expect("pod");
        assert!(watched.0.spec.is_none());
        assert!(watched.meta().managed_fields.is_none());
        assert_eq!(watched.meta().resource_version.as_deref(), Some("42"));
        assert_eq!(PodView::from(&watched.0), PodView::from(&pod));
        assert_eq!(WatchedPod::plural(&()), "pods");
        assert_eq!(WatchedPod::api_version(&()), "v1");
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
        assert_eq!(view.name, "api-1");
        assert_eq!(view.namespace, "shop");
        assert_eq!(view.uid, "u1");
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
