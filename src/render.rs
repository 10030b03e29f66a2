//! Offline rendering for the `render` command: a WorkerPool manifest in, the objects the operator
//! would apply on first apply out.

use serde::Serialize;

use crate::api::WorkerPool;
use crate::derive::{self, Children, PoolRef};
use crate::drift;
use crate::policy::{self, Conflict};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("input is not YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("{0}")]
    Field(String),
    #[error("{0}")]
    Invalid(#[from] policy::InvalidSpec),
    #[error("serializing a child: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// The objects to apply for one pool, and the template values that break a rule.
#[derive(Debug)]
pub struct Rendered {
    pub children: Children,
    pub conflicts: Vec<Conflict>,
}

/// Reads one WorkerPool from YAML or JSON, naming the field path of the first problem.
pub fn parse_pool(input: &str) -> Result<WorkerPool, RenderError> {
    let value: serde_json::Value = serde_yaml::from_str(input)?;
    let api_version = value.get("apiVersion").and_then(|v| v.as_str());
    let kind = value.get("kind").and_then(|v| v.as_str());
    if kind != Some("WorkerPool") || api_version != Some("workerpool.dev/v1alpha1") {
        return Err(RenderError::Field(format!(
            "apiVersion/kind: expected workerpool.dev/v1alpha1 WorkerPool, got {} {}",
            api_version.unwrap_or("<none>"),
            kind.unwrap_or("<none>")
        )));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        RenderError::Field(format!("{path}: {}", e.inner()))
    })
}

pub fn render_pool(pool: &WorkerPool) -> Result<Rendered, RenderError> {
    let valid = policy::validate(&pool.spec)?;
    let settings = policy::settle(&valid);
    let pool_ref = PoolRef {
        name: pool
            .metadata
            .name
            .clone()
            .unwrap_or_else(|| "workerpool".into()),
        namespace: pool
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        uid: pool.metadata.uid.clone(),
    };
    let replicas = policy::first_apply_replicas(&pool.spec);
    let mut children = derive::build(&pool_ref, &valid, &settings, replicas);
    // Stamped as the controller stamps what it applies, so the output is what a cluster receives.
    if let Some(job) = children.init_job.as_mut() {
        drift::stamp(job)?;
    }
    drift::stamp(&mut children.deployment)?;
    drift::stamp(&mut children.pdb)?;
    Ok(Rendered {
        children,
        conflicts: settings.conflicts,
    })
}

fn push_doc<T: Serialize>(out: &mut String, object: &T) -> Result<(), RenderError> {
    out.push_str("---\n");
    out.push_str(&serde_yaml::to_string(object)?);
    Ok(())
}

/// Multi-document YAML of every child, in apply order: the init Job runs before the Deployment.
pub fn to_yaml(children: &Children) -> Result<String, RenderError> {
    let Children {
        revision: _,
        init_job,
        deployment,
        pdb,
    } = children;
    let mut out = String::new();
    if let Some(job) = init_job {
        push_doc(&mut out, job)?;
    }
    push_doc(&mut out, deployment)?;
    push_doc(&mut out, pdb)?;
    Ok(out)
}
