//! Watching workers: reads the pool's pods from the cache, and the kubelet Events and log tails
//! that [`reads`] asks for; [`report::conclude`] makes the ledger of them.

use std::collections::HashSet;
use std::sync::Arc;

use super::Context;
use crate::aborts::classify::KubeletEvent;
use crate::aborts::detect;
use crate::aborts::podview::PodView;
use crate::aborts::reads::{self, LogPlan};
use crate::aborts::report::{self, Report};
use crate::api::{WorkerPool, WorkerPoolStatus};

/// What looking at the pool's pods found.
pub struct Workers {
    pub report: Report,
    /// A pod whose Events could not be listed, and why: the reconcile then fails and backs off
    /// instead of coming back at the settle time.
    pub unread: Option<(String, kube::Error)>,
}

/// Looks at the pool's pods: what the pod cache shows, the kubelet Events and log tails that
/// asks for, and the ledger after it. `status` is the pool's status as the server holds it.
pub async fn observe(
    ctx: &Context,
    pool: &WorkerPool,
    status: Option<&WorkerPoolStatus>,
    namespace: &str,
    name: &str,
) -> Workers {
    let now = (ctx.clock)();
    let (runtime, window) = (pool.spec.runtime, pool.spec.policy.failure.window_seconds);
    let old = status.and_then(|s| s.aborts.as_ref());
    let pool_uid = pool.metadata.uid.as_deref().unwrap_or_default();
    let pods = ctx.caches.pods.pods_of(namespace, name);
    let pods: Vec<&PodView> = pods.iter().map(Arc::as_ref).collect();
    let mut memory = ctx.pools.reads(pool_uid);

    let first = detect::pod_aborts(runtime, &pods, &[], now);
    let wanted = reads::events_to_read(&first, old, now, window, &mut memory);
    let evidence = read_events(ctx, namespace, &wanted).await;
    let findings = reads::with_events(runtime, &pods, first, &evidence.events, &evidence.read, now);
    // Runs that ended while no operator watched, known from the restart counts.
    let unseen = detect::unseen_runs(runtime, &pods, &evidence.events, old, now, window);
    let read_logs = pool.spec.policy.logs.read;
    let mut plan = reads::logs_to_read(&findings, &pods, old, now, window, read_logs, &mut memory);
    plan.keep_samples(ctx.log_samples.grant(plan.samples()));
    let texts = read_log_tails(ctx, namespace, &plan).await;
    ctx.pools.set_reads(pool_uid, memory);
    let read = report::Reads {
        findings,
        unseen,
        plan: &plan,
        texts: &texts,
    };
    Workers {
        report: report::conclude(pool, status, &pods, read, now),
        unread: evidence.failed,
    }
}

/// Reads the log tails `plan` asks for; None for one that could not be read.
async fn read_log_tails(ctx: &Context, namespace: &str, plan: &LogPlan) -> Vec<Option<String>> {
    let mut texts = Vec::with_capacity(plan.reads.len());
    for read in &plan.reads {
        let text = ctx
            .logs
            .tail(namespace, &read.pod, &read.container, read.previous)
            .await;
        texts.push(
            text.inspect_err(
                |error| tracing::debug!(pod = %read.pod, "reading the log tail failed: {error}"),
            )
            .ok(),
        );
    }
    texts
}

/// The kubelet Events read in one reconcile, and the pods they were read for.
struct Evidence {
    events: Vec<KubeletEvent>,
    read: HashSet<String>,
    failed: Option<(String, kube::Error)>,
}

/// Lists the Events of the `wanted` pods.
async fn read_events(ctx: &Context, namespace: &str, wanted: &[String]) -> Evidence {
    let mut evidence = Evidence {
        events: Vec::new(),
        read: HashSet::new(),
        failed: None,
    };
    for pod in wanted {
        match ctx.events.for_pod(namespace, pod).await {
            Ok(found) => {
                evidence.events.extend(found);
                evidence.read.insert(pod.clone());
            }
            Err(error) => {
                tracing::debug!(pod, "listing the pod's Events failed: {error}");
                evidence.failed.get_or_insert((pod.clone(), error));
            }
        }
    }
    evidence
}
