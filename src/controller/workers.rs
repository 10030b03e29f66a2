//! Watching workers: reads the pool's pods from the cache, the buffered kubelet Events and a
//! bounded number of log tails, and updates the abort ledger.

use std::collections::HashSet;
use std::sync::Arc;

use jiff::SignedDuration;

use super::Context;
use crate::aborts::{self, Observed};
use crate::api::{AbortRecord, AbortSummary, WorkerPool, WorkerPoolStatus};
use crate::loghints;
use crate::observe::{self, SAMPLE_INTERVAL, WorkerLimits};
use crate::podview::PodView;

/// Log tails read per reconcile, so a pool with many failing pods cannot flood the API server.
pub const MAX_LOG_READS: usize = 4;

/// The pool's abort ledger after looking at its pods.
pub struct Report {
    pub summary: AbortSummary,
    /// Aborts counted for the first time: one Event and one metric increment each.
    pub fresh: Vec<AbortRecord>,
    /// Look again after this long (a settling termination, unhealthy pods to sample, the window
    /// ending).
    pub recheck: Option<SignedDuration>,
}

fn earliest(a: Option<SignedDuration>, b: Option<SignedDuration>) -> Option<SignedDuration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `status` is the pool's status as the server holds it; its ledger says what was counted.
pub async fn observe(
    ctx: &Context,
    pool: &WorkerPool,
    status: Option<&WorkerPoolStatus>,
    namespace: &str,
    name: &str,
) -> Report {
    let now = (ctx.clock)();
    let window = pool.spec.policy.failure.window_seconds;
    let read_logs = pool.spec.policy.logs.read;
    let old = status.and_then(|s| s.aborts.as_ref());
    let pool_uid = pool.metadata.uid.as_deref().unwrap_or_default();

    let pods = ctx.pods.pods_of(namespace, name);
    let pods: Vec<&PodView> = pods.iter().map(Arc::as_ref).collect();
    let live: HashSet<&str> = pods.iter().map(|p| p.name.as_str()).collect();
    let events = ctx.kubelet_events.for_pool(namespace, name, &live);
    // The app container's boot may take its startup probe's window: the one last applied, else
    // the policy's boot timeout.
    let boot_seconds = status
        .and_then(|s| s.effective.as_ref())
        .and_then(|e| e.startup_probe)
        .map_or(pool.spec.policy.boot.timeout_seconds, |p| {
            p.window_seconds()
        });
    let app = pool.spec.app_container_name();
    let boot_window =
        |container: &str| (Some(container) == app).then(|| SignedDuration::from_secs(boot_seconds));
    let findings = observe::pod_aborts(pool.spec.runtime, &pods, &events, &boot_window, now);

    let mut reads = 0;
    let mut observed: Vec<Observed> = Vec::with_capacity(findings.found.len());
    for found in findings.found {
        let mut o = found.observed;
        if let Some(tail) = found
            .log
            .filter(|_| read_logs && reads < MAX_LOG_READS && aborts::is_news(old, &o, now, window))
        {
            reads += 1;
            match ctx
                .logs
                .tail(namespace, &tail.pod, &tail.container, tail.previous)
                .await
            {
                Ok(text) => o = observe::with_log_hint(o, &loghints::scan(&text)),
                Err(error) => {
                    tracing::debug!(pod = %tail.pod, "reading the log tail failed: {error}")
                }
            }
        }
        observed.push(o);
    }

    let mut unhealthy = HashSet::new();
    if read_logs {
        let limits = worker_limits(pool, status);
        for pod in &pods {
            let (pod_name, uid) = (pod.name.as_str(), pod.uid.as_str());
            for container in observe::unhealthy_containers(pod) {
                let sample_key = format!("{uid}/{}", container.name);
                unhealthy.insert(sample_key.clone());
                if reads >= MAX_LOG_READS
                    || !ctx
                        .memory
                        .sample_due(pool_uid, &sample_key, container.running_since, now)
                {
                    continue;
                }
                reads += 1;
                match ctx
                    .logs
                    .tail(namespace, pod_name, &container.name, false)
                    .await
                {
                    Ok(text) => observed.extend(observe::log_aborts(
                        pod,
                        &container.name,
                        &text,
                        &limits,
                        now,
                    )),
                    Err(error) => {
                        tracing::debug!(pod = pod_name, "sampling the log failed: {error}")
                    }
                }
            }
        }
    }
    ctx.memory.keep_samples(pool_uid, &unhealthy);

    let (summary, fresh) = aborts::record(old, observed, now, window);
    let mut recheck = earliest(
        findings.settle_after,
        aborts::next_expiry(&summary, now, window),
    );
    if !unhealthy.is_empty() {
        recheck = earliest(recheck, Some(SAMPLE_INTERVAL));
    }
    Report {
        summary,
        fresh,
        recheck,
    }
}

/// The effective worker timeout and the app container's memory limit, for worker-level hints.
fn worker_limits(pool: &WorkerPool, status: Option<&WorkerPoolStatus>) -> WorkerLimits {
    let app = pool.spec.app_container_name();
    let memory_limit = pool
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| Some(c.name.as_str()) == app))
        .and_then(|c| c.resources.as_ref()?.limits.as_ref()?.get("memory"))
        .map(|q| q.0.clone());
    WorkerLimits {
        timeout_seconds: status
            .and_then(|s| s.effective.as_ref())
            .and_then(|e| e.worker_timeout_seconds),
        memory_limit,
    }
}
