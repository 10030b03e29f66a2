//! The kubelet Events that tell probe kills apart, kept per pool in a small bounded buffer
//! instead of a cache of every Event in the namespace.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Event;

use crate::classify::KubeletEvent;

/// Event reasons the controller watches (one field-selected watch each).
pub const WATCHED_REASONS: [&str; 2] = ["Killing", "Unhealthy"];

/// Events remembered per pool; older ones are dropped first.
pub const PER_POOL: usize = 64;

/// `(namespace, pod name)` of the pod an Event is about, and the Event reduced for classification.
pub fn from_event(event: &Event) -> Option<(String, KubeletEvent)> {
    let object = &event.involved_object;
    if object.kind.as_deref() != Some("Pod") {
        return None;
    }
    let namespace = object
        .namespace
        .clone()
        .or_else(|| event.metadata.namespace.clone())?;
    Some((
        namespace,
        KubeletEvent {
            pod: object.name.clone()?,
            container: object
                .field_path
                .as_deref()
                .and_then(KubeletEvent::container_from_field_path),
            reason: event.reason.clone().unwrap_or_default(),
            message: event.message.clone().unwrap_or_default(),
        },
    ))
}

#[derive(Default)]
pub struct KubeletEvents {
    by_pool: Mutex<HashMap<(String, String), VecDeque<KubeletEvent>>>,
}

impl KubeletEvents {
    pub fn push(&self, namespace: &str, pool: &str, event: KubeletEvent) {
        let Ok(mut by_pool) = self.by_pool.lock() else {
            return;
        };
        let buffer = by_pool
            .entry((namespace.to_string(), pool.to_string()))
            .or_default();
        if buffer.contains(&event) {
            return;
        }
        if buffer.len() >= PER_POOL {
            buffer.pop_front();
        }
        buffer.push_back(event);
    }

    pub fn forget(&self, namespace: &str, pool: &str) {
        if let Ok(mut by_pool) = self.by_pool.lock() {
            by_pool.remove(&(namespace.to_string(), pool.to_string()));
        }
    }

    /// The pool's Events about pods that still exist; the others are forgotten.
    pub fn for_pool(&self, namespace: &str, pool: &str, live: &HashSet<&str>) -> Vec<KubeletEvent> {
        let Ok(mut by_pool) = self.by_pool.lock() else {
            return Vec::new();
        };
        let key = (namespace.to_string(), pool.to_string());
        let Some(buffer) = by_pool.get_mut(&key) else {
            return Vec::new();
        };
        buffer.retain(|e| live.contains(e.pod.as_str()));
        if buffer.is_empty() {
            by_pool.remove(&key);
            return Vec::new();
        }
        buffer.iter().cloned().collect()
    }

    /// Pools with buffered Events (for tests and sizing).
    pub fn pools(&self) -> usize {
        self.by_pool.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn killing(pod: &str, n: usize) -> KubeletEvent {
        KubeletEvent {
            pod: pod.into(),
            container: Some("app".into()),
            reason: "Killing".into(),
            message: format!("Container app failed startup probe, will be restarted ({n})"),
        }
    }

    #[test]
    fn bounded_deduplicated_and_pruned() {
        let events = KubeletEvents::default();
        for n in 0..100 {
            events.push("shop", "api", killing("api-1", n));
            events.push("shop", "api", killing("api-1", n));
        }
        events.push("shop", "api", killing("api-2", 0));
        let live: HashSet<&str> = ["api-1", "api-2"].into();
        let all = events.for_pool("shop", "api", &live);
        assert_eq!(all.len(), PER_POOL);
        assert_eq!(all.last(), Some(&killing("api-2", 0)));
        let live: HashSet<&str> = ["api-2"].into();
        assert_eq!(events.for_pool("shop", "api", &live).len(), 1);
        assert!(events.for_pool("shop", "api", &HashSet::new()).is_empty());
        assert_eq!(events.pools(), 0);
    }

    #[test]
    fn only_pod_events_convert() {
        let event: Event = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "api-1.17", "namespace": "shop"},
            "involvedObject": {"kind": "Pod", "name": "api-1", "namespace": "shop", "fieldPath": "spec.containers{app}"},
            "reason": "Killing",
            "message": "Container app failed liveness probe, will be restarted",
            "type": "Normal"
        }))
        .expect("event");
        let (ns, converted) = from_event(&event).expect("a pod event");
        assert_eq!(ns, "shop");
        assert_eq!(converted.container.as_deref(), Some("app"));
        let mut node = event;
        node.involved_object.kind = Some("Node".into());
        assert_eq!(from_event(&node), None);
    }
}
