//! What the plugin reads from the cluster: lists and gets only, never a write.

use anyhow::{Context as _, anyhow, bail};
use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod, PodSpec};
pub use k8s_openapi::api::events::v1::Event as RecordedEvent;
use kube::api::ListParams;
use kube::{Client, ResourceExt};

use workerpool_core::aborts::classify::KubeletEvent;
use workerpool_core::api::{POOL_LABEL, Runtime, WorkerPool};
use workerpool_core::controller::kubelet;
use workerpool_core::controller::logs::{ApiLogs, LogReader};
pub use workerpool_core::controller::run::api;
use workerpool_core::diagnose::{self, SavedLog};
use workerpool_core::plugin::tree::PoolEvent;
use workerpool_core::plugin::workload;

pub fn pool_selector(pool: &str) -> String {
    format!("{POOL_LABEL}={pool}")
}

pub async fn pods(client: &Client, namespace: &str, selector: &str) -> anyhow::Result<Vec<Pod>> {
    let list = api::<Pod>(client, Some(namespace))
        .list(&ListParams::default().labels(selector))
        .await
        .with_context(|| format!("listing pods {selector} in {namespace}"))?;
    Ok(list.items)
}

/// The kubelet's Events about `pods` (core/v1) and the Warning Events the operator recorded about
/// the pool named `pool` (events.k8s.io/v1, the API it records with).
pub async fn events(
    client: &Client,
    namespace: &str,
    pods: &[Pod],
    pool: Option<&str>,
) -> anyhow::Result<(Vec<KubeletEvent>, Vec<PoolEvent>)> {
    let kubelet = api::<Event>(client, Some(namespace))
        .list(&ListParams::default().fields(KUBELET_EVENTS))
        .await
        .with_context(|| format!("listing the pods' events in {namespace}"))?;
    let recorded = match pool {
        Some(_) => {
            api::<RecordedEvent>(client, Some(namespace))
                .list(&ListParams::default())
                .await
                .with_context(|| format!("listing the pool's events in {namespace}"))?
                .items
        }
        None => Vec::new(),
    };
    Ok((
        kubelet_events(&kubelet.items, pods),
        pool.map(|p| pool_warnings(&recorded, p))
            .unwrap_or_default(),
    ))
}

/// The Events the kubelet records about pods.
pub const KUBELET_EVENTS: &str = "involvedObject.kind=Pod";

pub fn kubelet_events(events: &[Event], pods: &[Pod]) -> Vec<KubeletEvent> {
    let names: std::collections::BTreeSet<String> = pods.iter().map(|p| p.name_any()).collect();
    kubelet::evidence(events.iter().filter(|e| {
        e.involved_object
            .name
            .as_ref()
            .is_some_and(|n| names.contains(n))
    }))
}

pub fn pool_warnings(events: &[RecordedEvent], pool: &str) -> Vec<PoolEvent> {
    events
        .iter()
        .filter(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("WorkerPool") && r.name.as_deref() == Some(pool)
                })
        })
        .map(|e| PoolEvent {
            reason: e.reason.clone().unwrap_or_default(),
            message: e.note.clone().unwrap_or_default(),
            count: e
                .series
                .as_ref()
                .map(|s| s.count)
                .or(e.deprecated_count)
                .unwrap_or(1),
            last_seen: e
                .series
                .as_ref()
                .map(|s| s.last_observed_time.0)
                .or(e.deprecated_last_timestamp.as_ref().map(|t| t.0))
                .or(e.event_time.as_ref().map(|t| t.0))
                .or(e.deprecated_first_timestamp.as_ref().map(|t| t.0))
                .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0)),
        })
        .collect()
}

pub async fn pool_jobs(client: &Client, namespace: &str, pool: &str) -> anyhow::Result<Vec<Job>> {
    let list = api::<Job>(client, Some(namespace))
        .list(&ListParams::default().labels(&pool_selector(pool)))
        .await
        .with_context(|| format!("listing the jobs of pool {pool}"))?;
    Ok(list.items)
}

/// Log reads in flight at once: each is a request to a kubelet.
const LOG_READS_AT_ONCE: usize = 8;

/// The log tails `why` reads, bounded as the controller bounds them: the run that ended of each
/// restarted container, and the current run of each running one. A log the kubelet cannot give
/// is left out (the abort is still classified, without what its log says).
pub async fn log_tails(client: &Client, namespace: &str, pods: &[Pod]) -> Vec<SavedLog> {
    let reader = ApiLogs(client.clone());
    let mut wanted = Vec::new();
    for pod in pods {
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_deref())
            .unwrap_or_default();
        for status in statuses {
            if status.restart_count > 0
                || status
                    .last_state
                    .as_ref()
                    .is_some_and(|s| s.terminated.is_some())
            {
                wanted.push((pod.name_any(), status.name.clone(), true));
            }
            if status.state.as_ref().is_some_and(|s| s.running.is_some()) {
                wanted.push((pod.name_any(), status.name.clone(), false));
            }
        }
    }
    let reads = wanted.iter().map(|(pod, container, previous)| {
        let reader = &reader;
        async move {
            reader
                .tail(namespace, pod, container, *previous)
                .await
                .ok()
                .map(|text| SavedLog {
                    pod: Some(pod.clone()),
                    container: Some(container.clone()),
                    previous: Some(*previous),
                    text,
                })
        }
    });
    stream::iter(reads)
        .buffer_unordered(LOG_READS_AT_ONCE)
        .filter_map(|log| async move { log })
        .collect()
        .await
}

/// What `why` diagnoses: the pods and the runtime to read them with.
pub struct Target {
    pub namespace: String,
    pub pods: Vec<Pod>,
    pub runtime: Option<Runtime>,
}

/// `NAME` (a pool), `pod/NAME`, `deployment/NAME` or `workerpool/NAME`.
pub async fn target(
    client: &Client,
    namespace: &str,
    what: &str,
    forced: Option<Runtime>,
) -> anyhow::Result<Target> {
    let (kind, name) = what.split_once('/').unwrap_or(("workerpool", what));
    let detect = |spec: Option<&PodSpec>| {
        forced.or_else(|| {
            spec.and_then(|s| workload::app_server(s, None))
                .map(|a| a.runtime)
        })
    };
    match kind {
        "workerpool" | "workerpools" | "wp" | "workerpool.workerpool.dev" => {
            let pool = api::<WorkerPool>(client, Some(namespace))
                .get(name)
                .await
                .with_context(|| format!("reading workerpool {name} in {namespace}"))?;
            Ok(Target {
                namespace: namespace.into(),
                pods: pods(client, namespace, &pool_selector(name)).await?,
                runtime: Some(forced.unwrap_or(pool.spec.runtime)),
            })
        }
        "pod" | "pods" | "po" => {
            let pod = api::<Pod>(client, Some(namespace))
                .get(name)
                .await
                .with_context(|| format!("reading pod {name} in {namespace}"))?;
            let runtime = detect(pod.spec.as_ref());
            Ok(Target {
                namespace: namespace.into(),
                pods: vec![pod],
                runtime,
            })
        }
        "deployment" | "deployments" | "deploy" | "deployment.apps" => {
            let deployment = api::<Deployment>(client, Some(namespace))
                .get(name)
                .await
                .with_context(|| format!("reading deployment {name} in {namespace}"))?;
            let spec = deployment
                .spec
                .as_ref()
                .ok_or_else(|| anyhow!("deployment {name} has no spec"))?;
            let selector = workload::selector_string(&spec.selector)
                .ok_or_else(|| anyhow!("deployment {name}'s selector cannot be listed by"))?;
            let runtime = detect(spec.template.spec.as_ref());
            Ok(Target {
                namespace: namespace.into(),
                pods: pods(client, namespace, &selector).await?,
                runtime,
            })
        }
        other => bail!("{other}/{name}: why reads a workerpool, a pod or a deployment"),
    }
}

/// Every finding about the target's pods, with the hints their logs give.
pub async fn why(client: &Client, target: &Target) -> anyhow::Result<Vec<diagnose::Finding>> {
    let (events, _) = events(client, &target.namespace, &target.pods, None).await?;
    let logs = log_tails(client, &target.namespace, &target.pods).await;
    diagnose::diagnose(&target.pods, &events, target.runtime, &logs).map_err(|e| anyhow!("{e}"))
}
