//! Watching workers: reads the pool's pods from the cache, the kubelet Events of pods whose
//! termination a probe kill could explain and a bounded number of log tails, and updates the
//! abort ledger.

use std::collections::HashSet;
use std::sync::Arc;

use jiff::SignedDuration;

use super::Context;
use crate::aborts::classify::KubeletEvent;
use crate::aborts::detect::{self, SAMPLE_INTERVAL, WorkerLimits, earliest};
use crate::aborts::ledger;
use crate::aborts::podview::PodView;
use crate::aborts::reads::{self, LogPlan};
use crate::api::{AbortRecord, AbortSummary, WorkerPool, WorkerPoolStatus};
use crate::pool::policy;

/// The pool's abort ledger after looking at its pods.
pub struct Report {
    pub summary: AbortSummary,
    /// Aborts counted for the first time: one Event and one metric increment each.
    pub fresh: Vec<AbortRecord>,
    /// Look again after this long (a settling termination, unhealthy pods to sample, the window
    /// ending).
    pub recheck: Option<SignedDuration>,
    /// Pods waiting for their init containers.
    pub initializing: Option<detect::Initializing>,
    /// Whether the pods stay up.
    pub stability: detect::Stability,
    /// A pod whose Events could not be listed, and why: the reconcile then fails and backs off
    /// instead of coming back at the settle time.
    pub unread: Option<(String, kube::Error)>,
    /// A pod whose app container is stopped with a signal the app server does not drain on.
    pub stop_signal: Option<policy::Conflict>,
}

/// Looks at the pool's pods: what the pod cache shows, the kubelet Events and log tails that
/// asks for (chosen by [`reads`], read here), and the ledger after it. `status` is the pool's
/// status as the server holds it; its ledger says what was counted.
pub async fn observe(
    ctx: &Context,
    pool: &WorkerPool,
    status: Option<&WorkerPoolStatus>,
    namespace: &str,
    name: &str,
) -> Report {
    let now = (ctx.clock)();
    let (runtime, window) = (pool.spec.runtime, pool.spec.policy.failure.window_seconds);
    let old = status.and_then(|s| s.aborts.as_ref());
    let pool_uid = pool.metadata.uid.as_deref().unwrap_or_default();
    let pods = ctx.caches.pods.pods_of(namespace, name);
    let pods: Vec<&PodView> = pods.iter().map(Arc::as_ref).collect();
    let mut memory = ctx.memory.reads(pool_uid);

    let first = detect::pod_aborts(runtime, &pods, &[], now);
    let wanted = reads::events_to_read(&first, old, now, window, &mut memory);
    let evidence = read_events(ctx, namespace, &wanted).await;
    let findings = reads::with_events(runtime, &pods, first, &evidence.events, &evidence.read, now);
    // Runs that ended while no operator watched, known from the restart counts.
    let unseen = detect::unseen_runs(runtime, &pods, &evidence.events, old, now, window);
    let read_logs = pool.spec.policy.logs.read;
    let plan = reads::logs_to_read(&findings, &pods, old, now, window, read_logs, &mut memory);
    let texts = read_log_tails(ctx, namespace, &plan).await;
    ctx.memory.set_reads(pool_uid, memory);
    let limits = worker_limits(pool, status);
    let settle_after = findings.settle_after;
    let observed = reads::observed(findings.found, unseen, &pods, &plan, &texts, &limits, now);

    let (summary, fresh) = ledger::record(old, observed, now, window);
    let stability = detect::stability(&pods, &summary, now, window);
    let recheck = [
        ledger::next_expiry(&summary, now, window),
        plan.unhealthy.then_some(SAMPLE_INTERVAL),
        stability.stable_in,
    ]
    .into_iter()
    .fold(settle_after, earliest);
    Report {
        summary,
        fresh,
        recheck,
        initializing: detect::initializing(&pods),
        stability,
        unread: evidence.failed,
        stop_signal: pool.spec.app_container_name().and_then(|app| {
            policy::reported_stop_signal(
                runtime,
                app,
                pods.iter()
                    .filter_map(|pod| Some((pod.name.as_str(), pod.app_stop_signal(app)?))),
            )
        }),
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

/// The effective worker timeouts and the app container's memory limit, for worker-level hints.
fn worker_limits(pool: &WorkerPool, status: Option<&WorkerPoolStatus>) -> WorkerLimits {
    let app = pool.spec.app_container_name();
    let memory_limit = pool
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| Some(c.name.as_str()) == app))
        .and_then(policy::memory_limit)
        .map(str::to_string);
    let effective = status.and_then(|s| s.effective.as_ref());
    WorkerLimits {
        timeout_seconds: effective.and_then(|e| e.worker_timeout_seconds),
        healthcheck_timeout_seconds: effective.and_then(|e| e.worker_healthcheck_timeout_seconds),
        memory_limit,
    }
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
