//! The controller's pod cache: a [`PodView`] of every pool pod, indexed by pool, so a reconcile
//! reads its own pool's pods without scanning every pod in the cluster.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use futures::Stream;
use futures::stream::{Fuse, StreamExt};
use tokio_util::time::{DelayQueue, delay_queue};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;

use crate::aborts::detect;
use crate::aborts::podview::PodView;
use crate::controller::Clock;
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

/// What one pod watch event asks of the pools.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Moves {
    /// Pools (namespace, name) to look at now.
    pub look: Vec<(String, String)>,
    /// Pods that started quietly and are booting: their pool is owed a look when the first log
    /// sample falls due, if they still boot then.
    pub booting: Vec<Booting>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Booting {
    pub namespace: Box<str>,
    pub pod: Box<str>,
    pub due: Timestamp,
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
    /// Applies one watch event, as a reflector would, and says which pools (namespace, name) to
    /// look at: those whose pods now read differently. A pod update that changes nothing
    /// classification reads (an IP, a scheduling timestamp) concerns no pool, nor does a quiet
    /// step of a pod's start or shutdown ([`detect::is_quiet_move`]) or the removal of a pod that
    /// was shutting down; a pod left booting is named with the time its first log sample falls
    /// due.
    pub fn apply<P: IntoView>(&self, event: watcher::Event<P>) -> Moves {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let mut moves = Moves::default();
        let changed = &mut moves.look;
        match event {
            watcher::Event::Apply(pod) => {
                let view = pod.into_view();
                let old = state.live.get(&view.namespace, &view.name);
                if old.is_none_or(|old| **old != view) {
                    if detect::is_quiet_move(old.map(|old| &**old), &view) {
                        if let Some(due) = detect::first_sample_due(&view) {
                            moves.booting.push(Booting {
                                namespace: view.namespace.clone(),
                                pod: view.name.clone(),
                                due,
                            });
                        }
                        state.live.insert(view);
                    } else {
                        changed.extend(pool_of(&view));
                        let old = state.live.insert(view);
                        changed.extend(old.as_deref().and_then(pool_of));
                    }
                }
            }
            watcher::Event::Delete(pod) => {
                let view = pod.into_view();
                let old = state.live.remove(&view.namespace, &view.name);
                let told = old.as_deref().filter(|old| !detect::is_quiet_removal(old));
                changed.extend(told.and_then(pool_of));
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
                    *changed = differing_pools(&state.live, &listed);
                    state.live = listed;
                }
                state.stale = false;
            }
        }
        changed.sort();
        changed.dedup();
        moves
    }

    /// The pool of a pod that still has a container booting.
    pub fn booting_pool(&self, namespace: &str, pod: &str) -> Option<(String, String)> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let view = state.live.get(namespace, pod)?;
        if detect::unhealthy_containers(view).is_empty() {
            return None;
        }
        pool_of(view)
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

/// The pools to look at, from the pod watch's `moves`: at once for the moves a look reads, and
/// for a pod that started quietly, when its first log sample falls due if it still boots then.
pub fn looks<S>(moves: S, cache: PodCache, clock: Clock) -> Looks<S>
where
    S: Stream<Item = Moves>,
{
    Looks {
        moves: moves.fuse(),
        now: VecDeque::new(),
        owed: DelayQueue::new(),
        owing: HashMap::new(),
        cache,
        clock,
    }
}

/// See [`looks`].
pub struct Looks<S> {
    moves: Fuse<S>,
    /// Pools to yield before anything else.
    now: VecDeque<(String, String)>,
    /// The looks owed to booting pods, by pod (namespace, name).
    owed: DelayQueue<(Box<str>, Box<str>)>,
    /// Each pod's place in `owed`, and when it falls due: one owed look per pod.
    owing: HashMap<(Box<str>, Box<str>), (delay_queue::Key, Timestamp)>,
    cache: PodCache,
    clock: Clock,
}

impl<S> Looks<S> {
    fn owe(&mut self, booting: Booting) {
        let wait = std::time::Duration::try_from(booting.due.duration_since((self.clock)()))
            .unwrap_or_default();
        let pod = (booting.namespace, booting.pod);
        match self.owing.get_mut(&pod) {
            Some((_, due)) if *due == booting.due => {}
            Some((key, due)) => {
                self.owed.reset(key, wait);
                *due = booting.due;
            }
            None => {
                let key = self.owed.insert(pod.clone(), wait);
                self.owing.insert(pod, (key, booting.due));
            }
        }
    }
}

impl<S> Stream for Looks<S>
where
    S: Stream<Item = Moves> + Unpin,
{
    type Item = (String, String);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(pool) = this.now.pop_front() {
                return Poll::Ready(Some(pool));
            }
            if let Poll::Ready(Some(expired)) = this.owed.poll_expired(cx) {
                let pod = expired.into_inner();
                this.owing.remove(&pod);
                this.now.extend(this.cache.booting_pool(&pod.0, &pod.1));
                continue;
            }
            match this.moves.poll_next_unpin(cx) {
                Poll::Ready(Some(moves)) => {
                    this.now.extend(moves.look);
                    for booting in moves.booting {
                        this.owe(booting);
                    }
                }
                // The controller is shutting down: owed looks no longer matter.
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
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
        let look = |event: watcher::Event<&Pod>| cache.apply(event).look;
        assert!(
            look(watcher::Event::Apply(&pod("p", Some("api"), "Pending"))).is_empty(),
            "a new pod is a quiet step of its start"
        );
        let mut same = pod("p", Some("api"), "Failed");
        assert_eq!(
            look(watcher::Event::Apply(&same)),
            pools(&[("shop", "api")])
        );
        same.metadata.resource_version = Some("7".into());
        if let Some(status) = same.status.as_mut() {
            status.pod_ip = Some("10.0.0.7".into());
        }
        assert!(
            look(watcher::Event::Apply(&same)).is_empty(),
            "an IP is not read by classification"
        );
        let moved = look(watcher::Event::Apply(&pod("p", Some("jobs"), "Failed")));
        assert_eq!(moved, pools(&[("shop", "api"), ("shop", "jobs")]));
        let deleted = look(watcher::Event::Delete(&pod("p", Some("jobs"), "Failed")));
        assert_eq!(deleted, pools(&[("shop", "jobs")]));
        assert!(look(watcher::Event::Delete(&pod("p", Some("jobs"), "Failed"))).is_empty());
    }

    /// A pod of pool `api` whose one container runs since `started`, ready or not.
    fn running(name: &str, started: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                         "labels": {"workerpool.dev/pool": "api"}},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "app", "image": "x", "imageID": "", "ready": ready, "restartCount": 0,
                 "state": {"running": {"startedAt": started}}}]}
        }))
        .expect("pod")
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_that_starts_quietly_is_looked_at_if_it_still_boots_when_first_sampled() {
        let epoch: Timestamp = "2026-11-22T10:00:00Z".parse().expect("time");
        let start = tokio::time::Instant::now();
        let clock: Clock = Arc::new(move || {
            epoch + jiff::SignedDuration::try_from(start.elapsed()).unwrap_or_default()
        });
        let cache = PodCache::default();
        let (send, receive) = futures::channel::mpsc::unbounded();
        let mut pools_looked = looks(receive, cache.clone(), clock);
        let apply = |pod: &Pod| {
            send.unbounded_send(cache.apply(watcher::Event::Apply(pod)))
                .expect("the stream holds the receiver");
        };
        let ready_now = |stream: &mut Looks<_>| {
            let mut out = Vec::new();
            while let Some(Some(pool)) = futures::FutureExt::now_or_never(stream.next()) {
                out.push(pool);
            }
            out
        };

        apply(&pod("slow", Some("api"), "Pending"));
        apply(&running("slow", "2026-11-22T10:00:00Z", false));
        apply(&pod("quick", Some("api"), "Pending"));
        apply(&running("quick", "2026-11-22T10:00:00Z", false));
        assert!(ready_now(&mut pools_looked).is_empty(), "quiet steps");
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        apply(&running("quick", "2026-11-22T10:00:00Z", true));
        assert_eq!(
            ready_now(&mut pools_looked),
            pools(&[("shop", "api")]),
            "ready is read at once"
        );
        tokio::time::sleep(std::time::Duration::from_secs(24)).await;
        assert!(ready_now(&mut pools_looked).is_empty());
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert_eq!(
            ready_now(&mut pools_looked),
            pools(&[("shop", "api")]),
            "one look for the pod still booting when its log is first sampled, none for the other"
        );
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        assert!(ready_now(&mut pools_looked).is_empty());
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
            assert_eq!(
                cache.apply(watcher::Event::InitApply(&listed)),
                Moves::default()
            );
        }
        let changed = cache.apply(watcher::Event::<&Pod>::InitDone).look;
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
