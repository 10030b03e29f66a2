//! Watching workers through the reconcile pipeline: the abort ledger in status, `Degraded`,
//! Warning Events, the abort counter, log hints and worker timeouts, and counting each
//! termination once across reconciles and operator restarts.

mod common;
mod harness;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use harness::*;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use workerpool_core::aborts::classify::KubeletEvent;
use workerpool_core::api::WorkerPoolStatus;
use workerpool_core::controller::Context;
use workerpool_core::controller::metrics::Metrics;

const BOOT_FAILURE_LOG: &str = "\
[2026-11-22 10:04:01 +0000] [7] [ERROR] Exception in worker process
Traceback (most recent call last):
  File \"/app/shop/wsgi.py\", line 3, in <module>
    import stripe
ModuleNotFoundError: No module named 'stripe'
[2026-11-22 10:04:02 +0000] [1] [ERROR] Reason: Worker failed to boot.
";

/// Seconds after the harness clock's start, as RFC 3339.
fn at(seconds: i64) -> String {
    let start: jiff::Timestamp = "2026-11-22T10:00:00Z".parse().expect("timestamp");
    (start + jiff::SignedDuration::from_secs(seconds)).to_string()
}

/// A pool pod as the kubelet writes it, with one `app` container status.
fn pod(name: &str, container: Value, extra_status: Value) -> Pod {
    let mut value = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name, "namespace": NS, "uid": format!("uid-{name}"),
            "labels": {"workerpool.dev/pool": "api", "pod-template-hash": "rev1"},
            "annotations": {"workerpool.dev/runtime": "gunicorn"}
        },
        // The startup probe the operator applies for a 60 s boot: the runs' boot window.
        "spec": {"containers": [{"name": "app", "image": "example/app:1",
            "startupProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                             "periodSeconds": 5, "failureThreshold": 12}}]},
        "status": {"phase": "Running", "containerStatuses": [container]}
    });
    if let Some(extra) = extra_status.as_object() {
        for (k, v) in extra {
            value["status"][k] = v.clone();
        }
    }
    serde_json::from_value(value).expect("pod")
}

/// A container in CrashLoopBackOff after `restarts` exits with `code`, the last at `finished`.
fn crashed(restarts: i32, code: i32, finished: i64) -> Value {
    json!({
        "name": "app", "image": "example/app:1", "imageID": "", "ready": false,
        "restartCount": restarts,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container=app"}},
        "lastState": {"terminated": {"exitCode": code, "reason": "Error",
            "startedAt": at(finished - 3), "finishedAt": at(finished)}}
    })
}

/// A running container that is not Ready (booting or failing readiness).
fn unready(restarts: i32) -> Value {
    json!({
        "name": "app", "image": "example/app:1", "imageID": "", "ready": false, "started": false,
        "restartCount": restarts, "state": {"running": {"startedAt": at(0)}}
    })
}

async fn events(h: &Harness) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(h.client.clone(), NS);
    api.list(&ListParams::default())
        .await
        .expect("list events")
        .items
}

async fn warnings(h: &Harness, reason: &str) -> Vec<Event> {
    events(h)
        .await
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some(reason))
        .collect()
}

fn counts(status: &WorkerPoolStatus) -> Vec<(String, i64)> {
    status
        .aborts
        .as_ref()
        .map(|a| {
            a.counts
                .iter()
                .map(|c| (c.reason.clone(), c.count))
                .collect()
        })
        .unwrap_or_default()
}

fn abort_metric(h: &Harness, reason: &str) -> Option<String> {
    let needle = format!(
        "workerpool_worker_aborts_total{{namespace=\"{NS}\",pool=\"api\",reason=\"{reason}\"}} "
    );
    h.ctx
        .metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&needle).map(str::to_string))
}

/// A converged pool `api` with this spec, `seconds` later.
async fn converged(spec: Value, seconds: i64) -> Harness {
    let mut h = harness(vec![pool("api", spec)], vec![]).await;
    h.converge("api").await;
    h.advance(seconds);
    h
}

/// The hint of the pool's last abort.
fn last_hint(status: &WorkerPoolStatus) -> String {
    status
        .aborts
        .as_ref()
        .and_then(|a| a.last.as_ref())
        .and_then(|l| l.hint.clone())
        .unwrap_or_default()
}

/// The pool's status after the harness's last reconcile.
async fn current(h: &Harness) -> WorkerPoolStatus {
    h.pool("api").await.status.expect("status")
}

#[tokio::test]
async fn boot_failure_shows_in_status_condition_event_and_metric() {
    let mut h = converged(json!({"replicas": 2}), 60).await;
    h.logs.set("api-a", "app", true, BOOT_FAILURE_LOG);
    let since = h.now() - jiff::SignedDuration::from_hours(1);
    h.set_pods(vec![
        pod("api-a", crashed(1, 3, 50), json!({})),
        running_pod("api", "api-b", true, since),
    ]);
    h.pods_ready("api", Some(1)).await;
    h.reconcile("api").await;

    let status = current(&h).await;
    assert_eq!(
        counts(&status),
        [("BootFailed".into(), 1), ("CrashLoop".into(), 1)]
    );
    let last = status
        .aborts
        .as_ref()
        .and_then(|a| a.last.clone())
        .expect("last");
    assert_eq!(
        (
            last.pod.as_str(),
            last.container.as_str(),
            last.exit_code,
            last.restart_count
        ),
        ("api-a", "app", Some(3), 0)
    );
    assert_eq!(last.time.as_deref(), Some(at(50).as_str()));
    assert_eq!(
        last.hint.as_deref(),
        Some("gunicorn: Worker failed to boot; ModuleNotFoundError: No module named 'stripe'")
    );
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded.status, "True");
    assert!(
        degraded
            .message
            .contains("2 aborts in the last 600s (1 BootFailed, 1 CrashLoop)"),
        "{}",
        degraded.message
    );
    assert!(
        degraded.message.contains("pod api-a"),
        "{}",
        degraded.message
    );
    let boot = warnings(&h, "BootFailed").await;
    assert_eq!(boot.len(), 1);
    assert_eq!(
        boot[0].note.as_deref(),
        Some(
            "pod api-a container app exited 3: gunicorn: Worker failed to boot; ModuleNotFoundError: No module named 'stripe'"
        )
    );
    assert_eq!(warnings(&h, "CrashLoop").await.len(), 1);
    assert_eq!(abort_metric(&h, "BootFailed").as_deref(), Some("1"));
    // One pod of two is down: the Deployment counts 1 ready, and the pool is not Ready.
    assert_eq!(condition(&status, "Ready").status, "False");
    assert_eq!(status.phase, Some(workerpool_core::api::Phase::Progressing));
}

#[tokio::test]
async fn abort_events_are_folded_per_pool_until_the_pool_is_deleted() {
    let mut h = converged(json!({"replicas": 2}), 60).await;
    assert_eq!(h.ctx.folded_pools(), 0, "state changes keep no recorder");
    h.set_pods(vec![pod("api-a", crashed(1, 3, 50), json!({}))]);
    h.reconcile("api").await;
    assert_eq!(
        h.ctx.folded_pools(),
        1,
        "an abort's recorder is kept, to fold its repeats into a series"
    );
    let deleted = h.pool("api").await;
    h.ctx.pool_deleted(&deleted.metadata);
    assert_eq!(h.ctx.folded_pools(), 0, "and forgotten with the pool");
}

#[tokio::test]
async fn each_termination_is_counted_once_also_after_an_operator_restart() {
    let mut h = converged(json!({"replicas": 2}), 60).await;
    h.set_pods(vec![pod("api-a", crashed(1, 3, 50), json!({}))]);
    h.reconcile("api").await;
    let logs_read = h.logs.reads.load(Ordering::SeqCst);

    // The same pod status again: nothing to write, nothing to publish, no log read.
    h.reconcile("api").await;
    assert_eq!(h.requests.total(), 0, "{:?}", h.writes());
    assert_eq!(h.logs.reads.load(Ordering::SeqCst), logs_read);

    // A new controller process (restart or new leader) starts from the status alone.
    let restarted = Context::new(
        h.client.clone(),
        h.ctx.caches.clone(),
        reporter(),
        Arc::new(Metrics::default()),
        h.ctx.clock.clone(),
    )
    .with_logs(h.logs.clone());
    h.ctx = Arc::new(restarted);
    h.reconcile("api").await;
    assert_eq!(h.requests.total(), 0, "{:?}", h.writes());
    assert_eq!(
        abort_metric(&h, "BootFailed").as_deref(),
        Some("0"),
        "a restarted operator's counter starts at 0 and counts nothing again"
    );

    // The next exit of the same container is a new termination.
    h.advance(40);
    h.set_pods(vec![pod("api-a", crashed(2, 3, 95), json!({}))]);
    h.reconcile("api").await;
    let status = current(&h).await;
    assert_eq!(
        counts(&status),
        [("BootFailed".into(), 2), ("CrashLoop".into(), 1)]
    );
    assert_eq!(abort_metric(&h, "BootFailed").as_deref(), Some("1"));
}

#[tokio::test]
async fn a_crash_loop_folds_into_one_event_series() {
    let mut h = harness(vec![pool("api", json!({"replicas": 1}))], vec![]).await;
    h.converge("api").await;
    for restart in 1..=5 {
        h.advance(30);
        let finished = 30 * i64::from(restart) - 10;
        h.set_pods(vec![pod("api-a", crashed(restart, 3, finished), json!({}))]);
        h.reconcile("api").await;
    }
    let status = current(&h).await;
    assert_eq!(
        counts(&status),
        [("BootFailed".into(), 5), ("CrashLoop".into(), 1)]
    );
    let boot = warnings(&h, "BootFailed").await;
    assert_eq!(boot.len(), 1, "one Event object for the repeated abort");
    assert_eq!(boot[0].series.as_ref().map(|s| s.count), Some(5));
}

#[tokio::test]
async fn a_liveness_kill_waits_for_the_kubelet_event_and_exits_zero() {
    let mut h = converged(json!({"replicas": 1}), 100).await;
    let mut container = crashed(1, 0, 98);
    container["lastState"]["terminated"]["reason"] = json!("Completed");
    container["state"] = json!({"running": {"startedAt": at(99)}});
    h.set_pods(vec![pod("api-a", container.clone(), json!({}))]);

    // Two seconds after the exit, without the Event yet, nothing is counted.
    h.reconcile("api").await;
    let status = current(&h).await;
    assert!(counts(&status).is_empty(), "{:?}", counts(&status));

    h.events.push(KubeletEvent {
        pod: "api-a".into(),
        container: Some("app".into()),
        reason: "Unhealthy".into(),
        message:
            "Liveness probe failed: Get \"http://10.0.0.7:8000/healthz\": context deadline exceeded"
                .into(),
        seen: None,
    });
    h.events.push(KubeletEvent {
        pod: "api-a".into(),
        container: Some("app".into()),
        reason: "Killing".into(),
        message: "Container app failed liveness probe, will be restarted".into(),
        seen: None,
    });
    // Once the exit has settled, the pod's Events are read and explain it.
    h.advance(3);
    h.reconcile("api").await;
    let status = current(&h).await;
    assert_eq!(counts(&status), [("LivenessTimeout".into(), 1)]);
    let last = status.aborts.and_then(|a| a.last).expect("last");
    assert_eq!(last.exit_code, Some(0));
    assert!(
        last.message
            .as_deref()
            .is_some_and(|m| m.starts_with("Liveness probe failed")),
        "{last:?}"
    );
}

#[tokio::test]
async fn events_are_read_only_for_a_new_termination_a_probe_kill_could_explain() {
    let mut h = converged(json!({"replicas": 2}), 100).await;
    let healthy = json!({"name": "app", "image": "example/app:1", "imageID": "", "ready": true,
        "restartCount": 0, "state": {"running": {"startedAt": at(10)}}});
    // gunicorn's exit 3 needs no Event: no probe kill ends in 3.
    h.set_pods(vec![
        pod("api-a", healthy, json!({})),
        pod("api-b", crashed(1, 3, 90), json!({})),
    ]);
    h.reconcile("api").await;
    assert_eq!(h.events.reads.load(Ordering::SeqCst), 0);
    assert_eq!(
        counts(&current(&h).await),
        [("BootFailed".into(), 1), ("CrashLoop".into(), 1)]
    );

    // An exit 0 could be a probe kill: the pod's Events are read when it is first seen and once
    // more when it has settled.
    h.set_pods(vec![pod("api-c", crashed(1, 0, 99), json!({}))]);
    h.reconcile("api").await;
    assert_eq!(h.events.reads.load(Ordering::SeqCst), 1, "first seen");
    h.advance(2);
    h.reconcile("api").await;
    assert_eq!(h.events.reads.load(Ordering::SeqCst), 1, "still settling");
    h.advance(3);
    h.reconcile("api").await;
    assert_eq!(h.events.reads.load(Ordering::SeqCst), 2, "settled");
    h.advance(1);
    h.reconcile("api").await;
    assert_eq!(
        h.events.reads.load(Ordering::SeqCst),
        2,
        "counted: not read again"
    );

    // A probe kill whose Killing Event is there when the exit is first seen is counted at once:
    // a fast crash loop cannot replace it before it settles.
    h.events.push(KubeletEvent {
        pod: "api-d".into(),
        container: Some("app".into()),
        reason: "Killing".into(),
        message: "Container app failed startup probe, will be restarted".into(),
        seen: None,
    });
    h.set_pods(vec![pod("api-d", crashed(1, 0, 106), json!({}))]);
    h.reconcile("api").await;
    assert_eq!(h.events.reads.load(Ordering::SeqCst), 3);
    assert!(
        counts(&current(&h).await).contains(&("StartupTimeout".into(), 1)),
        "{:?}",
        counts(&current(&h).await)
    );
}

#[tokio::test]
async fn an_unsettled_exit_without_event_is_counted_after_the_settle_time() {
    let mut h = converged(json!({"replicas": 1}), 100).await;
    h.set_pods(vec![pod("api-a", crashed(1, 1, 99), json!({}))]);
    h.reconcile("api").await;
    let status = current(&h).await;
    assert_eq!(counts(&status), [("CrashLoop".into(), 1)]);
    h.advance(5);
    h.reconcile("api").await;
    let status = current(&h).await;
    // A run of 3 s ended inside the 60 s the pool's boot may take: it never finished booting.
    assert_eq!(
        counts(&status),
        [("BootFailed".into(), 1), ("CrashLoop".into(), 1)]
    );
    let last = status.aborts.and_then(|a| a.last).expect("last");
    assert_eq!(
        last.message.as_deref(),
        Some("exited 1 3s after it started, inside its 60s boot window")
    );
}

#[tokio::test]
async fn without_a_startup_probe_an_early_exit_is_no_boot_failure() {
    // The pod's own spec is the boot window: a pod without a startup probe has none, however
    // long the policy's boot timeout, so the same exit reads the same to every reader.
    let mut h = converged(json!({"replicas": 1}), 100).await;
    let mut unprobed = pod("api-a", crashed(1, 1, 99), json!({}));
    if let Some(spec) = unprobed.spec.as_mut() {
        spec.containers[0].startup_probe = None;
    }
    h.set_pods(vec![unprobed.clone()]);
    h.reconcile("api").await;
    h.advance(5);
    h.reconcile("api").await;
    assert_eq!(
        counts(&current(&h).await),
        [("CrashLoop".into(), 1), ("UnexpectedExit".into(), 1)]
    );
    let view = workerpool_core::aborts::podview::PodView::from(&unprobed);
    let aborts = workerpool_core::aborts::classify::classify(
        workerpool_core::api::Runtime::Gunicorn,
        &view,
        &[],
    );
    assert_eq!(
        aborts[0].reason.as_str(),
        "UnexpectedExit",
        "diagnose agrees"
    );
}

#[tokio::test]
async fn an_exit_after_the_boot_window_is_an_unexpected_exit() {
    let mut h = converged(json!({"replicas": 1}), 200).await;
    let mut container = crashed(1, 1, 199);
    container["lastState"]["terminated"]["startedAt"] = json!(at(100));
    h.set_pods(vec![pod("api-a", container, json!({}))]);
    h.advance(6);
    h.reconcile("api").await;
    let status = current(&h).await;
    assert_eq!(
        counts(&status),
        [("CrashLoop".into(), 1), ("UnexpectedExit".into(), 1)]
    );
}

#[tokio::test]
async fn a_boot_failure_is_counted_at_once_even_when_the_next_run_replaces_it() {
    // A fast crash loop: every reconcile sees a new exit 3, each younger than the settle time.
    let mut h = converged(json!({"replicas": 1}), 100).await;
    for restarts in 1..=3 {
        h.set_pods(vec![pod("api-a", crashed(restarts, 3, 99), json!({}))]);
        h.reconcile("api").await;
        h.advance(2);
    }
    let status = current(&h).await;
    assert_eq!(
        counts(&status),
        [("BootFailed".into(), 3), ("CrashLoop".into(), 1)]
    );
}

#[tokio::test]
async fn degraded_clears_when_the_window_passes() {
    let spec = json!({"replicas": 1, "policy": {"failure": {"windowSeconds": 120}}});
    let mut h = converged(spec, 60).await;
    h.set_pods(vec![pod("api-a", crashed(1, 3, 50), json!({}))]);
    h.reconcile("api").await;
    let status = current(&h).await;
    assert_eq!(condition(&status, "Degraded").status, "True");

    // The pod recovered; two minutes later the abort is out of the window.
    let healthy = json!({"name": "app", "image": "example/app:1", "imageID": "", "ready": true,
        "restartCount": 1, "state": {"running": {"startedAt": at(60)}},
        "lastState": {"terminated": {"exitCode": 3, "reason": "Error", "startedAt": at(47), "finishedAt": at(50)}}});
    h.set_pods(vec![pod("api-a", healthy, json!({}))]);
    h.advance(121);
    h.reconcile("api").await;
    let status = current(&h).await;
    let degraded = condition(&status, "Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("False", "NoRecentAborts")
    );
    assert!(counts(&status).is_empty(), "{:?}", status.aborts);
    assert_eq!(
        status.aborts.and_then(|a| a.last).map(|l| l.reason),
        Some("BootFailed".into()),
        "the last abort stays visible"
    );
    assert_eq!(status.phase, Some(workerpool_core::api::Phase::Ready));
}

const DEATH_SPIRAL_LOG: &str = "\
[2026-11-22 10:00:31 +0000] [1] [CRITICAL] WORKER TIMEOUT (pid:9)
[2026-11-22 10:00:32 +0000] [12] [INFO] Booting worker with pid: 12
[2026-11-22 10:01:03 +0000] [1] [CRITICAL] WORKER TIMEOUT (pid:12)
[2026-11-22 10:01:04 +0000] [1] [ERROR] Worker (pid:15) was sent SIGKILL! Perhaps out of memory?
";

#[tokio::test]
async fn worker_timeouts_in_an_unready_pod_come_from_its_log() {
    let mut h = converged(json!({"replicas": 1}), 70).await;
    h.logs.set("api-a", "app", false, DEATH_SPIRAL_LOG);
    h.set_pods(vec![pod("api-a", unready(0), json!({}))]);
    h.reconcile("api").await;
    let status = current(&h).await;
    assert_eq!(
        counts(&status),
        [("WorkerTimeout".into(), 2), ("OOMKilled".into(), 1)]
    );
    assert_eq!(h.logs.reads.load(Ordering::SeqCst), 1);

    // Sampling is rate-limited per container, and what was seen is not counted again.
    h.advance(10);
    h.reconcile("api").await;
    assert_eq!(h.logs.reads.load(Ordering::SeqCst), 1);
    h.advance(30);
    h.reconcile("api").await;
    assert_eq!(h.logs.reads.load(Ordering::SeqCst), 2);
    let status = current(&h).await;
    assert_eq!(
        counts(&status),
        [("WorkerTimeout".into(), 2), ("OOMKilled".into(), 1)]
    );
}

#[tokio::test]
async fn gunicorns_own_sigkill_after_a_timeout_is_no_oom_kill() {
    let mut h = converged(json!({"replicas": 1}), 70).await;
    h.logs.set(
        "api-a",
        "app",
        false,
        "[1] [CRITICAL] WORKER TIMEOUT (pid:9)\n\
         [1] [ERROR] Worker (pid:9) was sent SIGKILL! Perhaps out of memory?\n",
    );
    h.set_pods(vec![pod("api-a", unready(0), json!({}))]);
    h.reconcile("api").await;
    let status = current(&h).await;
    assert_eq!(counts(&status), [("WorkerTimeout".into(), 1)]);
    let timeout = status
        .effective
        .as_ref()
        .and_then(|e| e.worker_timeout_seconds)
        .expect("gunicorn has a --timeout");
    let hint = last_hint(&status);
    assert!(
        hint.contains(&format!("--timeout {timeout}s"))
            && hint.contains("not an OOM")
            && hint.contains("policy.boot.preload")
            && hint.contains("policy.boot.maxConcurrent"),
        "{hint}"
    );
}

#[tokio::test]
async fn a_worker_sigkill_with_no_timeout_is_an_oom_kill_naming_the_memory_limit() {
    let mut spec = json!({"replicas": 1});
    spec["template"] = json!({"spec": {"containers": [{
        "name": "app", "image": "example/app:1",
        "ports": [{"name": "http", "containerPort": 8000}],
        "resources": {"limits": {"memory": "512Mi"}}
    }]}});
    let mut h = converged(spec, 70).await;
    h.logs.set(
        "api-a",
        "app",
        false,
        "[1] [ERROR] Worker (pid:15) was sent SIGKILL! Perhaps out of memory?\n",
    );
    h.set_pods(vec![pod("api-a", unready(0), json!({}))]);
    h.reconcile("api").await;
    let status = current(&h).await;
    assert_eq!(counts(&status), [("OOMKilled".into(), 1)]);
    let hint = last_hint(&status);
    assert!(hint.contains("pid 15") && hint.contains("512Mi"), "{hint}");
}

#[tokio::test]
async fn a_booting_container_is_first_sampled_one_interval_into_its_run() {
    let mut h = converged(json!({"replicas": 1}), 70).await;
    h.logs.set("api-a", "app", false, DEATH_SPIRAL_LOG);
    let mut just_started = unready(0);
    just_started["state"]["running"]["startedAt"] = json!(at(65));
    h.set_pods(vec![pod("api-a", just_started, json!({}))]);
    h.reconcile("api").await;
    assert_eq!(
        h.logs.reads.load(Ordering::SeqCst),
        0,
        "a log five seconds old has nothing to show yet"
    );
    h.advance(20);
    h.reconcile("api").await;
    assert_eq!(h.logs.reads.load(Ordering::SeqCst), 0);
    h.advance(10);
    h.reconcile("api").await;
    assert_eq!(
        h.logs.reads.load(Ordering::SeqCst),
        1,
        "35 seconds into its run"
    );
    let status = current(&h).await;
    assert_eq!(
        counts(&status),
        [("WorkerTimeout".into(), 2), ("OOMKilled".into(), 1)]
    );
}

#[tokio::test]
async fn log_reading_can_be_switched_off() {
    let spec = json!({"replicas": 1, "policy": {"logs": {"read": false}}});
    let mut h = converged(spec, 70).await;
    h.logs.set("api-a", "app", false, DEATH_SPIRAL_LOG);
    h.logs.set("api-b", "app", true, BOOT_FAILURE_LOG);
    h.set_pods(vec![
        pod("api-a", unready(0), json!({})),
        pod("api-b", crashed(1, 3, 50), json!({})),
    ]);
    h.reconcile("api").await;
    assert_eq!(h.logs.reads.load(Ordering::SeqCst), 0);
    let status = current(&h).await;
    assert_eq!(
        counts(&status),
        [("BootFailed".into(), 1), ("CrashLoop".into(), 1)]
    );
    let hint = status.aborts.and_then(|a| a.last).and_then(|l| l.hint);
    assert!(
        hint.as_deref()
            .is_some_and(|h| h.contains("failed to boot")),
        "generic advice without the log: {hint:?}"
    );
}

#[tokio::test]
async fn many_crashing_pods_are_each_counted_once_and_the_status_grows_by_pod() {
    let mut h = converged(json!({"replicas": 2}), 60).await;
    let crashing = |restarts: i32, finished: i64| -> Vec<_> {
        (0..200)
            .map(|i| {
                pod(
                    &format!("api-{i}"),
                    crashed(restarts, 3, finished),
                    json!({}),
                )
            })
            .collect()
    };
    h.set_pods(crashing(1, 50));
    h.reconcile("api").await;
    let status = current(&h).await;
    assert_eq!(
        counts(&status),
        [("BootFailed".into(), 200), ("CrashLoop".into(), 200)]
    );
    let aborts = status.aborts.expect("aborts");
    assert_eq!(aborts.recent.len(), 64);
    assert!(
        h.logs.reads.load(Ordering::SeqCst) <= 4,
        "log reads per reconcile are bounded"
    );
    let one_run = serde_json::to_string(&aborts).expect("json").len();

    // Seen again: nothing is counted twice, although far more than 64 are in the window.
    h.reconcile("api").await;
    let status = current(&h).await;
    assert_eq!(
        counts(&status),
        [("BootFailed".into(), 200), ("CrashLoop".into(), 200)]
    );

    // Each pod's next run: counted once more, and the ledger holds a few bytes more per pod.
    h.set_pods(crashing(2, 58));
    h.reconcile("api").await;
    h.reconcile("api").await;
    let status = current(&h).await;
    assert_eq!(
        counts(&status),
        [("BootFailed".into(), 400), ("CrashLoop".into(), 200)]
    );
    let two_runs = serde_json::to_string(&status.aborts.expect("aborts"))
        .expect("json")
        .len();
    assert!(
        two_runs < one_run + 200 * 8,
        "{one_run} bytes, then {two_runs}"
    );
}

#[tokio::test]
async fn pods_stuck_in_init_say_so_on_the_pool() {
    let mut h = converged(json!({"replicas": 2}), 60).await;
    let app_waiting = json!({"name": "app", "image": "example/app:1", "imageID": "", "ready": false,
        "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}});
    let migrate = json!({"name": "migrate", "image": "example/app:1", "imageID": "", "ready": false,
        "restartCount": 3,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container=migrate"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
            "startedAt": at(45), "finishedAt": at(50)}}});
    let stuck = |name: &str| {
        pod(
            name,
            app_waiting.clone(),
            json!({"phase": "Pending", "initContainerStatuses": [migrate.clone()]}),
        )
    };
    h.set_pods(vec![stuck("api-b"), stuck("api-a")]);
    h.pods_ready("api", Some(0)).await;
    h.reconcile("api").await;
    let status = current(&h).await;
    let ready = condition(&status, "Ready");
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, "InitContainersFailing");
    assert!(
        ready.message.ends_with(
            "2 of 2 pods waiting for init containers are stuck: pod api-a init container migrate \
             CrashLoopBackOff after exit 1, restarted 3 times"
        ),
        "{}",
        ready.message
    );
    assert_eq!(
        counts(&status),
        [("CrashLoop".into(), 2), ("UnexpectedExit".into(), 2)]
    );
    let last = status.aborts.and_then(|a| a.last).expect("last");
    assert_eq!(last.container, "migrate");
}

#[tokio::test]
async fn evicted_and_unschedulable_pods_are_pod_level_aborts() {
    let mut h = converged(json!({"replicas": 2}), 60).await;
    let waiting = json!({"name": "app", "image": "example/app:1", "imageID": "", "ready": false,
        "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}});
    let evicted = pod(
        "api-e",
        waiting.clone(),
        json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}),
    );
    let pending = pod(
        "api-p",
        waiting,
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient memory."}]}),
    );
    h.set_pods(vec![evicted, pending]);
    h.reconcile("api").await;
    let status = current(&h).await;
    assert_eq!(
        counts(&status),
        [("Evicted".into(), 1), ("Unschedulable".into(), 1)]
    );
    // Still the same pods a minute later: nothing new.
    h.advance(60);
    h.reconcile("api").await;
    assert_eq!(warnings(&h, "Unschedulable").await.len(), 1);
}

#[tokio::test]
async fn a_worker_process_uvicorns_supervisor_replaced_is_a_worker_timeout_naming_its_timeout() {
    let spec = json!({
        "replicas": 1,
        "runtime": "uvicorn",
        "policy": {"boot": {"timeoutSeconds": 80}},
        "template": {"spec": {"containers": [{
            "name": "app", "image": "example/app:1",
            "command": ["uvicorn", "app.main:app", "--workers", "4"],
            "ports": [{"name": "http", "containerPort": 8000}]
        }]}}
    });
    let mut h = converged(spec, 70).await;
    h.logs.set(
        "api-a",
        "app",
        false,
        "INFO:     Started parent process [1]\n\
         INFO:     Started server process [9]\n\
         INFO:     Child process [9] died\n\
         INFO:     Started server process [12]\n",
    );
    h.set_pods(vec![pod("api-a", unready(0), json!({}))]);
    h.reconcile("api").await;
    let status = current(&h).await;
    assert_eq!(counts(&status), [("WorkerTimeout".into(), 1)]);
    let hint = last_hint(&status);
    assert!(
        hint.contains("uvicorn's supervisor replaced worker process 9")
            && hint.contains("--timeout-worker-healthcheck 80s"),
        "{hint}"
    );
}

/// A celery pool of one worker with an exec check, 1 CPU and 1Gi.
fn celery_pool(extra: Value) -> Value {
    let mut spec = json!({
        "replicas": 1,
        "runtime": "celery",
        "health": {"check": "exec", "command": ["celery", "-A", "shop", "inspect", "ping"]},
        "policy": {"requests": {"timeoutSeconds": 300}, "shutdown": {"gracefulTimeoutSeconds": 300}},
        "template": {"spec": {"containers": [{
            "name": "app", "image": "example/app:1",
            "command": ["celery", "-A", "shop", "worker", "--loglevel=INFO"],
            "resources": {"limits": {"cpu": "2", "memory": "1Gi"}}
        }]}}
    });
    common::merge(&mut spec, &extra);
    spec
}

#[tokio::test]
async fn a_celery_child_killed_for_its_time_limit_is_a_worker_timeout_and_one_killed_alone_an_oom()
{
    let mut h = converged(celery_pool(json!({})), 70).await;
    h.logs.set(
        "api-a",
        "app",
        false,
        "[2026-12-06 10:48:04,207: ERROR/MainProcess] Process 'ForkPoolWorker-1' pid:29662 exited with 'signal 9 (SIGKILL)'\n\
         [2026-12-06 10:48:07,425: ERROR/MainProcess] Hard time limit (300s) exceeded for shop.report[ba46]\n\
         [2026-12-06 10:48:07,616: ERROR/MainProcess] Process 'ForkPoolWorker-2' pid:29663 exited with 'signal 9 (SIGKILL)'\n",
    );
    h.set_pods(vec![pod("api-a", unready(0), json!({}))]);
    h.reconcile("api").await;
    let status = current(&h).await;
    assert_eq!(
        counts(&status),
        [("OOMKilled".into(), 1), ("WorkerTimeout".into(), 1)]
    );
    let recent = &status.aborts.as_ref().expect("aborts").recent;
    assert_eq!(recent.len(), 2, "each once: {recent:?}");
    let hint = last_hint(&status);
    assert!(
        hint.contains("hard time limit (300s) for task shop.report") && hint.contains("not an OOM"),
        "{hint}"
    );
    let oom = warnings(&h, "OOMKilled").await;
    let note = oom[0].note.clone().unwrap_or_default();
    assert!(
        note.contains("pool child pid 29662") && note.contains("1Gi"),
        "{note}"
    );
    assert!(note.contains("--max-memory-per-child"), "{note}");
    // Sampled again later, nothing is counted twice.
    h.advance(40);
    h.reconcile("api").await;
    let status = current(&h).await;
    assert_eq!(
        counts(&status),
        [("OOMKilled".into(), 1), ("WorkerTimeout".into(), 1)]
    );
}

#[tokio::test]
async fn a_celery_worker_that_cannot_reach_its_broker_is_named_without_its_password() {
    let mut h = converged(celery_pool(json!({})), 70).await;
    let attempt = "[2026-12-06 10:53:52,693: ERROR/MainProcess] consumer: Cannot connect to \
        redis://shop:s3cret@redis.shop:6379/0: Error 111 connecting to redis.shop:6379. Connection refused..\n\
        Trying again in 2.00 seconds... (1/100)\n";
    h.logs.set("api-a", "app", false, &attempt.repeat(2));
    h.set_pods(vec![pod("api-a", unready(0), json!({}))]);
    h.reconcile("api").await;
    let status = current(&h).await;
    assert_eq!(counts(&status), [("BrokerUnreachable".into(), 1)]);
    let hint = last_hint(&status);
    assert!(hint.contains("redis://redis.shop:6379/0"), "{hint}");
    let text = serde_json::to_string(&status).unwrap_or_default();
    assert!(!text.contains("s3cret"), "{text}");
    let events = warnings(&h, "BrokerUnreachable").await;
    assert!(
        !events[0]
            .note
            .clone()
            .unwrap_or_default()
            .contains("s3cret")
    );
    assert_eq!(abort_metric(&h, "BrokerUnreachable").as_deref(), Some("1"));
}

#[tokio::test]
async fn a_warm_shutdown_cut_by_the_grace_period_names_it_and_the_task_time_limit() {
    let pool = celery_pool(json!({"policy": {"shutdown": {"gracefulTimeoutSeconds": 60}}}));
    let mut h = converged(pool, 70).await;
    let log = "[2026-12-06 10:48:04,000: INFO/MainProcess] Task shop.report[1] received\n\
               worker: Warm shutdown (MainProcess)\n";
    h.logs.set("api-a", "app", false, log);
    h.logs.set("api-a", "app", true, log);
    let killed = json!({"name": "app", "image": "example/app:1", "imageID": "", "ready": false,
        "restartCount": 0, "state": {"terminated": {"exitCode": 137, "reason": "Error",
        "startedAt": at(0), "finishedAt": at(65)}}});
    let mut terminating = pod("api-a", killed, json!({}));
    terminating.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(5).parse().expect("time")),
    );
    h.set_pods(vec![terminating]);
    h.reconcile("api").await;
    let status = current(&h).await;
    assert_eq!(counts(&status), [("GracePeriodExceeded".into(), 1)]);
    let hint = last_hint(&status);
    assert!(
        hint.contains("warm shutdown was still waiting for running tasks")
            && hint.contains("terminationGracePeriodSeconds 65s")
            && hint.contains("300s"),
        "{hint}"
    );
}
