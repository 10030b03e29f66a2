//! Classification throughput: pods of a pool (healthy, crash-looping, OOM-killed, probe-killed)
//! through `detect::pod_aborts`, as one reconcile does. Figures are in docs/benchmarks.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use std::hint::black_box;
use workerpool_core::aborts::classify::KubeletEvent;
use workerpool_core::aborts::detect;
use workerpool_core::aborts::podview::PodView;
use workerpool_core::api::Runtime;

const PODS: usize = 1000;

fn pod(i: usize) -> Pod {
    let container = match i % 4 {
        0 => json!({"name": "app", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
                    "state": {"running": {"startedAt": "2026-11-22T10:00:00Z"}}}),
        1 => json!({"name": "app", "image": "x", "imageID": "", "ready": false, "restartCount": 5,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2m40s"}},
                    "lastState": {"terminated": {"exitCode": 3, "reason": "Error",
                        "startedAt": "2026-11-22T10:00:00Z", "finishedAt": "2026-11-22T10:00:04Z"}}}),
        2 => json!({"name": "app", "image": "x", "imageID": "", "ready": true, "restartCount": 1,
                    "state": {"running": {"startedAt": "2026-11-22T10:01:00Z"}},
                    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                        "startedAt": "2026-11-22T10:00:00Z", "finishedAt": "2026-11-22T10:00:59Z"}}}),
        _ => json!({"name": "app", "image": "x", "imageID": "", "ready": false, "restartCount": 1,
                    "state": {"running": {"startedAt": "2026-11-22T10:01:00Z"}},
                    "lastState": {"terminated": {"exitCode": 0, "reason": "Completed",
                        "startedAt": "2026-11-22T10:00:00Z", "finishedAt": "2026-11-22T10:00:59Z"}}}),
    };
    let value = json!({
        "metadata": {"name": format!("api-{i}"), "uid": format!("uid-{i}"),
                     "labels": {"workerpool.dev/pool": "api", "pod-template-hash": "rev1"}},
        "spec": {"containers": [{"name": "app", "image": "example/app:1",
            "startupProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                             "periodSeconds": 5, "failureThreshold": 12}}]},
        "status": {"phase": "Running", "containerStatuses": [container]}
    });
    match serde_json::from_value(value) {
        Ok(pod) => pod,
        Err(e) => panic!("bench pod: {e}"),
    }
}

fn classify_pods(c: &mut Criterion) {
    // As the controller's cache holds them.
    let pods: Vec<PodView> = (0..PODS).map(|i| PodView::from(&pod(i))).collect();
    let refs: Vec<&PodView> = pods.iter().collect();
    let events: Vec<KubeletEvent> = (0..PODS)
        .filter(|i| i % 4 == 3)
        .map(|i| KubeletEvent {
            pod: format!("api-{i}"),
            container: Some("app".into()),
            reason: "Killing".into(),
            message: "Container app failed liveness probe, will be restarted".into(),
            seen: None,
        })
        .take(16)
        .collect();
    let now: jiff::Timestamp = match "2026-11-22T10:05:00Z".parse() {
        Ok(t) => t,
        Err(e) => panic!("time: {e}"),
    };
    let mut group = c.benchmark_group("classify");
    group.throughput(Throughput::Elements(PODS as u64));
    group.bench_function("1000 pods of one pool", |b| {
        b.iter(|| detect::pod_aborts(Runtime::Gunicorn, black_box(&refs), black_box(&events), now))
    });
    group.finish();
}

criterion_group!(benches, classify_pods);
criterion_main!(benches);
