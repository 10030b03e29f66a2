//! Builds the child objects of a pool from its validated spec and settled numbers. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, LifecycleHandler, PodSpec, PodTemplateSpec, SleepAction,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::{
    DisruptionBudget, Health, INIT_LABEL, InitPolicy, MANAGER_NAME, POOL_LABEL, Policy,
    REVISION_ANNOTATION, RUNTIME_ANNOTATION, Runtime, WorkerPool, WorkerPoolSpec,
};
use crate::pool::drift::short_hash;
use crate::pool::policy::{Settings, ValidPool};

/// The pool object's identity, as children refer to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolRef {
    pub name: String,
    pub namespace: String,
    /// Absent when rendering offline; children then carry no owner reference.
    pub uid: Option<String>,
}

impl PoolRef {
    pub fn owner_reference(&self) -> Option<OwnerReference> {
        self.uid.as_ref().map(|uid| OwnerReference {
            api_version: <WorkerPool as kube::Resource>::api_version(&()).into_owned(),
            kind: <WorkerPool as kube::Resource>::kind(&()).into_owned(),
            name: self.name.clone(),
            uid: uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        })
    }

    fn meta(&self) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.name.clone()),
            namespace: Some(self.namespace.clone()),
            labels: Some(standard_labels(&self.name)),
            owner_references: self.owner_reference().map(|o| vec![o]),
            ..ObjectMeta::default()
        }
    }
}

/// Every child object of a pool. [`crate::decide`] destructures it, so a new kind cannot be
/// forgotten.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    /// The pool's revision ([`revision_of`]), also in the pod template's `workerpool.dev/revision`
    /// annotation.
    pub revision: String,
    /// The run-once Job for this revision and spec generation, when `policy.init` is set.
    pub init_job: Option<Job>,
    pub deployment: Deployment,
    /// Absent when the pool has no budget ([`crate::pool::policy::disruption_budget`]).
    pub pdb: Option<PodDisruptionBudget>,
}

/// Finished init Jobs (and their pods) are deleted by the Job controller after this long; the
/// result is kept in the pool's status.
pub const INIT_JOB_TTL_SECONDS: i32 = 600;

pub fn standard_labels(pool: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), pool.to_string()),
        ("app.kubernetes.io/instance".to_string(), pool.to_string()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGER_NAME.to_string(),
        ),
        (POOL_LABEL.to_string(), pool.to_string()),
    ])
}

pub fn selector_labels(pool: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(POOL_LABEL.to_string(), pool.to_string())])
}

/// The label selector string published in `status.selector` for the scale subresource.
pub fn selector_string(pool: &str) -> String {
    format!("{POOL_LABEL}={pool}")
}

/// The children for a pool, with the Deployment asking for `replicas`.
pub fn children(
    pool: &PoolRef,
    valid: &ValidPool<'_>,
    settings: &Settings,
    replicas: i32,
) -> Children {
    let revision = revision_of(valid.spec());
    let deployment = deployment(pool, valid, settings, replicas, &revision);
    Children {
        init_job: init_job(pool, valid, &revision),
        revision,
        deployment,
        pdb: (settings.effective.disruption_budget == DisruptionBudget::Applied)
            .then(|| pdb(pool, valid)),
    }
}

/// Sets what the rollout gates decided on a built Deployment: its replicas and whether it is
/// paused.
pub fn shape(deployment: &mut Deployment, replicas: i32, paused: bool) {
    if let Some(spec) = deployment.spec.as_mut() {
        spec.replicas = Some(replicas);
        spec.paused = Some(paused);
    }
}

/// The spec but `replicas`, destructured whole so that a new spec field cannot be left out of the
/// hashes below.
type Unscaled<'a> = (
    &'a Runtime,
    &'a Option<String>,
    &'a PodTemplateSpec,
    &'a Health,
    &'a Policy,
);

fn unscaled(spec: &WorkerPoolSpec) -> Unscaled<'_> {
    let WorkerPoolSpec {
        replicas: _,
        runtime,
        container,
        template,
        health,
        policy,
    } = spec;
    (runtime, container, template, health, policy)
}

/// The pool's revision: a short, stable hash of the spec fields its pods are derived from. A scale
/// is no new revision, nor is a change of the disruption, failure, init or log policy, nor an
/// operator upgrade that derives other numbers from the same spec (migrations are not run again).
pub fn revision_of(spec: &WorkerPoolSpec) -> String {
    let (runtime, container, template, health, policy) = unscaled(spec);
    let pods = (
        runtime,
        container,
        template,
        health,
        &policy.boot,
        &policy.requests,
        &policy.shutdown,
    );
    short_hash(&pods, 10)
}

/// A hash of all of the spec but `replicas`: any change the user makes except a scale. A
/// boot-failure circuit stays open until it changes.
pub fn spec_hash(spec: &WorkerPoolSpec) -> String {
    short_hash(&unscaled(spec), 10)
}

/// The revision a live Deployment's template carries, if it is one of ours.
pub fn revision_in(deployment: &Deployment) -> Option<&str> {
    deployment
        .spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(REVISION_ANNOTATION)
        .map(String::as_str)
}

/// Name of the init Job of one revision and init command: a new revision, or a changed
/// `policy.init`, runs a new Job; a scale does not.
pub fn init_job_name(pool: &str, revision: &str, init: &InitPolicy) -> String {
    let suffix = format!("-init-{revision}-{}", short_hash(init, 5));
    // Job names become a label value on their pods: at most 63 characters.
    let room = 63usize.saturating_sub(suffix.len());
    let mut prefix: String = pool.chars().take(room).collect();
    while prefix.ends_with(['-', '.']) {
        prefix.pop();
    }
    format!("{prefix}{suffix}")
}

/// The run-once Job: the app container's image, env and mounts with the init command, the pod's
/// init containers, native sidecars, volumes, identity and scheduling, no restarts in place, a
/// deadline (which the sidecars' start counts against) and bounded retries.
fn init_job(pool: &PoolRef, valid: &ValidPool<'_>, revision: &str) -> Option<Job> {
    let init = valid.spec().policy.init.as_ref()?;
    let name = init_job_name(&pool.name, revision, init);
    let source = valid.pod_spec();
    let app = valid.app_container();
    let container = Container {
        name: "init".into(),
        image: app.image.clone(),
        image_pull_policy: app.image_pull_policy.clone(),
        command: Some(init.command.clone()),
        env: app.env.clone(),
        env_from: app.env_from.clone(),
        volume_mounts: app.volume_mounts.clone(),
        resources: app.resources.clone(),
        security_context: app.security_context.clone(),
        working_dir: app.working_dir.clone(),
        ..Container::default()
    };
    // The app's own labels and annotations, so NetworkPolicies and admission rules that admit the
    // app admit its migration too; never the pool's selector label, so the Job's pod is not taken
    // for one of the pool's.
    let template_meta = valid.spec().template.metadata.as_ref();
    let mut labels = standard_labels(&pool.name);
    labels.extend(
        template_meta
            .and_then(|m| m.labels.clone())
            .unwrap_or_default(),
    );
    labels.remove(POOL_LABEL);
    labels.insert(INIT_LABEL.into(), pool.name.clone());
    let pod_annotations = template_meta.and_then(|m| m.annotations.clone());
    let mut meta = pool.meta();
    meta.name = Some(name);
    meta.annotations = Some(BTreeMap::from([(
        REVISION_ANNOTATION.to_string(),
        revision.to_string(),
    )]));
    Some(Job {
        metadata: meta,
        spec: Some(JobSpec {
            backoff_limit: Some(init.backoff_limit),
            active_deadline_seconds: Some(init.timeout_seconds),
            ttl_seconds_after_finished: Some(INIT_JOB_TTL_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: pod_annotations,
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    // The app's whole environment: its init containers (a vault agent filling
                    // a credentials volume) and native sidecars (a database proxy), in order.
                    // Sidecars in `containers` are left out: they never exit, so the Job would
                    // never finish (settle warns about them).
                    init_containers: source.init_containers.clone(),
                    containers: vec![container],
                    restart_policy: Some("Never".into()),
                    volumes: source.volumes.clone(),
                    service_account_name: source.service_account_name.clone(),
                    automount_service_account_token: source.automount_service_account_token,
                    image_pull_secrets: source.image_pull_secrets.clone(),
                    security_context: source.security_context.clone(),
                    host_aliases: source.host_aliases.clone(),
                    dns_policy: source.dns_policy.clone(),
                    dns_config: source.dns_config.clone(),
                    runtime_class_name: source.runtime_class_name.clone(),
                    node_selector: source.node_selector.clone(),
                    tolerations: source.tolerations.clone(),
                    affinity: source.affinity.clone(),
                    priority_class_name: source.priority_class_name.clone(),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    })
}

fn deployment(
    pool: &PoolRef,
    valid: &ValidPool<'_>,
    settings: &Settings,
    replicas: i32,
    revision: &str,
) -> Deployment {
    let spec = valid.spec();
    let mut template = spec.template.clone();
    pod_template(pool, valid, settings, &mut template);
    template
        .metadata
        .get_or_insert_with(ObjectMeta::default)
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(REVISION_ANNOTATION.into(), revision.to_owned());
    Deployment {
        metadata: pool.meta(),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&pool.name)),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(settings.effective.max_surge)),
                    max_unavailable: Some(IntOrString::Int(settings.effective.max_unavailable)),
                }),
            }),
            template,
            // Always stated, so resuming after the circuit closes is an apply like any other.
            paused: Some(false),
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn pod_template(
    pool: &PoolRef,
    valid: &ValidPool<'_>,
    settings: &Settings,
    template: &mut PodTemplateSpec,
) {
    let spec = valid.spec();
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    for (key, value) in standard_labels(&pool.name) {
        // The user's own labels win, except the one the selector depends on.
        if key == POOL_LABEL {
            labels.insert(key, value);
        } else {
            labels.entry(key).or_insert(value);
        }
    }
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(RUNTIME_ANNOTATION.into(), spec.runtime.as_str().into());

    let Some(pod) = template.spec.as_mut() else {
        return;
    };
    if pod.termination_grace_period_seconds.is_none() {
        pod.termination_grace_period_seconds =
            Some(settings.effective.termination_grace_period_seconds);
    }
    if let Some(app) = pod.containers.get_mut(valid.container_index()) {
        app_container(spec.runtime, settings, app);
    }
}

fn app_container(runtime: Runtime, settings: &Settings, app: &mut Container) {
    // The drain settled on; a template with a hook of its own keeps it.
    let drain = settings.effective.pre_stop_sleep_seconds.unwrap_or(0);
    if app.startup_probe.is_none() {
        app.startup_probe = settings.startup_probe.clone();
    }
    if app.readiness_probe.is_none() {
        app.readiness_probe = settings.readiness_probe.clone();
    }
    if app.liveness_probe.is_none() {
        app.liveness_probe = settings.liveness_probe.clone();
    }
    // A zero-second sleep action is rejected before Kubernetes 1.33; no drain means no hook.
    if drain > 0 {
        let lifecycle = app.lifecycle.get_or_insert_with(Default::default);
        if lifecycle.pre_stop.is_none() {
            lifecycle.pre_stop = Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: drain }),
                ..LifecycleHandler::default()
            });
        }
    }
    let env = app.env.get_or_insert_with(Vec::new);
    match runtime {
        Runtime::Gunicorn => merge_gunicorn_args(env, &settings.gunicorn_args),
        Runtime::Uvicorn | Runtime::Celery => {
            for (name, value) in &settings.app_env {
                if !env.iter().any(|e| &e.name == name) {
                    env.push(EnvVar {
                        name: name.clone(),
                        value: Some(value.clone()),
                        value_from: None,
                    });
                }
            }
        }
        Runtime::Generic => {}
    }
    if env.is_empty() {
        app.env = None;
    }
}

/// Adds each derived flag the user's own `GUNICORN_CMD_ARGS` does not already set.
fn merge_gunicorn_args(env: &mut Vec<EnvVar>, derived: &[String]) {
    const NAME: &str = "GUNICORN_CMD_ARGS";
    let flag_name = |arg: &str| arg.split('=').next().unwrap_or(arg).to_string();
    match env.iter_mut().find(|e| e.name == NAME) {
        // Taken from a ConfigMap or Secret: the user owns it entirely.
        Some(existing) if existing.value_from.is_some() => {}
        Some(existing) => {
            let mut value = existing.value.clone().unwrap_or_default();
            let present: Vec<String> = value
                .split_whitespace()
                .map(flag_name)
                .map(|f| {
                    if f == "-t" {
                        "--timeout".to_string()
                    } else {
                        f
                    }
                })
                .collect();
            for arg in derived {
                if !present.contains(&flag_name(arg)) {
                    if !value.is_empty() {
                        value.push(' ');
                    }
                    value.push_str(arg);
                }
            }
            existing.value = Some(value);
        }
        None if derived.is_empty() => {}
        None => env.push(EnvVar {
            name: NAME.into(),
            value: Some(derived.join(" ")),
            value_from: None,
        }),
    }
}

fn pdb(pool: &PoolRef, valid: &ValidPool<'_>) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: pool.meta(),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(valid.spec().policy.disruption.max_unavailable.clone()),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&pool.name)),
                ..LabelSelector::default()
            }),
            // Pods still booting or failing readiness can always be evicted.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}
