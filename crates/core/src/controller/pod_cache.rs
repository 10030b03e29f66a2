//! The controller's pod cache: a [`PodView`] of every pool pod, indexed by pool, so a reconcile
//! reads its own pool's pods without scanning every pod in the cluster.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;

use crate::aborts::podview::PodView;
use crate::controller::watched::ViewedPod;

/// namespace → key → value.
type ByNamespace<V> = HashMap<Box<str>, HashMap<Box<str>, V>>;

#[derive(Default)]
struct Index {
    by_name: ByNamespace<Arc<PodView>>,
    by_pool: ByNamespace<Vec<Arc<PodView>>>,
}

impl Index {
    /// Inserts or replaces a pod; returns the view it replaced.
    fn insert(&mut self, view: PodView) -> Option<Arc<PodView>> {
        let old = self.remove(&view.namespace, &view.name);
        let view = Arc::new(view);
        if let Some(pool) = &view.pool {
            self.by_pool
                .entry(view.namespace.clone())
                .or_default()
                .entry(pool.clone())
                .or_default()
                .push(view.clone());
        }
        self.by_name
            .entry(view.namespace.clone())
            .or_default()
            .insert(view.name.clone(), view);
        old
    }

    fn get(&self, namespace: &str, name: &str) -> Option<&Arc<PodView>> {
        self.by_name.get(namespace)?.get(name)
    }

    /// Removes a pod; returns its view.
    fn remove(&mut self, namespace: &str, name: &str) -> Option<Arc<PodView>> {
        let names = self.by_name.get_mut(namespace)?;
        let old = names.remove(name)?;
        if names.is_empty() {
            self.by_name.remove(namespace);
        }
        if let Some(pool) = &old.pool
            && let Some(pools) = self.by_pool.get_mut(namespace)
        {
            if let Some(pods) = pools.get_mut(pool) {
                pods.retain(|p| !Arc::ptr_eq(p, &old));
                if pods.is_empty() {
                    pools.remove(pool);
                }
            }
            if pools.is_empty() {
                self.by_pool.remove(namespace);
            }
        }
        Some(old)
    }

    fn len(&self) -> usize {
        self.by_name.values().map(HashMap::len).sum()
    }
}

/// A pod as a watch event carries it, made into the view the cache keeps.
pub trait IntoView {
    fn into_view(self) -> PodView;
}

impl IntoView for ViewedPod {
    fn into_view(self) -> PodView {
        self.view
    }
}

impl IntoView for &Pod {
    fn into_view(self) -> PodView {
        PodView::from(self)
    }
}

/// The pool (namespace, name) a pod belongs to.
fn pool_of(view: &PodView) -> Option<(String, String)> {
    view.pool
        .as_deref()
        .map(|pool| (view.namespace.to_string(), pool.to_owned()))
}

/// Pools with a pod that appeared, changed or vanished between two indexes (after a relist).
fn differing_pools(before: &Index, after: &Index) -> Vec<(String, String)> {
    let mut pools = Vec::new();
    let mut note = |view: &PodView| pools.extend(pool_of(view));
    for (namespace, names) in &after.by_name {
        for (name, view) in names {
            match before.get(namespace, name) {
                Some(old) if old == view => {}
                Some(old) => {
                    note(old);
                    note(view);
                }
                None => note(view),
            }
        }
    }
    for (namespace, names) in &before.by_name {
        for (name, view) in names {
            if after.get(namespace, name).is_none() {
                note(view);
            }
        }
    }
    pools
}

#[derive(Default)]
struct State {
    live: Index,
    /// Filled during a (re)list and swapped in when it is complete.
    relisting: Option<Index>,
    /// From the watch losing its place (410 Gone) or a relist starting until the relist is
    /// complete: `live` may miss pods created and changes made meanwhile.
    stale: bool,
}

/// Shared between the pod watch, which writes it, and every reconcile, which reads it.
/// Whether the first list is complete is the watch's to say (`run`'s cache sync), not this one's.
#[derive(Clone, Default)]
pub struct PodCache {
    state: Arc<RwLock<State>>,
}

impl PodCache {
    /// Applies one watch event, as a reflector would, and returns the pools (namespace, name)
    /// whose pods now read differently: a pod update that changes nothing classification reads
    /// (an IP, a scheduling timestamp) concerns no pool.
    pub fn apply<P: IntoView>(&self, event: watcher::Event<P>) -> Vec<(String, String)> {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let mut changed = Vec::new();
        match event {
            watcher::Event::Apply(pod) => {
                let view = pod.into_view();
                let unchanged = state
                    .live
                    .get(&view.namespace, &view.name)
                    .is_some_and(|old| **old == view);
                if !unchanged {
                    changed.extend(pool_of(&view));
                    let old = state.live.insert(view);
                    changed.extend(old.as_deref().and_then(pool_of));
                }
            }
            watcher::Event::Delete(pod) => {
                let view = pod.into_view();
                let old = state.live.remove(&view.namespace, &view.name);
                changed.extend(old.as_deref().and_then(pool_of));
            }
            watcher::Event::Init => {
                state.relisting = Some(Index::default());
                state.stale = true;
            }
            watcher::Event::InitApply(pod) => {
                state
                    .relisting
                    .get_or_insert_with(Index::default)
                    .insert(pod.into_view());
            }
            watcher::Event::InitDone => {
                if let Some(listed) = state.relisting.take() {
                    changed = differing_pools(&state.live, &listed);
                    state.live = listed;
                }
                state.stale = false;
            }
        }
        changed.sort();
        changed.dedup();
        changed
    }

    /// The watch lost its place (410 Gone): until its relist is complete, the pods held here
    /// may be gone and others missing.
    pub fn expired(&self) {
        self.state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .stale = true;
    }

    /// Whether the pods held here are known to be out of date: the watch is relisting.
    pub fn is_stale(&self) -> bool {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .stale
    }

    /// The pool's pods.
    pub fn pods_of(&self, namespace: &str, pool: &str) -> Vec<Arc<PodView>> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state
            .live
            .by_pool
            .get(namespace)
            .and_then(|pools| pools.get(pool))
            .cloned()
            .unwrap_or_default()
    }

    /// The pool a pod belongs to, by the name index.
    #[cfg(test)]
    fn pool_of(&self, namespace: &str, pod: &str) -> Option<String> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state
            .live
            .by_name
            .get(namespace)?
            .get(pod)?
            .pool
            .as_deref()
            .map(String::from)
    }

    pub fn len(&self) -> usize {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, pool: Option<&str>, phase: &str) -> Pod {
        let labels = pool.map_or_else(|| json!({}), |p| json!({"workerpool.dev/pool": p}));
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"), "labels": labels},
            "status": {"phase": phase}
        }))
        .expect("pod")
    }

    fn names(pods: &[Arc<PodView>]) -> Vec<String> {
        let mut names: Vec<String> = pods.iter().map(|p| p.name.to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn pods_are_found_by_pool_and_by_name() {
        let cache = PodCache::default();
        cache.apply(watcher::Event::Apply(&pod("api-1", Some("api"), "Running")));
        cache.apply(watcher::Event::Apply(&pod("api-2", Some("api"), "Pending")));
        cache.apply(watcher::Event::Apply(&pod(
            "jobs-1",
            Some("jobs"),
            "Running",
        )));
        assert_eq!(names(&cache.pods_of("shop", "api")), ["api-1", "api-2"]);
        assert_eq!(names(&cache.pods_of("shop", "jobs")), ["jobs-1"]);
        assert!(cache.pods_of("other", "api").is_empty());
        assert_eq!(cache.pool_of("shop", "jobs-1").as_deref(), Some("jobs"));
        assert_eq!(cache.pool_of("shop", "nope"), None);
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn the_pods_are_stale_from_an_expired_watch_until_its_relist_is_complete() {
        let cache = PodCache::default();
        cache.apply(watcher::Event::Apply(&pod("api-1", Some("api"), "Running")));
        assert!(!cache.is_stale());
        cache.expired();
        assert!(cache.is_stale());
        cache.apply(watcher::Event::<&Pod>::Init);
        cache.apply(watcher::Event::InitApply(&pod(
            "api-2",
            Some("api"),
            "Running",
        )));
        assert!(cache.is_stale(), "until the relist is complete");
        assert_eq!(names(&cache.pods_of("shop", "api")), ["api-1"]);
        cache.apply(watcher::Event::<&Pod>::InitDone);
        assert!(!cache.is_stale());
        assert_eq!(names(&cache.pods_of("shop", "api")), ["api-2"]);
    }

    #[test]
    fn an_update_replaces_the_pod_and_follows_a_changed_label() {
        let cache = PodCache::default();
        cache.apply(watcher::Event::Apply(&pod("p", Some("api"), "Pending")));
        cache.apply(watcher::Event::Apply(&pod("p", Some("api"), "Running")));
        let pods = cache.pods_of("shop", "api");
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].phase.as_deref(), Some("Running"));

        cache.apply(watcher::Event::Apply(&pod("p", Some("jobs"), "Running")));
        assert!(cache.pods_of("shop", "api").is_empty());
        assert_eq!(names(&cache.pods_of("shop", "jobs")), ["p"]);

        cache.apply(watcher::Event::Apply(&pod("p", None, "Running")));
        assert!(cache.pods_of("shop", "jobs").is_empty());
        assert_eq!(cache.pool_of("shop", "p"), None);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_deleted_pod_leaves_both_indexes() {
        let cache = PodCache::default();
        cache.apply(watcher::Event::Apply(&pod("p", Some("api"), "Running")));
        cache.apply(watcher::Event::Delete(&pod("p", Some("api"), "Running")));
        assert!(cache.pods_of("shop", "api").is_empty());
        assert_eq!(cache.pool_of("shop", "p"), None);
        assert!(cache.is_empty());
    }

    fn pools(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(ns, p)| (ns.to_string(), p.to_string()))
            .collect()
    }

    #[test]
    fn only_a_pod_that_reads_differently_concerns_its_pool() {
        let cache = PodCache::default();
        let changed = cache.apply(watcher::Event::Apply(&pod("p", Some("api"), "Pending")));
        assert_eq!(changed, pools(&[("shop", "api")]));
        let mut same = pod("p", Some("api"), "Pending");
        same.metadata.resource_version = Some("7".into());
        if let Some(status) = same.status.as_mut() {
            status.pod_ip = Some("10.0.0.7".into());
        }
        assert!(
            cache.apply(watcher::Event::Apply(&same)).is_empty(),
            "an IP is not read by classification"
        );
        let changed = cache.apply(watcher::Event::Apply(&pod("p", Some("api"), "Running")));
        assert_eq!(changed, pools(&[("shop", "api")]));
        let moved = cache.apply(watcher::Event::Apply(&pod("p", Some("jobs"), "Running")));
        assert_eq!(moved, pools(&[("shop", "api"), ("shop", "jobs")]));
        let deleted = cache.apply(watcher::Event::Delete(&pod("p", Some("jobs"), "Running")));
        assert_eq!(deleted, pools(&[("shop", "jobs")]));
        assert!(
            cache
                .apply(watcher::Event::Delete(&pod("p", Some("jobs"), "Running")))
                .is_empty()
        );
    }

    #[test]
    fn a_relist_concerns_the_pools_whose_pods_changed_meanwhile() {
        let cache = PodCache::default();
        cache.apply(watcher::Event::Apply(&pod("same", Some("a"), "Running")));
        cache.apply(watcher::Event::Apply(&pod("changed", Some("b"), "Pending")));
        cache.apply(watcher::Event::Apply(&pod("gone", Some("c"), "Running")));
        cache.apply(watcher::Event::<&Pod>::Init);
        for listed in [
            pod("same", Some("a"), "Running"),
            pod("changed", Some("b"), "Running"),
            pod("new", Some("d"), "Running"),
        ] {
            assert!(cache.apply(watcher::Event::InitApply(&listed)).is_empty());
        }
        let changed = cache.apply(watcher::Event::<&Pod>::InitDone);
        assert_eq!(
            changed,
            pools(&[("shop", "b"), ("shop", "c"), ("shop", "d")])
        );
    }

    #[test]
    fn a_relist_replaces_everything_when_done() {
        let cache = PodCache::default();
        cache.apply(watcher::Event::Apply(&pod("gone", Some("api"), "Running")));
        cache.apply(watcher::Event::<&Pod>::Init);
        cache.apply(watcher::Event::InitApply(&pod(
            "new",
            Some("api"),
            "Running",
        )));
        // Until the list is complete, readers see the old pods.
        assert_eq!(names(&cache.pods_of("shop", "api")), ["gone"]);
        cache.apply(watcher::Event::<&Pod>::InitDone);
        assert_eq!(names(&cache.pods_of("shop", "api")), ["new"]);
        assert_eq!(cache.len(), 1);
    }
}
