//! Offline rendering for the `render` command: a WorkerPool manifest in, the objects the operator
//! would apply on first apply out.

use serde::Serialize;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::{self, DisruptionBudget, WorkerPool};
use crate::pool::derive::{self, Children, PoolRef};
use crate::pool::drift;
use crate::pool::policy::{self, Conflict};

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

/// The objects to apply for one pool, the template values that break a rule, and advice.
#[derive(Debug)]
pub struct Rendered {
    pub children: Children,
    pub conflicts: Vec<Conflict>,
    /// What is valid but likely to hurt, such as an app server without a memory limit.
    pub advice: Vec<String>,
}

/// The pools of a YAML stream, and a note for each other document skipped.
#[derive(Debug, Default)]
pub struct Pools {
    pub pools: Vec<WorkerPool>,
    pub skipped: Vec<String>,
}

fn is_pool(value: &serde_json::Value) -> bool {
    value.get("kind").and_then(|v| v.as_str()) == Some("WorkerPool")
        && value.get("apiVersion").and_then(|v| v.as_str()) == Some("workerpool.dev/v1alpha1")
}

/// Every WorkerPool of a YAML or JSON stream (`kubectl kustomize` output, a file of several
/// documents, one document with a trailing `---`); other documents are skipped with a note.
pub fn parse_pools(input: &str) -> Result<Pools, RenderError> {
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(input) {
        let value: serde_json::Value = serde::Deserialize::deserialize(document)?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    let several = documents.len() > 1;
    if let [single] = documents.as_slice()
        && !is_pool(single)
    {
        return Err(not_a_pool(single));
    }
    let mut found = Pools::default();
    for (index, value) in documents.into_iter().enumerate() {
        let at = |message: String| match several {
            true => format!("document {}: {message}", index + 1),
            false => message,
        };
        if !is_pool(&value) {
            let kind = value
                .get("kind")
                .and_then(|v| v.as_str())
                .unwrap_or("<no kind>");
            let name = value
                .pointer("/metadata/name")
                .and_then(|v| v.as_str())
                .unwrap_or("<no name>");
            found.skipped.push(at(format!(
                "skipped {kind} {name}: not a workerpool.dev/v1alpha1 WorkerPool"
            )));
            continue;
        }
        let pool = pool_from_value(value).map_err(|e| RenderError::Field(at(e.to_string())))?;
        found.pools.push(pool);
    }
    Ok(found)
}

fn not_a_pool(value: &serde_json::Value) -> RenderError {
    RenderError::Field(format!(
        "apiVersion/kind: expected workerpool.dev/v1alpha1 WorkerPool, got {} {}",
        value
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or("<none>"),
        value
            .get("kind")
            .and_then(|v| v.as_str())
            .unwrap_or("<none>")
    ))
}

/// A WorkerPool document, refused as the API server would refuse it: an unknown field (strict
/// field validation, as `kubectl apply` asks for), a field of the wrong type, a name too long.
fn pool_from_value(value: serde_json::Value) -> Result<WorkerPool, RenderError> {
    let unknown = api::strict::unknown_fields(&value);
    if !unknown.is_empty() {
        return Err(RenderError::Field(format!(
            "unknown field{} {}",
            if unknown.len() > 1 { "s" } else { "" },
            unknown
                .iter()
                .map(|path| format!("\"{path}\""))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let pool: WorkerPool = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        RenderError::Field(format!("{path}: {}", e.inner()))
    })?;
    if let Some(name) = pool.metadata.name.as_deref() {
        if name.len() > api::MAX_POOL_NAME {
            return Err(RenderError::Field(api::pool_name_message()));
        }
        if !api::is_dns_subdomain(name) {
            return Err(RenderError::Field(format!(
                "metadata.name {name:?}: a name is lowercase letters, digits and '-', in parts separated by '.' that start and end with a letter or digit"
            )));
        }
    }
    Ok(pool)
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
    let mut children = derive::children(&pool_ref, &valid, &settings, replicas);
    // Stamped as the controller stamps what it applies, so the output is what a cluster receives.
    if let Some(job) = children.init_job.as_mut() {
        drift::stamp(job)?;
    }
    // A pool without a namespace lands in the one `kubectl apply` is pointed at, and so do its
    // children: render invents none.
    if pool.metadata.namespace.is_none() {
        if let Some(job) = children.init_job.as_mut() {
            job.metadata.namespace = None;
        }
        children.deployment.metadata.namespace = None;
        if let Some(pdb) = children.pdb.as_mut() {
            pdb.metadata.namespace = None;
        }
    }
    drift::stamp(&mut children.deployment)?;
    if let Some(pdb) = children.pdb.as_mut() {
        drift::stamp(pdb)?;
    }
    Ok(Rendered {
        children,
        conflicts: settings.conflicts,
        advice: policy::advice(&valid),
    })
}

fn push_doc<T: Serialize>(out: &mut String, object: &T) -> Result<(), RenderError> {
    out.push_str("---\n");
    out.push_str(&crate::yaml::to_string(object)?);
    Ok(())
}

/// What the output is, at its top: the first apply, not the live state of a running pool.
pub fn first_apply_note(pool: &WorkerPool, children: &Children) -> String {
    let name = pool.metadata.name.as_deref().unwrap_or("workerpool");
    let first = children
        .deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(0);
    let mut note = format!(
        "# WorkerPool {name}: what the operator applies when it first sees the pool. Review and diff\n\
         # with it; let the operator apply it.\n"
    );
    if first < pool.spec.replicas {
        note.push_str(&format!(
            "# The Deployment starts at {first} of {} replicas and the operator ramps it from there:\n\
             # applied over a running pool, this would scale it down.\n",
            pool.spec.replicas
        ));
    }
    match policy::disruption_budget(&pool.spec) {
        DisruptionBudget::Applied => {}
        DisruptionBudget::Disabled => note.push_str(
            "# No PodDisruptionBudget: policy.disruption.budget is false, so a node drain may evict\n\
             # every pod at once.\n",
        ),
        DisruptionBudget::NothingToProtect => note.push_str(&format!(
            "# No PodDisruptionBudget: with maxUnavailable {} and replicas {}, a budget would allow\n\
             # every eviction and protect nothing.\n",
            match &pool.spec.policy.disruption.max_unavailable {
                IntOrString::Int(n) => n.to_string(),
                IntOrString::String(s) => s.clone(),
            },
            pool.spec.replicas
        )),
    }
    if pool.metadata.namespace.is_none() {
        note.push_str(
            "# No namespace given: the objects go where kubectl points, as the pool does.\n",
        );
    }
    note
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
    if let Some(pdb) = pdb {
        push_doc(&mut out, pdb)?;
    }
    Ok(out)
}
