//! The kubelet Events that tell a probe kill from a plain exit, read for one pod when one of its
//! terminations needs them, behind a trait so tests can supply them.
//!
//! Events are not watched: the API server keeps no watch cache for Events, so every Event watch
//! is served straight from etcd and makes the server decode every Event written in the cluster,
//! and every relist reads them all. A namespaced list by pod name when a container ended costs
//! nothing while no worker dies.

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams};

use crate::aborts::classify::KubeletEvent;

/// The Event reasons that are evidence: the kubelet's `Killing` of a container after probe
/// failures, and the `Unhealthy` probe failures before it.
pub const EVIDENCE_REASONS: [&str; 2] = ["Killing", "Unhealthy"];

/// The Events kept per pod read; a pod's Events are few, a crash loop's are folded into series.
pub const PER_POD: usize = 64;

pub trait EventReader: Send + Sync {
    /// The kubelet's evidence Events about one pod.
    fn for_pod<'a>(
        &'a self,
        namespace: &'a str,
        pod: &'a str,
    ) -> BoxFuture<'a, Result<Vec<KubeletEvent>, kube::Error>>;
}

/// Lists a pod's Events from the API server.
pub struct ApiEvents(pub Client);

impl EventReader for ApiEvents {
    fn for_pod<'a>(
        &'a self,
        namespace: &'a str,
        pod: &'a str,
    ) -> BoxFuture<'a, Result<Vec<KubeletEvent>, kube::Error>> {
        Box::pin(async move {
            let api: Api<Event> = Api::namespaced(self.0.clone(), namespace);
            let params = ListParams::default().fields(&format!(
                "involvedObject.kind=Pod,involvedObject.name={pod}"
            ));
            let listed = api.list(&params).await?;
            Ok(evidence(listed.items.iter()))
        })
    }
}

/// The evidence among a pod's Events, the newest last, at most [`PER_POD`].
pub fn evidence<'a>(events: impl Iterator<Item = &'a Event>) -> Vec<KubeletEvent> {
    let mut found: Vec<KubeletEvent> = events
        .filter(|e| {
            e.reason
                .as_deref()
                .is_some_and(|r| EVIDENCE_REASONS.contains(&r))
        })
        .filter_map(from_event)
        .collect();
    found.dedup();
    let excess = found.len().saturating_sub(PER_POD);
    found.drain(..excess);
    found
}

/// An Event about a pod, reduced for classification.
pub fn from_event(event: &Event) -> Option<KubeletEvent> {
    let object = &event.involved_object;
    if object.kind.as_deref() != Some("Pod") {
        return None;
    }
    Some(KubeletEvent {
        pod: object.name.clone()?,
        container: object
            .field_path
            .as_deref()
            .and_then(KubeletEvent::container_from_field_path),
        reason: event.reason.clone().unwrap_or_default(),
        message: event.message.clone().unwrap_or_default(),
        seen: seen(event),
    })
}

/// When the Event was first and last reported.
fn seen(event: &Event) -> Option<(jiff::Timestamp, jiff::Timestamp)> {
    let first = event
        .first_timestamp
        .as_ref()
        .map(|t| t.0)
        .or(event.event_time.as_ref().map(|t| t.0))?;
    let last = event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| t.0)
        .or(event.last_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(first);
    Some((first, last.max(first)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(reason: &str, n: usize) -> Event {
        serde_json::from_value(json!({
            "metadata": {"name": format!("api-1.{n}"), "namespace": "shop"},
            "involvedObject": {"kind": "Pod", "name": "api-1", "namespace": "shop", "fieldPath": "spec.containers{app}"},
            "reason": reason,
            "message": format!("Container app failed liveness probe, will be restarted ({n})"),
            "type": "Normal"
        }))
        .expect("event")
    }

    #[test]
    fn only_evidence_is_kept_bounded_newest_last() {
        let events: Vec<Event> = (0..200)
            .map(|n| event(if n % 2 == 0 { "Killing" } else { "Pulled" }, n))
            .chain([event("Unhealthy", 200)])
            .collect();
        let found = evidence(events.iter());
        assert_eq!(found.len(), PER_POD);
        assert_eq!(found.last().map(|e| e.reason.as_str()), Some("Unhealthy"));
        assert!(found.iter().all(|e| e.reason != "Pulled"));
    }

    #[test]
    fn only_pod_events_convert() {
        let event = event("Killing", 17);
        let converted = from_event(&event).expect("a pod event");
        assert_eq!(converted.pod, "api-1");
        assert_eq!(converted.container.as_deref(), Some("app"));
        let mut node = event;
        node.involved_object.kind = Some("Node".into());
        assert_eq!(from_event(&node), None);
    }
}
