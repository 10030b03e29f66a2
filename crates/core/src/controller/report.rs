//! Writing what a reconcile found: the status (server-side, its own field manager), Events and
//! abort metrics.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType};
use serde_json::json;

use super::apply::Applied;
use super::managed_fields;
use super::recorders::Fold;
use super::{Context, Error, STATUS_MANAGER};
use crate::api::{AbortRecord, WorkerPool, WorkerPoolStatus};
use crate::status::{self, RampChange};

/// One Warning Event and one metric increment per newly counted abort. The note leaves out
/// restart counts and times so the recorder folds a crash loop's repeats into one Event series.
pub(super) async fn report_aborts(ctx: &Context, pool: &WorkerPool, fresh: &[AbortRecord]) {
    let reference = pool.object_ref(&());
    let namespace = pool.metadata.namespace.as_deref().unwrap_or_default();
    let name = pool.metadata.name.as_deref().unwrap_or_default();
    for abort in fresh {
        ctx.metrics.count_abort(namespace, name, &abort.reason);
        let exit = match (abort.exit_code, &abort.signal) {
            (Some(code), Some(signal)) => format!(" exited {code} ({signal})"),
            (Some(code), None) => format!(" exited {code}"),
            _ => String::new(),
        };
        let container = if abort.container.is_empty() {
            String::new()
        } else {
            format!(" container {}", abort.container)
        };
        let detail = abort
            .hint
            .as_deref()
            .or(abort.message.as_deref())
            .map(|h| format!(": {h}"))
            .unwrap_or_default();
        let inferred = if abort.inferred {
            format!(" run {} (inferred)", abort.restart_count)
        } else {
            String::new()
        };
        let note = format!("pod {}{container}{inferred}{exit}{detail}", abort.pod);
        let event = Event {
            type_: EventType::Warning,
            reason: abort.reason.clone(),
            note: Some(truncate(note, 1000)),
            // Runs counted from the restart count fold into a series of their own, whose note
            // says so.
            action: if abort.inferred {
                "InferWorkerExit"
            } else {
                "ObserveWorker"
            }
            .into(),
            // One series per pod and reason: `kubectl describe wp` names each pod.
            secondary: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                namespace: Some(namespace.to_string()),
                name: Some(abort.pod.clone()),
                ..Default::default()
            }),
        };
        if let Err(error) = ctx
            .recorders
            .publish(&event, &reference, Fold::Series)
            .await
        {
            event_failed(&abort.reason, &error);
        }
    }
}

/// Applies the whole status server-side with its own field manager, so the server's copy is
/// what was computed whatever the cache held; returns the version the write produced.
pub(super) async fn write_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    new: &WorkerPoolStatus,
) -> Result<Option<String>, Error> {
    let status_error = |source| Error::Status {
        name: name.to_string(),
        source,
    };
    // Only the metadata of the answer is read: its version and who owns which field.
    let api: Api<PartialObjectMeta<WorkerPool>> = Api::namespaced(ctx.client.clone(), namespace);
    let body = json!({
        "apiVersion": WorkerPool::api_version(&()),
        "kind": WorkerPool::kind(&()),
        "metadata": {"name": name},
        "status": new,
    });
    let params = PatchParams::apply(STATUS_MANAGER).force();
    let written = api
        .patch_status(name, &params, &Patch::Apply(&body))
        .await
        .map_err(status_error)?;
    let entries = written
        .metadata
        .managed_fields
        .as_deref()
        .unwrap_or_default();
    let Some(upgraded) = managed_fields::upgrade_status_manager(entries, STATUS_MANAGER) else {
        return Ok(written.metadata.resource_version);
    };
    // Status fields an earlier version wrote with merge patches: handed to the apply manager
    // (through the main resource: the server ignores managedFields sent to a subresource) and
    // applied again, which removes those no longer computed.
    let handover = json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": written.metadata.resource_version},
        {"op": "replace", "path": "/metadata/managedFields", "value": upgraded},
    ]);
    let patch: json_patch::Patch = serde_json::from_value(handover).map_err(Error::Serialize)?;
    api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .map_err(status_error)?;
    tracing::info!(
        pool = name,
        "status fields of an earlier version handed to {STATUS_MANAGER}"
    );
    let written = api
        .patch_status(name, &params, &Patch::Apply(&body))
        .await
        .map_err(status_error)?;
    Ok(written.metadata.resource_version)
}

/// Publishes the Events for what changed between two statuses.
pub(super) async fn announce(
    ctx: &Context,
    pool: &WorkerPool,
    old: Option<&WorkerPoolStatus>,
    new: &WorkerPoolStatus,
    applied: Option<&Applied>,
) {
    let reference = pool.object_ref(&());
    let ramp = applied.and_then(|a| {
        a.ramp_target.map(|target| RampChange {
            previous: if a.created { None } else { a.previous_target },
            target,
            desired: pool.spec.replicas,
        })
    });
    let uid = pool.metadata.uid.as_deref().unwrap_or_default();
    let revision = new.revision.as_deref().unwrap_or_default();
    for notice in status::notices(old, new, ramp) {
        if notice.reason == status::READY_NOTICE
            && !ctx.memory.ready_is_news(uid, revision, pool.spec.replicas)
        {
            continue;
        }
        let type_ = if notice.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(
            ctx,
            &reference,
            type_,
            &notice.reason,
            notice.action,
            notice.message,
        )
        .await;
    }
}

pub(super) async fn publish(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(truncate(note, 1000)),
        action: action.into(),
        secondary: None,
    };
    // A state change is its own Event: folded into a series it would keep its first message
    // ("scaling from 2 to 4") while the pool moves on.
    if let Err(error) = ctx.recorders.publish(&event, reference, Fold::Never).await {
        event_failed(reason, &error);
    }
}

/// A namespace being deleted refuses new Events; its pools go with it, so that is no news.
fn event_failed(reason: &str, error: &kube::Error) {
    if super::namespace_terminating(error) {
        tracing::debug!(reason, "the namespace is being deleted; no Event: {error}");
    } else {
        tracing::warn!(reason, "publishing an Event failed: {error}");
    }
}

pub(super) fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}
