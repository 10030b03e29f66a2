//! Reading a pool's children and writing those [`decide`](crate::decide) asks for, never one the
//! pool does not own.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use serde::Serialize;
use serde_json::json;

use super::watched::{Lean, Packed, Watched};
use super::{Context, Error};
use crate::api::MANAGER_NAME;
use crate::decide::{BudgetWrite, Child, DeploymentWrite, LiveChildren, Prepared, Writes};
use crate::pool::derive::PoolRef;

pub(super) fn is_owned_by(meta: &kube::core::ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

/// A child as the watch cache holds it, or — when the cache has none and the lookup asks — as the
/// API holds it, so a same-named object someone else created is never adopted or overwritten.
enum Existing<K> {
    Ours(Arc<Watched<K>>),
    Absent,
    Foreign,
}

impl<K> Existing<K> {
    fn child(&self) -> Child<'_, K> {
        match self {
            Existing::Ours(object) => Child::Ours(&object.0),
            Existing::Absent => Child::Absent,
            Existing::Foreign => Child::Foreign,
        }
    }
}

impl<P: Packed> Existing<P> {
    /// The child unpacked whole for this reconcile.
    fn unpacked(self) -> Result<Existing<P::Whole>, serde_json::Error> {
        Ok(match self {
            Existing::Ours(packed) => Existing::Ours(Arc::new(Watched(Box::new(packed.unpack()?)))),
            Existing::Absent => Existing::Absent,
            Existing::Foreign => Existing::Foreign,
        })
    }
}

/// Where a child the watch caches do not hold is looked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lookup {
    /// Nowhere: it is written create-only, which the API server refuses when an object of that
    /// name exists (the caches watch only labelled objects, so someone else's is not in them).
    Cache,
    /// Through the API, after a create-only write was refused.
    Api,
}

async fn existing<K>(
    ctx: &Context,
    store: &Store<Watched<K>>,
    pool: &PoolRef,
    name: &str,
    uncached: bool,
) -> Result<Existing<K>, Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Lean
        + Clone
        + std::fmt::Debug,
{
    let namespace = pool.namespace.as_str();
    let object = match store.get(&ObjectRef::new(name).within(namespace)) {
        Some(object) => object,
        None if !uncached => return Ok(Existing::Absent),
        None => {
            let api: Api<Watched<K>> = Api::namespaced(ctx.client.clone(), namespace);
            match api.get_opt(name).await.map_err(|source| Error::Read {
                kind: K::kind(&()).into_owned(),
                name: name.into(),
                source,
            })? {
                Some(object) => Arc::new(object),
                None => return Ok(Existing::Absent),
            }
        }
    };
    let uid = pool.uid.as_deref().unwrap_or_default();
    Ok(if is_owned_by(object.meta(), uid) {
        Existing::Ours(object)
    } else {
        Existing::Foreign
    })
}

/// A pool's children as one reconcile read them.
pub(super) struct Read {
    deployment: Existing<Deployment>,
    pdb: Existing<PodDisruptionBudget>,
    init_job: Option<(String, Existing<Job>)>,
}

impl Read {
    pub(super) fn live(&self) -> LiveChildren<'_> {
        LiveChildren {
            deployment: self.deployment.child(),
            pdb: self.pdb.child(),
            init_job: self
                .init_job
                .as_ref()
                .map(|(name, job)| (name.as_str(), job.child())),
        }
    }
}

/// Reads the children `prepared` names.
pub(super) async fn read_children(
    ctx: &Context,
    prepared: &Prepared<'_>,
    lookup: Lookup,
) -> Result<Read, Error> {
    let pool = prepared.identity;
    let uncached = prepared.reads_uncached() && lookup == Lookup::Api;
    let caches = &ctx.caches;
    // A packed part that is not its kind's is a failed read of the child.
    let unreadable = |kind: &str| {
        let kind = kind.to_owned();
        move |source| Error::Read {
            kind,
            name: pool.name.clone(),
            source: kube::Error::SerdeError(source),
        }
    };
    let deployment = existing(ctx, &caches.deployments, pool, &pool.name, uncached)
        .await?
        .unpacked()
        .map_err(unreadable("Deployment"))?;
    let pdb = existing(ctx, &caches.pdbs, pool, &pool.name, uncached)
        .await?
        .unpacked()
        .map_err(unreadable("PodDisruptionBudget"))?;
    let init_job = match prepared.init_job_to_read(deployment.child().ours()) {
        Some(job) => {
            let found = existing(ctx, &caches.jobs, pool, job, uncached).await?;
            Some((job.to_owned(), found))
        }
        None => None,
    };
    Ok(Read {
        deployment,
        pdb,
        init_job,
    })
}

/// The resourceVersion a create-only apply carries. An apply whose object names a
/// resourceVersion is refused with a conflict (409) unless the live object has exactly that one,
/// also when forced, and creates the object when there is none; no object has version 1, the
/// first revision of a new etcd.
const CREATE_ONLY: &str = "1";

/// Server-side apply of one child of `pool`; `create_only` when the child is not known to exist,
/// so that one someone else made is refused, not adopted.
async fn apply_child<K>(
    ctx: &Context,
    pool: &PoolRef,
    desired: &K,
    create_only: bool,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + k8s_openapi::Resource
        + Clone
        + Serialize
        + std::fmt::Debug,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    // Only the answer's metadata is decoded: nothing in the rest of it is read.
    let api: Api<Watched<PartialObjectMeta<K>>> =
        Api::namespaced(ctx.client.clone(), &pool.namespace);
    let params = PatchParams::apply(MANAGER_NAME).force();
    let written = if create_only {
        let mut desired = desired.clone();
        desired.meta_mut().resource_version = Some(CREATE_ONLY.into());
        api.patch(&name, &params, &Patch::Apply(&desired)).await
    } else {
        api.patch(&name, &params, &Patch::Apply(desired)).await
    };
    match written {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if create_only && status.code == 409 => Err(Error::Unseen {
            kind: K::KIND.into(),
            name,
        }),
        Err(source) => Err(Error::Apply {
            kind: K::KIND.into(),
            name,
            source,
        }),
    }
}

/// Sets the replicas and the pause of the live Deployment, and nothing else.
async fn hold_template(
    ctx: &Context,
    pool: &PoolRef,
    replicas: i32,
    paused: bool,
) -> Result<(), Error> {
    let api: Api<Watched<PartialObjectMeta<Deployment>>> =
        Api::namespaced(ctx.client.clone(), &pool.namespace);
    let params = PatchParams {
        field_manager: Some(MANAGER_NAME.into()),
        ..PatchParams::default()
    };
    let patch = json!({"spec": {"replicas": replicas, "paused": paused}});
    api.patch(&pool.name, &params, &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Apply {
            kind: "Deployment".into(),
            name: pool.name.clone(),
            source,
        })?;
    Ok(())
}

/// Makes the writes: the init Job first, then the Deployment, then the budget. A child `read`
/// does not hold is created only if no object has its name.
pub(super) async fn write_children(
    ctx: &Context,
    pool: &PoolRef,
    writes: &Writes,
    read: &Read,
) -> Result<(), Error> {
    if let Some(job) = &writes.init_job {
        let ours = read
            .init_job
            .as_ref()
            .is_some_and(|(_, job)| matches!(job, Existing::Ours(_)));
        apply_child(ctx, pool, job, !ours).await?;
    }
    match &writes.deployment {
        None => {}
        Some(DeploymentWrite::Hold { replicas, paused }) => {
            hold_template(ctx, pool, *replicas, *paused).await?;
        }
        Some(DeploymentWrite::Apply(deployment)) => {
            let ours = matches!(read.deployment, Existing::Ours(_));
            apply_child(ctx, pool, deployment.as_ref(), !ours).await?;
        }
    }
    match &writes.pdb {
        None => {}
        Some(BudgetWrite::Apply(pdb)) => {
            let ours = matches!(read.pdb, Existing::Ours(_));
            apply_child(ctx, pool, pdb.as_ref(), !ours).await?;
        }
        Some(BudgetWrite::Delete { uid }) => delete_budget(ctx, pool, uid).await?,
    }
    Ok(())
}

/// Deletes the pool's budget, only if the object of its name is still the one with `uid`: one
/// that is already gone or was made again since (404, 409) is left to the next look.
async fn delete_budget(ctx: &Context, pool: &PoolRef, uid: &str) -> Result<(), Error> {
    let api: Api<Watched<PartialObjectMeta<PodDisruptionBudget>>> =
        Api::namespaced(ctx.client.clone(), &pool.namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&pool.name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(()),
        Err(source) => Err(Error::Apply {
            kind: "PodDisruptionBudget".into(),
            name: pool.name.clone(),
            source,
        }),
    }
}
