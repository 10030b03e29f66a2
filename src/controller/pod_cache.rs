//! The controller's pod cache: a [`PodView`] of every pool pod, indexed by pool, so a reconcile
//! reads its own pool's pods without scanning every pod in the cluster.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::podview::PodView;

/// namespace → key → value.
type ByNamespace<V> = HashMap<String, HashMap<String, V>>;

#[derive(Default)]
struct Index {
    by_name: ByNamespace<Arc<PodView>>,
    by_pool: ByNamespace<Vec<Arc<PodView>>>,
}

impl Index {
    fn insert(&mut self, view: PodView) {
        self.remove(&view.namespace, &view.name);
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
    }

    fn remove(&mut self, namespace: &str, name: &str) {
        let Some(names) = self.by_name.get_mut(namespace) else {
            return;
        };
        let Some(old) = names.remove(name) else {
            return;
        };
        if names.is_empty() {
            self.by_name.remove(namespace);
        }
        let Some(pool) = &old.pool else {
            return;
        };
        let Some(pools) = self.by_pool.get_mut(namespace) else {
            return;
        };
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

    fn len(&self) -> usize {
        self.by_name.values().map(HashMap::len).sum()
    }
}

#[derive(Default)]
struct State {
    live: Index,
    /// Filled during a (re)list and swapped in when it is complete.
    relisting: Option<Index>,
}

/// Shared between the pod watch, which writes it, and every reconcile, which reads it.
#[derive(Clone)]
pub struct PodCache {
    state: Arc<RwLock<State>>,
    ready: Arc<watch::Sender<bool>>,
}

impl Default for PodCache {
    fn default() -> Self {
        PodCache {
            state: Arc::default(),
            ready: Arc::new(watch::channel(false).0),
        }
    }
}

impl PodCache {
    /// Applies one watch event, as a reflector would.
    pub fn apply(&self, event: &watcher::Event<Pod>) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        match event {
            watcher::Event::Apply(pod) => state.live.insert(PodView::from(pod)),
            watcher::Event::Delete(pod) => {
                let view = PodView::from(pod);
                state.live.remove(&view.namespace, &view.name);
            }
            watcher::Event::Init => state.relisting = Some(Index::default()),
            watcher::Event::InitApply(pod) => state
                .relisting
                .get_or_insert_with(Index::default)
                .insert(PodView::from(pod)),
            watcher::Event::InitDone => {
                if let Some(listed) = state.relisting.take() {
                    state.live = listed;
                }
                drop(state);
                self.ready.send_replace(true);
            }
        }
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

    /// The pool a pod belongs to.
    pub fn pool_of(&self, namespace: &str, pod: &str) -> Option<String> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state.live.by_name.get(namespace)?.get(pod)?.pool.clone()
    }

    pub fn len(&self) -> usize {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves once the first list is complete.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = ready.wait_for(|ready| *ready).await;
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
        let mut names: Vec<String> = pods.iter().map(|p| p.name.clone()).collect();
        names.sort();
        names
    }

    #[test]
    fn pods_are_found_by_pool_and_by_name() {
        let cache = PodCache::default();
        cache.apply(&watcher::Event::Apply(pod("api-1", Some("api"), "Running")));
        cache.apply(&watcher::Event::Apply(pod("api-2", Some("api"), "Pending")));
        cache.apply(&watcher::Event::Apply(pod(
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
    fn an_update_replaces_the_pod_and_follows_a_changed_label() {
        let cache = PodCache::default();
        cache.apply(&watcher::Event::Apply(pod("p", Some("api"), "Pending")));
        cache.apply(&watcher::Event::Apply(pod("p", Some("api"), "Running")));
        let pods = cache.pods_of("shop", "api");
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].phase.as_deref(), Some("Running"));

        cache.apply(&watcher::Event::Apply(pod("p", Some("jobs"), "Running")));
        assert!(cache.pods_of("shop", "api").is_empty());
        assert_eq!(names(&cache.pods_of("shop", "jobs")), ["p"]);

        cache.apply(&watcher::Event::Apply(pod("p", None, "Running")));
        assert!(cache.pods_of("shop", "jobs").is_empty());
        assert_eq!(cache.pool_of("shop", "p"), None);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_deleted_pod_leaves_both_indexes() {
        let cache = PodCache::default();
        cache.apply(&watcher::Event::Apply(pod("p", Some("api"), "Running")));
        cache.apply(&watcher::Event::Delete(pod("p", Some("api"), "Running")));
        assert!(cache.pods_of("shop", "api").is_empty());
        assert_eq!(cache.pool_of("shop", "p"), None);
        assert!(cache.is_empty());
    }

    #[tokio::test]
    async fn a_relist_replaces_everything_when_done_and_marks_the_cache_ready() {
        let cache = PodCache::default();
        cache.apply(&watcher::Event::Apply(pod("gone", Some("api"), "Running")));
        cache.apply(&watcher::Event::Init);
        cache.apply(&watcher::Event::InitApply(pod(
            "new",
            Some("api"),
            "Running",
        )));
        // Until the list is complete, readers see the old pods.
        assert_eq!(names(&cache.pods_of("shop", "api")), ["gone"]);
        let waiting = tokio::spawn({
            let cache = cache.clone();
            async move { cache.wait_until_ready().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        cache.apply(&watcher::Event::InitDone);
        waiting.await.expect("ready");
        assert_eq!(names(&cache.pods_of("shop", "api")), ["new"]);
        assert_eq!(cache.len(), 1);
    }
}
