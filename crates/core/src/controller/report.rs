//! Writing what a reconcile decided: the status (server-side, its own field manager) and Events.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use serde_json::json;

use super::managed_fields;
use super::watched::StatusAnswer;
use super::{Context, Error, STATUS_MANAGER};
use crate::api::{WorkerPool, WorkerPoolStatus};
use crate::decide::Announcement;

/// Publishes Events on the pool `reference` names, folded as each asks.
pub(super) async fn publish(ctx: &Context, reference: &ObjectReference, events: &[Announcement]) {
    for Announcement { event, fold } in events {
        if let Err(error) = ctx
            .recorders
            .publish(&ctx.pools, event, reference, *fold)
            .await
        {
            event_failed(&event.reason, &error);
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
    // Only the metadata of the answer is read: its version and who manages the status.
    let api: Api<StatusAnswer> = Api::namespaced(ctx.client.clone(), namespace);
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
    if !managed_fields::has_status_updates(managers(&written.metadata), STATUS_MANAGER) {
        return Ok(written.metadata.resource_version);
    }
    // The field sets to hand over, which the answer was read without: the same apply again
    // changes nothing and answers with them (a write the operator's RBAC grants, unlike a get).
    let whole: Api<PartialObjectMeta<WorkerPool>> = Api::namespaced(ctx.client.clone(), namespace);
    let written = whole
        .patch_status(name, &params, &Patch::Apply(&body))
        .await
        .map_err(status_error)?;
    let entries = managers(&written.metadata);
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

/// Who manages which fields of an object, as its answer said.
fn managers(
    metadata: &kube::core::ObjectMeta,
) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry] {
    metadata.managed_fields.as_deref().unwrap_or_default()
}

/// A namespace being deleted refuses new Events; its pools go with it, so that is no news.
fn event_failed(reason: &str, error: &kube::Error) {
    if super::namespace_terminating(error) {
        tracing::debug!(reason, "the namespace is being deleted; no Event: {error}");
    } else {
        tracing::warn!(reason, "publishing an Event failed: {error}");
    }
}
