//! Publishing the pool's Events. Repeats of an abort fold into one series per pool, reason and
//! pod, named after them: a restarted operator, or the next leader, counts on in the series its
//! predecessor began. kube's `Recorder` names each new Event at random and keeps its series in
//! memory only, so every restart would begin new ones; it still publishes the Events that are
//! each their own.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};

use super::pools::{Known, Pools};
use crate::decide::Fold;
use crate::pool::drift::short_hash;

/// Publishes Events; the series each pool's Events fold into are kept in its record.
pub struct Recorders {
    client: Client,
    reporter: Reporter,
}

impl Recorders {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Recorders { client, reporter }
    }

    /// Publishes an Event about `pool`, folded into its series when `fold` asks.
    pub async fn publish(
        &self,
        pools: &Pools,
        event: &Event,
        pool: &ObjectReference,
        fold: Fold,
    ) -> Result<(), kube::Error> {
        if fold == Fold::Never {
            let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
            return recorder.publish(event, pool).await;
        }
        let namespace = pool.namespace.clone().unwrap_or_default();
        let uid = pool.uid.as_deref().unwrap_or_default();
        let name = series_name(event, pool);
        let now = Timestamp::now();
        let known = pools.series(uid, &name, now);
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        let count = match known {
            Some(known) => match bump(&api, &name, known.count + 1, now).await {
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    self.begin(&api, event, pool, &name, now).await?
                }
                other => other?,
            },
            None => self.begin(&api, event, pool, &name, now).await?,
        };
        pools.bumped(uid, name, Known { count, at: now });
        Ok(())
    }

    /// Creates the series' first Event, or, when an earlier process already did, bumps that one.
    async fn begin(
        &self,
        api: &Api<K8sEvent>,
        event: &Event,
        pool: &ObjectReference,
        name: &str,
        now: Timestamp,
    ) -> Result<i32, kube::Error> {
        let first = first_event(event, pool, &self.reporter, name, now);
        match api.create(&PostParams::default(), &first).await {
            Ok(_) => Ok(1),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let existing = api.get(name).await?;
                let count = existing.series.map_or(1, |s| s.count);
                bump(api, name, count + 1, now).await
            }
            Err(error) => Err(error),
        }
    }
}

/// Sets the series' count; the note stays the first one's.
async fn bump(
    api: &Api<K8sEvent>,
    name: &str,
    count: i32,
    now: Timestamp,
) -> Result<i32, kube::Error> {
    let series = EventSeries {
        count,
        last_observed_time: MicroTime(now),
    };
    let patch = serde_json::json!({ "series": series });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(count)
}

/// The series' Event name: the pool's name, then a hash of what makes the series one.
pub fn series_name(event: &Event, pool: &ObjectReference) -> String {
    let related = event.secondary.as_ref().map(|r| {
        (
            r.kind.as_deref().unwrap_or_default(),
            r.name.as_deref().unwrap_or_default(),
        )
    });
    let identity = (
        pool.uid.as_deref().unwrap_or_default(),
        match event.type_ {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        },
        event.reason.as_str(),
        event.action.as_str(),
        related,
    );
    format!(
        "{}.{}",
        pool.name.as_deref().unwrap_or("workerpool"),
        short_hash(&identity, 16)
    )
}

fn first_event(
    event: &Event,
    pool: &ObjectReference,
    reporter: &Reporter,
    name: &str,
    now: Timestamp,
) -> K8sEvent {
    K8sEvent {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: pool.namespace.clone(),
            ..ObjectMeta::default()
        },
        action: Some(event.action.clone()),
        reason: Some(event.reason.clone()),
        note: event.note.clone(),
        event_time: Some(MicroTime(now)),
        regarding: Some(pool.clone()),
        related: event.secondary.clone(),
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(
            reporter
                .instance
                .clone()
                .unwrap_or_else(|| reporter.controller.clone()),
        ),
        type_: Some(
            match event.type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .to_string(),
        ),
        ..K8sEvent::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn abort(pod: &str, reason: &str) -> Event {
        Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(format!("pod {pod} exited")),
            action: "ObserveWorker".into(),
            secondary: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: Some(pod.into()),
                ..ObjectReference::default()
            }),
        }
    }

    #[test]
    fn one_series_name_per_pool_reason_and_pod_whatever_the_note() {
        let pool = ObjectReference {
            name: Some("api".into()),
            namespace: Some("shop".into()),
            uid: Some("u1".into()),
            ..ObjectReference::default()
        };
        let name = series_name(&abort("api-a", "BootFailed"), &pool);
        assert!(
            name.starts_with("api.") && name.len() == "api.".len() + 16,
            "{name}"
        );
        let mut other_note = abort("api-a", "BootFailed");
        other_note.note = Some("another exit".into());
        assert_eq!(series_name(&other_note, &pool), name);
        assert_ne!(series_name(&abort("api-b", "BootFailed"), &pool), name);
        assert_ne!(series_name(&abort("api-a", "OOMKilled"), &pool), name);
        let recreated = ObjectReference {
            uid: Some("u2".into()),
            ..pool.clone()
        };
        assert_ne!(
            series_name(&abort("api-a", "BootFailed"), &recreated),
            name,
            "a pool deleted and created again begins new series"
        );
    }
}
