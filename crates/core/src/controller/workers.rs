//! Watching workers: reads the pool's pods from the cache, the kubelet Events of pods whose
//! termination a probe kill could explain and a bounded number of log tails, and updates the
//! abort ledger.

use std::collections::HashSet;
use std::sync::Arc;

use jiff::SignedDuration;

use super::Context;
use crate::aborts::classify::KubeletEvent;
use crate::aborts::detect::{self, SAMPLE_INTERVAL, WorkerLimits};
use crate::aborts::ledger::{self, Observed};
use crate::aborts::loghints;
use crate::aborts::podview::PodView;
use crate::api::{AbortRecord, AbortSummary, WorkerPool, WorkerPoolStatus};
use crate::pool::policy;

/// Log tails read per reconcile, so a pool with many failing pods cannot flood the API server.
pub const MAX_LOG_READS: usize = 4;

/// Pods whose Events are listed per reconcile, for the same reason; the others wait for the next.
pub const MAX_EVENT_READS: usize = 4;

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
    let mut findings = detect::pod_aborts(pool.spec.runtime, &pods, &[], now);
    let evidence = read_evidence(ctx, namespace, pool_uid, old, &findings, now, window).await;
    if !evidence.events.is_empty() {
        findings = detect::pod_aborts(pool.spec.runtime, &pods, &evidence.events, now);
    }
    // A settled termination whose pod's Events were not read now is counted later rather than
    // misread as a plain exit.
    let before = findings.found.len();
    findings
        .found
        .retain(|f| !f.probe_kill_possible || evidence.read.contains(&f.observed.record.pod));
    if findings.found.len() < before {
        findings.settle_after = earliest(findings.settle_after, Some(detect::SETTLE));
    }

    // Runs that ended while no operator watched, known from the restart counts.
    let unseen = detect::unseen_runs(pool.spec.runtime, &pods, &evidence.events, old, now, window);
    let mut reads = 0;
    let mut observed: Vec<Observed> = Vec::with_capacity(findings.found.len() + unseen.len());
    observed.extend(unseen);
    for found in findings.found {
        let mut o = found.observed;
        if let Some(tail) = found
            .log
            .filter(|_| read_logs && reads < MAX_LOG_READS && ledger::is_news(old, &o, now, window))
        {
            reads += 1;
            match ctx
                .logs
                .tail(namespace, &tail.pod, &tail.container, tail.previous)
                .await
            {
                Ok(text) => o = detect::with_log_hint(o, &loghints::scan(&text)),
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
            for container in detect::unhealthy_containers(pod) {
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
                    Ok(text) => observed.extend(detect::log_aborts(
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

    let (summary, fresh) = ledger::record(old, observed, now, window);
    let mut recheck = earliest(
        findings.settle_after,
        ledger::next_expiry(&summary, now, window),
    );
    if !unhealthy.is_empty() {
        recheck = earliest(recheck, Some(SAMPLE_INTERVAL));
    }
    let stability = detect::stability(&pods, &summary, now, window);
    recheck = earliest(recheck, stability.stable_in);
    Report {
        summary,
        fresh,
        recheck,
        initializing: detect::initializing(&pods),
        stability,
        unread: evidence.failed,
        stop_signal: pool.spec.app_container_name().and_then(|app| {
            policy::reported_stop_signal(
                pool.spec.runtime,
                app,
                pods.iter()
                    .filter_map(|pod| Some((pod.name.as_str(), pod.app_stop_signal(app)?))),
            )
        }),
    }
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

/// Lists the Events of pods with a new termination a probe kill could explain: once when it is
/// first seen (the kubelet's `Killing` usually precedes the status that shows the exit, so a fast
/// crash loop cannot replace it unexplained) and again once it has settled, if still uncounted.
async fn read_evidence(
    ctx: &Context,
    namespace: &str,
    pool_uid: &str,
    old: Option<&AbortSummary>,
    findings: &detect::PodFindings,
    now: jiff::Timestamp,
    window: i64,
) -> Evidence {
    let mut wanted: Vec<&str> = Vec::new();
    let settled = findings
        .found
        .iter()
        .filter(|f| f.probe_kill_possible && ledger::is_news(old, &f.observed, now, window))
        .map(|f| f.observed.record.pod.as_str());
    let first_seen = findings
        .settling
        .iter()
        .filter(|(_, key)| ctx.memory.first_sight(pool_uid, key))
        .map(|(pod, _)| pod.as_str());
    for pod in settled.chain(first_seen) {
        if !wanted.contains(&pod) {
            wanted.push(pod);
        }
    }
    let keys: HashSet<&str> = findings.settling.iter().map(|(_, k)| k.as_str()).collect();
    ctx.memory.keep_sightings(pool_uid, &keys);
    let mut evidence = Evidence {
        events: Vec::new(),
        read: HashSet::new(),
        failed: None,
    };
    for pod in wanted.into_iter().take(MAX_EVENT_READS) {
        match ctx.events.for_pod(namespace, pod).await {
            Ok(found) => {
                evidence.events.extend(found);
                evidence.read.insert(pod.to_string());
            }
            Err(error) => {
                tracing::debug!(pod, "listing the pod's Events failed: {error}");
                evidence.failed.get_or_insert((pod.to_string(), error));
            }
        }
    }
    evidence
}
