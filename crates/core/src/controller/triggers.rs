//! Which watch events start a reconcile. Every event still updates the caches; only the ones
//! that change something a reconcile reads start one, so a Deployment's condition timestamps, a
//! PodDisruptionBudget's status or the pool's own status write cost no reconcile.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};

use crate::controller::watched::{PackedBudget, PackedDeployment, Watched};
use k8s_openapi::api::batch::v1::Job;
use kube::Resource;
use kube::core::ObjectMeta;
use kube::runtime::watcher;

/// What a reconcile reads of an object, as one number.
pub trait Fingerprint {
    fn fingerprint(&self) -> u64;
}

/// The hasher of every fingerprint: fixed seeds, so equal inputs hash equal for the life of the
/// process (fingerprints are never stored or sent).
fn fingerprint_hasher() -> impl Hasher {
    foldhash::quality::FixedState::default().build_hasher()
}

/// One number for any hashable value: equal inputs, equal number.
fn version_of(inputs: impl Hash) -> u64 {
    let mut hasher = fingerprint_hasher();
    inputs.hash(&mut hasher);
    hasher.finish()
}

/// The metadata every reconcile reads: the generation (spec changes; labels, annotations, owners
/// and deletion do not bump it), labels, annotations, owners and deletion. Status updates move
/// none of it.
fn meta_print(meta: &ObjectMeta) -> u64 {
    let mut hasher = fingerprint_hasher();
    (&meta.uid, &meta.labels, &meta.annotations).hash(&mut hasher);
    meta.deletion_timestamp
        .as_ref()
        .map(|t| t.0)
        .hash(&mut hasher);
    // Without a generation any write, status included, counts as a change.
    match meta.generation {
        Some(generation) => generation.hash(&mut hasher),
        None => meta.resource_version.hash(&mut hasher),
    }
    for owner in meta.owner_references.iter().flatten() {
        (&owner.uid, &owner.kind, &owner.name, owner.controller).hash(&mut hasher);
        owner.block_owner_deletion.hash(&mut hasher);
    }
    hasher.finish()
}

impl<K: Resource<DynamicType = ()>> Fingerprint for crate::controller::watched::Guarded<K> {
    /// A pool's own status write starts no reconcile; spec, label and annotation changes do.
    fn fingerprint(&self) -> u64 {
        meta_print(self.meta())
    }
}

impl Fingerprint for PackedDeployment {
    /// The replica counts the ramp and status read; not conditions or their timestamps.
    fn fingerprint(&self) -> u64 {
        let counts = self.status.as_ref().map(|s| {
            (
                s.observed_generation,
                s.replicas,
                s.ready_replicas,
                s.updated_replicas,
                s.available_replicas,
            )
        });
        version_of((meta_print(&self.metadata), &self.marks, counts))
    }
}

impl Fingerprint for PackedBudget {
    /// Its status (healthy counts) is never read.
    fn fingerprint(&self) -> u64 {
        version_of((meta_print(&self.metadata), &self.marks))
    }
}

impl Fingerprint for Job {
    /// Whether it finished, and how.
    fn fingerprint(&self) -> u64 {
        let status = self.status.as_ref().map(|s| {
            let conditions: Vec<(&str, &str)> = s
                .conditions
                .iter()
                .flatten()
                .map(|c| (c.type_.as_str(), c.status.as_str()))
                .collect();
            (s.active, s.succeeded, s.failed, conditions)
        });
        version_of((meta_print(&self.metadata), status))
    }
}

impl<K: Fingerprint> Fingerprint for Watched<K> {
    fn fingerprint(&self) -> u64 {
        self.0.fingerprint()
    }
}

type Key = (Option<String>, String);

/// Remembers the last fingerprint of each watched object and admits an event only when it moved.
/// Deletions are always admitted. A relist drops the prints of objects it no longer holds
/// (deleted while the watch was away, with no Delete event).
#[derive(Default)]
pub struct Changes {
    seen: HashMap<Key, u64>,
    /// The objects a relist under way delivered.
    relisted: Option<HashSet<Key>>,
}

impl Changes {
    /// The object to trigger on, if this event changed what a reconcile reads.
    pub fn admit<K: Resource + Fingerprint>(&mut self, event: watcher::Event<K>) -> Option<K> {
        let key = |object: &K| {
            let meta = object.meta();
            (
                meta.namespace.clone(),
                meta.name.clone().unwrap_or_default(),
            )
        };
        match event {
            watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
                let print = object.fingerprint();
                if let Some(relisted) = self.relisted.as_mut() {
                    relisted.insert(key(&object));
                }
                match self.seen.insert(key(&object), print) {
                    Some(previous) if previous == print => None,
                    _ => Some(object),
                }
            }
            watcher::Event::Delete(object) => {
                self.seen.remove(&key(&object));
                Some(object)
            }
            watcher::Event::Init => {
                self.relisted = Some(HashSet::new());
                None
            }
            watcher::Event::InitDone => {
                if let Some(relisted) = self.relisted.take() {
                    self.seen.retain(|key, _| relisted.contains(key));
                }
                None
            }
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::watched::Packed;
    use serde_json::json;

    #[test]
    fn the_metadata_print_ignores_status_writes_and_follows_spec_and_metadata() {
        let meta = |generation: Option<i64>, rv: &str, label: &str| ObjectMeta {
            uid: Some("u".into()),
            generation,
            resource_version: Some(rv.into()),
            labels: Some([("team".to_string(), label.to_string())].into()),
            ..ObjectMeta::default()
        };
        let version = |m: &ObjectMeta| meta_print(m);
        let base = version(&meta(Some(2), "10", "a"));
        assert_eq!(base, version(&meta(Some(2), "11", "a")), "a status write");
        assert_ne!(base, version(&meta(Some(3), "12", "a")), "a spec change");
        assert_ne!(base, version(&meta(Some(2), "13", "b")), "a label change");
        let mut deleting = meta(Some(2), "14", "a");
        deleting.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-01T00:00:00Z".parse().expect("time"),
        ));
        assert_ne!(base, version(&deleting), "deletion begins");
        assert_ne!(
            version(&meta(None, "10", "a")),
            version(&meta(None, "11", "a")),
            "without a generation every write counts"
        );
    }

    #[test]
    fn a_version_of_inputs_moves_with_each_of_them() {
        let base = version_of((7u64, 3i32, false, false));
        assert_eq!(base, version_of((7u64, 3i32, false, false)));
        for other in [
            (8u64, 3, false, false),
            (7, 4, false, false),
            (7, 3, true, false),
            (7, 3, false, true),
        ] {
            assert_ne!(base, version_of(other), "{other:?}");
        }
    }

    /// A Deployment as its watch decodes it.
    fn deployment(generation: i64, ready: i32, condition_time: &str) -> Watched<PackedDeployment> {
        serde_json::from_value(json!({
            "metadata": {"name": "api", "namespace": "shop", "uid": "u1", "generation": generation,
                         "labels": {"workerpool.dev/pool": "api"}},
            "status": {"observedGeneration": generation, "replicas": 4, "readyReplicas": ready,
                       "conditions": [{"type": "Progressing", "status": "True",
                                       "lastUpdateTime": condition_time}]}
        }))
        .expect("deployment")
    }

    #[test]
    fn a_label_or_annotation_edited_on_a_deployment_is_admitted() {
        let mut changes = Changes::default();
        let mut edited = deployment(1, 2, "2026-01-01T00:00:00Z");
        assert!(
            changes
                .admit(watcher::Event::Apply(edited.clone()))
                .is_some()
        );
        let mut whole = edited.unpack().expect("unpack");
        whole
            .metadata
            .annotations
            .get_or_insert_default()
            .insert("team".into(), "a".into());
        edited =
            serde_json::from_value(serde_json::to_value(&whole).expect("json")).expect("decode");
        assert!(
            changes.admit(watcher::Event::Apply(edited)).is_some(),
            "an annotation added by hand is set back by the next reconcile"
        );
    }

    #[test]
    fn only_changes_a_reconcile_reads_are_admitted() {
        let mut changes = Changes::default();
        let first = deployment(1, 2, "2026-01-01T00:00:00Z");
        assert!(changes.admit(watcher::Event::InitApply(first)).is_some());
        let touched = deployment(1, 2, "2026-01-01T00:00:09Z");
        assert!(
            changes.admit(watcher::Event::Apply(touched)).is_none(),
            "a condition timestamp is not a reason to reconcile"
        );
        assert!(
            changes
                .admit(watcher::Event::Apply(deployment(
                    1,
                    3,
                    "2026-01-01T00:00:09Z"
                )))
                .is_some()
        );
        assert!(
            changes
                .admit(watcher::Event::Apply(deployment(
                    2,
                    3,
                    "2026-01-01T00:00:09Z"
                )))
                .is_some()
        );
        assert!(
            changes
                .admit(watcher::Event::Delete(deployment(
                    2,
                    3,
                    "2026-01-01T00:00:09Z"
                )))
                .is_some(),
            "a deletion always triggers"
        );
        assert!(changes.is_empty());
        assert!(
            changes
                .admit(watcher::Event::Apply(deployment(
                    2,
                    3,
                    "2026-01-01T00:00:09Z"
                )))
                .is_some(),
            "a re-created object triggers"
        );
    }

    #[test]
    fn a_relist_forgets_the_prints_of_objects_it_no_longer_holds() {
        let mut changes = Changes::default();
        let named = |name: &str| {
            let mut d = deployment(1, 2, "2026-01-01T00:00:00Z");
            d.0.metadata.name = Some(name.into());
            d
        };
        for name in ["api", "worker"] {
            assert!(changes.admit(watcher::Event::Apply(named(name))).is_some());
        }
        assert!(
            changes
                .admit(watcher::Event::<Watched<PackedDeployment>>::Init)
                .is_none()
        );
        assert!(
            changes
                .admit(watcher::Event::InitApply(named("api")))
                .is_none(),
            "unchanged across the relist"
        );
        assert!(
            changes
                .admit(watcher::Event::<Watched<PackedDeployment>>::InitDone)
                .is_none()
        );
        assert_eq!(changes.seen.len(), 1, "the worker was deleted while away");
        assert!(
            changes
                .admit(watcher::Event::Apply(named("worker")))
                .is_some(),
            "and one created again under its name is news"
        );
    }

    #[test]
    fn a_pool_status_write_is_not_a_trigger_but_spec_and_labels_are() {
        use crate::api::WorkerPool;
        use crate::controller::watched::Guarded;
        let pool = |generation: i64,
                    labels: serde_json::Value,
                    ready: i32|
         -> Guarded<WorkerPool> {
            serde_json::from_value(json!({
                "apiVersion": "workerpool.dev/v1alpha1", "kind": "WorkerPool",
                "metadata": {"name": "api", "namespace": "shop", "uid": "u1", "generation": generation, "labels": labels},
                "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "a:1"}]}}},
                "status": {"readyReplicas": ready}
            }))
            .expect("pool")
        };
        let mut changes = Changes::default();
        assert!(
            changes
                .admit(watcher::Event::Apply(pool(1, json!({}), 0)))
                .is_some()
        );
        assert!(
            changes
                .admit(watcher::Event::Apply(pool(1, json!({}), 3)))
                .is_none()
        );
        assert!(
            changes
                .admit(watcher::Event::Apply(pool(2, json!({}), 3)))
                .is_some()
        );
        assert!(
            changes
                .admit(watcher::Event::Apply(pool(2, json!({"team": "a"}), 3)))
                .is_some()
        );
    }

    #[test]
    fn a_pdb_status_is_not_a_trigger_and_its_labels_are() {
        let pdb = |healthy: i32, team: &str| -> Watched<PackedBudget> {
            serde_json::from_value(json!({
                "metadata": {"name": "api", "namespace": "shop", "generation": 1,
                             "labels": {"team": team}},
                "status": {"currentHealthy": healthy, "desiredHealthy": 1, "disruptionsAllowed": 0, "expectedPods": 4}
            }))
            .expect("pdb")
        };
        let mut changes = Changes::default();
        assert!(changes.admit(watcher::Event::Apply(pdb(0, "a"))).is_some());
        assert!(changes.admit(watcher::Event::Apply(pdb(4, "a"))).is_none());
        assert!(
            changes.admit(watcher::Event::Apply(pdb(4, "b"))).is_some(),
            "a label edited by hand is set back by the next reconcile"
        );
    }

    #[test]
    fn a_finished_job_is_a_trigger() {
        let job = |status: serde_json::Value| -> Job {
            serde_json::from_value(
                json!({"metadata": {"name": "init", "namespace": "shop"}, "status": status}),
            )
            .expect("job")
        };
        let mut changes = Changes::default();
        assert!(
            changes
                .admit(watcher::Event::Apply(job(json!({"active": 1}))))
                .is_some()
        );
        assert!(
            changes
                .admit(watcher::Event::Apply(job(json!({"active": 1}))))
                .is_none()
        );
        assert!(
            changes
                .admit(watcher::Event::Apply(job(json!({"succeeded": 1,
                    "conditions": [{"type": "Complete", "status": "True"}]}))))
                .is_some()
        );
    }
}
