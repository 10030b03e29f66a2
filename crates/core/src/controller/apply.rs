//! Applying a pool's children: only those whose live object lacks what the operator sets, never
//! one it does not own.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use serde::Serialize;
use serde_json::json;

use super::watched::{Lean, Watched};
use super::{Context, Error};
use crate::api::reason;
use crate::api::{AbortSummary, MANAGER_NAME, WorkerPool, WorkerPoolStatus};
use crate::pool::Stall;
use crate::pool::derive::{self, Children, PoolRef};
use crate::pool::drift;
use crate::pool::policy;
use crate::pool::ramp::DeploymentCounts;
use crate::pool::rollout;

pub(super) fn is_owned_by(meta: &kube::core::ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

/// A child as the watch cache holds it, or — when the cache has none — as the API holds it, so a
/// same-named object someone else created is never adopted or overwritten.
enum Existing<K> {
    Ours(Arc<Watched<K>>),
    Absent,
    Foreign,
}

async fn existing<K>(
    ctx: &Context,
    store: &Store<Watched<K>>,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<Existing<K>, Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Lean
        + Clone
        + std::fmt::Debug,
{
    let cached = store.get(&ObjectRef::new(name).within(namespace));
    let object = match cached {
        Some(object) => object,
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
    Ok(if is_owned_by(object.meta(), uid) {
        Existing::Ours(object)
    } else {
        Existing::Foreign
    })
}

/// Server-side apply of one child of `pool` unless the live object is current: it holds every
/// field of `desired` and was last applied as this same object (`drift::is_current`). This is the
/// one rule that skips a write. Returns whether a request was made.
async fn apply_child<K>(
    ctx: &Context,
    pool: &PoolRef,
    live: Option<&K>,
    desired: &mut K,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + k8s_openapi::Resource
        + Clone
        + Serialize
        + std::fmt::Debug,
{
    let stamped = drift::stamp(desired).map_err(Error::Serialize)?;
    if let Some(live) = live
        && drift::is_current(live, &stamped).map_err(Error::Serialize)?
    {
        return Ok(false);
    }
    let name = desired.meta().name.clone().unwrap_or_default();
    // Only the answer's metadata is decoded: nothing in the rest of it is read.
    let api: Api<Watched<PartialObjectMeta<K>>> =
        Api::namespaced(ctx.client.clone(), &pool.namespace);
    api.patch(
        &name,
        &PatchParams::apply(MANAGER_NAME).force(),
        &Patch::Apply(&*desired),
    )
    .await
    .map_err(|source| Error::Apply {
        kind: K::KIND.into(),
        name,
        source,
    })?;
    Ok(true)
}

/// Sets the replicas and the pause of a live Deployment, and nothing else, when they differ.
async fn hold_template(
    ctx: &Context,
    pool: &PoolRef,
    live: &Deployment,
    replicas: i32,
    paused: bool,
) -> Result<(), Error> {
    if drift::holds(live, replicas, paused) {
        return Ok(());
    }
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

/// What applying the children found and did.
pub(super) struct Applied {
    /// The Deployment as this reconcile read it: the one reading the gates and the status share.
    pub(super) deployment: Option<DeploymentCounts>,
    pub(super) stall: Option<Stall>,
    pub(super) ramp_target: Option<i32>,
    pub(super) previous_target: Option<i32>,
    pub(super) created: bool,
    pub(super) plan: Option<rollout::Plan>,
    pub(super) revision: Option<String>,
}

impl Applied {
    pub(super) fn stalled(stall: Stall, deployment: Option<DeploymentCounts>) -> Self {
        Applied {
            deployment,
            stall: Some(stall),
            ramp_target: None,
            previous_target: None,
            created: false,
            plan: None,
            revision: None,
        }
    }

    /// What the plan did to children that stood as `live`.
    pub(super) fn of(plan: rollout::Plan, live: &LiveChildren, revision: String) -> Self {
        let live_deployment = live.deployment();
        let deployment = live_deployment.map(DeploymentCounts::of);
        Applied {
            deployment,
            stall: plan.stall.clone(),
            ramp_target: plan.apply_deployment.then_some(plan.ramp_target),
            previous_target: deployment.map(|d| d.ramp_target),
            created: live_deployment.is_none() && plan.apply_deployment,
            plan: Some(plan),
            revision: Some(revision),
        }
    }
}

fn ours<K>(existing: &Existing<K>) -> Option<&K> {
    match existing {
        Existing::Ours(object) => Some(&object.0),
        _ => None,
    }
}

/// A pool's children as they stand: from the watch caches, or from the API for one the cache
/// does not hold yet.
pub(super) struct LiveChildren {
    deployment: Existing<Deployment>,
    pdb: Existing<PodDisruptionBudget>,
    /// The init Job of this revision, looked for only while the Deployment does not run it yet.
    job: Option<(String, Existing<Job>)>,
}

impl LiveChildren {
    pub(super) fn deployment(&self) -> Option<&Deployment> {
        ours(&self.deployment)
    }

    /// Same-named objects this pool does not own: they are left untouched, and the pool stalls.
    pub(super) fn not_owned(&self, pool: &PoolRef) -> Option<Stall> {
        let (ns, name) = (&pool.namespace, &pool.name);
        let foreign: Vec<String> = [
            matches!(self.deployment, Existing::Foreign).then(|| format!("Deployment {ns}/{name}")),
            matches!(self.pdb, Existing::Foreign)
                .then(|| format!("PodDisruptionBudget {ns}/{name}")),
            match &self.job {
                Some((job, Existing::Foreign)) => Some(format!("Job {ns}/{job}")),
                _ => None,
            },
        ]
        .into_iter()
        .flatten()
        .collect();
        (!foreign.is_empty()).then(|| Stall {
            reason: reason::NOT_OWNED,
            message: format!(
                "{} already exists and is not owned by this WorkerPool; it was left untouched. Rename the pool or remove that object",
                foreign.join(" and ")
            ),
        })
    }
}

/// Reads the children `children` would become.
pub(super) async fn read_children(
    ctx: &Context,
    pool: &PoolRef,
    children: &Children,
) -> Result<LiveChildren, Error> {
    let uid = pool.uid.as_deref().unwrap_or_default();
    let (ns, name) = (pool.namespace.as_str(), pool.name.as_str());
    let deployment = existing(ctx, &ctx.caches.deployments, ns, name, uid).await?;
    let pdb = existing(ctx, &ctx.caches.pdbs, ns, name, uid).await?;
    // The init Job matters only until the Deployment runs this revision; after that the Job
    // is finished and cleaned up, and looking for it would cost a request per reconcile.
    let runs_revision =
        ours(&deployment).and_then(derive::revision_in) == Some(children.revision.as_str());
    let job_name = children
        .init_job
        .as_ref()
        .and_then(|job| job.metadata.name.clone())
        .filter(|_| !runs_revision);
    let job = match job_name {
        Some(job_name) => {
            let job = existing(ctx, &ctx.caches.jobs, ns, &job_name, uid).await?;
            Some((job_name, job))
        }
        None => None,
    };
    Ok(LiveChildren {
        deployment,
        pdb,
        job,
    })
}

/// What the gates decide for children that stand as `live`.
pub(super) fn plan(
    pool: &WorkerPool,
    valid: &policy::ValidPool<'_>,
    children: &Children,
    live: &LiveChildren,
    aborts: &AbortSummary,
    status: Option<&WorkerPoolStatus>,
    now: jiff::Timestamp,
) -> rollout::Plan {
    let job = live
        .job
        .as_ref()
        .map(|(name, job)| (name.as_str(), ours(job)));
    rollout::plan_children(&rollout::Observed {
        generation: pool.metadata.generation.unwrap_or(0),
        valid,
        children,
        deployment: live.deployment(),
        init_job: job,
        status,
        aborts,
        now,
    })
}

/// Applies what the plan asks for and the live children lack.
pub(super) async fn apply_planned(
    ctx: &Context,
    pool: &PoolRef,
    plan: &rollout::Plan,
    live: &LiveChildren,
    children: &mut Children,
) -> Result<(), Error> {
    if plan.create_init_job
        && let Some(job) = children.init_job.as_mut()
    {
        apply_child(ctx, pool, None, job).await?;
    }
    match (plan.apply_deployment, plan.template, live.deployment()) {
        (false, ..) => {}
        // The new revision waits for its init Job: the live template is left as it is, with
        // whatever other managers set in it (`kubectl rollout restart`'s annotation, say), and
        // only the gates' replicas and pause are written.
        (true, rollout::Template::KeepLive, Some(live)) => {
            hold_template(ctx, pool, live, plan.ramp_target, plan.paused).await?;
        }
        (true, ..) => {
            derive::shape(&mut children.deployment, plan.ramp_target, plan.paused);
            apply_child(ctx, pool, live.deployment(), &mut children.deployment).await?;
        }
    }
    apply_child(ctx, pool, ours(&live.pdb), &mut children.pdb).await?;
    Ok(())
}
