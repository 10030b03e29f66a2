//! Abort classification from what a real kubelet writes.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use workerpool_core::aborts::classify::{KubeletEvent, Reason, classify_pod};
use workerpool_core::api::Runtime;

fn pod(container_status: Value, extra: Value) -> Pod {
    let mut value = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "api-7d9f-abcde", "namespace": "shop", "uid": "u1"},
        "status": {"phase": "Running", "containerStatuses": [container_status]}
    });
    if let (Some(base), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if k == "status" {
                for (sk, sv) in v.as_object().unwrap() {
                    base["status"][sk] = sv.clone();
                }
            } else if k == "metadata" {
                for (mk, mv) in v.as_object().unwrap() {
                    base["metadata"][mk] = mv.clone();
                }
            }
        }
    }
    serde_json::from_value(value).unwrap()
}

fn terminated(code: i32, reason: &str) -> Value {
    json!({
        "name": "app", "image": "example/app:1", "imageID": "", "ready": false, "restartCount": 4,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s restarting failed container=app"}},
        "lastState": {"terminated": {"exitCode": code, "reason": reason,
            "startedAt": "2026-11-22T10:00:00Z", "finishedAt": "2026-11-22T10:00:05Z"}}
    })
}

fn reasons(runtime: Runtime, pod: &Pod, events: &[KubeletEvent]) -> Vec<Reason> {
    classify_pod(runtime, pod, events)
        .into_iter()
        .map(|a| a.reason)
        .collect()
}

fn killing(probe: &str) -> KubeletEvent {
    KubeletEvent {
        pod: "api-7d9f-abcde".into(),
        container: KubeletEvent::container_from_field_path("spec.containers{app}"),
        reason: "Killing".into(),
        message: format!("Container app failed {probe} probe, will be restarted"),
        seen: None,
    }
}

fn at(time: &str) -> jiff::Timestamp {
    time.parse().expect("a timestamp")
}

#[test]
fn gunicorn_exit_codes() {
    let p = pod(terminated(3, "Error"), json!({}));
    assert_eq!(
        reasons(Runtime::Gunicorn, &p, &[]),
        [Reason::BootFailed, Reason::CrashLoop]
    );
    assert_eq!(
        reasons(Runtime::Uvicorn, &p, &[]),
        [Reason::BootFailed, Reason::CrashLoop]
    );
    assert_eq!(
        reasons(Runtime::Generic, &p, &[]),
        [Reason::UnexpectedExit, Reason::CrashLoop]
    );
    let p = pod(terminated(4, "Error"), json!({}));
    assert_eq!(
        reasons(Runtime::Gunicorn, &p, &[])[0],
        Reason::AppLoadFailed
    );
    assert_eq!(
        reasons(Runtime::Uvicorn, &p, &[])[0],
        Reason::UnexpectedExit
    );
}

#[test]
fn oom_killed_even_with_exit_143() {
    let p = pod(terminated(137, "OOMKilled"), json!({}));
    let aborts = classify_pod(Runtime::Gunicorn, &p, &[]);
    assert_eq!(aborts[0].reason, Reason::OOMKilled);
    assert_eq!(aborts[0].signal.as_deref(), Some("SIGKILL"));
    assert_eq!(
        aborts[0].restart_count,
        Some(3),
        "the restart that ended this run"
    );
    let p = pod(terminated(143, "OOMKilled"), json!({}));
    assert_eq!(reasons(Runtime::Gunicorn, &p, &[])[0], Reason::OOMKilled);
}

#[test]
fn probe_kills_are_told_apart_by_the_kubelet_event() {
    let p = pod(terminated(0, "Completed"), json!({}));
    assert_eq!(
        reasons(Runtime::Gunicorn, &p, &[killing("liveness")])[0],
        Reason::LivenessTimeout
    );
    let p = pod(terminated(137, "Error"), json!({}));
    assert_eq!(
        reasons(Runtime::Gunicorn, &p, &[killing("startup")])[0],
        Reason::StartupTimeout
    );
    let other_pod = KubeletEvent {
        pod: "other".into(),
        ..killing("startup")
    };
    assert_eq!(
        reasons(Runtime::Gunicorn, &p, &[other_pod])[0],
        Reason::Signaled
    );
}

#[test]
fn a_probe_kill_explains_only_the_run_it_happened_in() {
    // The run ended at 10:00:05 after starting at 10:00:00.
    let p = pod(terminated(0, "Completed"), json!({}));
    let during = KubeletEvent {
        seen: Some((at("2026-11-22T10:00:04Z"), at("2026-11-22T10:00:04Z"))),
        ..killing("liveness")
    };
    assert_eq!(
        reasons(Runtime::Gunicorn, &p, &[during])[0],
        Reason::LivenessTimeout
    );
    // Fifteen minutes earlier, or a series that ended long before this run started.
    let earlier = KubeletEvent {
        seen: Some((at("2026-11-22T09:40:00Z"), at("2026-11-22T09:45:00Z"))),
        ..killing("liveness")
    };
    assert_eq!(
        reasons(Runtime::Gunicorn, &p, &[earlier])[0],
        Reason::UnexpectedExit
    );
    let later = KubeletEvent {
        seen: Some((at("2026-11-22T10:03:00Z"), at("2026-11-22T10:03:00Z"))),
        ..killing("liveness")
    };
    assert_eq!(
        reasons(Runtime::Gunicorn, &p, &[later])[0],
        Reason::UnexpectedExit
    );
    // A series that began before the run and was last seen during it.
    let series = KubeletEvent {
        seen: Some((at("2026-11-22T09:40:00Z"), at("2026-11-22T10:00:05Z"))),
        ..killing("liveness")
    };
    assert_eq!(
        reasons(Runtime::Gunicorn, &p, &[series])[0],
        Reason::LivenessTimeout
    );
}

#[test]
fn aggregated_kubelet_messages_are_recognised() {
    let p = pod(terminated(0, "Completed"), json!({}));
    let combined = |reason: &str, message: &str| KubeletEvent {
        reason: reason.into(),
        message: format!("(combined from similar events): {message}"),
        ..killing("startup")
    };
    let events = [
        combined(
            "Unhealthy",
            "Startup probe failed: Get \"http://10.0.0.9:8000/healthz\": connection refused",
        ),
        combined(
            "Killing",
            "Container app failed startup probe, will be restarted",
        ),
    ];
    let aborts = classify_pod(Runtime::Gunicorn, &p, &events);
    assert_eq!(aborts[0].reason, Reason::StartupTimeout);
    assert_eq!(
        aborts[0].message.as_deref(),
        Some("Startup probe failed: Get \"http://10.0.0.9:8000/healthz\": connection refused")
    );
}

#[test]
fn a_boot_failure_exit_is_not_turned_into_a_probe_kill_by_a_killing_event() {
    // A probe kill ends in SIGTERM, which gunicorn answers with 0; 3 and 4 are its own verdicts.
    let p = pod(terminated(3, "Error"), json!({}));
    assert_eq!(
        reasons(Runtime::Gunicorn, &p, &[killing("startup")])[0],
        Reason::BootFailed
    );
    let p = pod(terminated(4, "Error"), json!({}));
    assert_eq!(
        reasons(Runtime::Gunicorn, &p, &[killing("liveness")])[0],
        Reason::AppLoadFailed
    );
}

#[test]
fn sigkill_while_terminating_is_grace_period_exceeded() {
    let status = json!({
        "name": "app", "image": "example/app:1", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 137, "reason": "Error"}}
    });
    let p = pod(
        status.clone(),
        json!({"metadata": {"deletionTimestamp": "2026-11-22T10:00:00Z"}}),
    );
    let aborts = classify_pod(Runtime::Gunicorn, &p, &[]);
    assert_eq!(aborts[0].reason, Reason::GracePeriodExceeded);
    assert_eq!(aborts[0].restart_count, Some(0));
    let clean = pod(
        json!({"name": "app", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
               "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}),
        json!({"metadata": {"deletionTimestamp": "2026-11-22T10:00:00Z"}}),
    );
    assert!(classify_pod(Runtime::Gunicorn, &clean, &[]).is_empty());
}

#[test]
fn a_deletion_exit_is_a_shutdown_and_the_run_before_it_still_counts() {
    let deleting = json!({"metadata": {"deletionTimestamp": "2026-11-22T10:00:00Z"}});
    let ended = |code: i32, reason: &str| {
        json!({"name": "app", "image": "x", "imageID": "", "ready": false, "restartCount": 2,
            "state": {"terminated": {"exitCode": code, "reason": reason}},
            "lastState": {"terminated": {"exitCode": 3, "reason": "Error"}}})
    };
    // SIGTERM's default action on scale-down, and the kubelet's OOMKilled of kubernetes#140716.
    for (code, reason) in [(143, "Error"), (0, "Completed"), (143, "OOMKilled")] {
        let p = pod(ended(code, reason), deleting.clone());
        let aborts = classify_pod(Runtime::Gunicorn, &p, &[]);
        assert_eq!(
            aborts.iter().map(|a| a.reason).collect::<Vec<_>>(),
            [Reason::BootFailed],
            "exit {code} ({reason}) while deleting; the earlier exit 3 stays"
        );
        assert_eq!(aborts[0].restart_count, Some(1));
    }
    // A SIGKILL at the end of the grace period is an abort, also after earlier restarts.
    let p = pod(ended(137, "Error"), deleting);
    let aborts = classify_pod(Runtime::Gunicorn, &p, &[]);
    assert_eq!(
        aborts
            .iter()
            .map(|a| (a.reason, a.restart_count))
            .collect::<Vec<_>>(),
        [
            (Reason::BootFailed, Some(1)),
            (Reason::GracePeriodExceeded, Some(2))
        ]
    );
    // Outside a deletion, SIGTERM is a signal nobody in Kubernetes sent.
    let p = pod(terminated(143, "Error"), json!({}));
    assert_eq!(reasons(Runtime::Gunicorn, &p, &[])[0], Reason::Signaled);
}

#[test]
fn only_128_plus_a_signal_number_is_a_signal() {
    for code in [193, 200, 255] {
        let aborts = classify_pod(
            Runtime::Gunicorn,
            &pod(terminated(code, "Error"), json!({})),
            &[],
        );
        assert_eq!(
            (aborts[0].reason, aborts[0].signal.as_deref()),
            (Reason::UnexpectedExit, None),
            "exit {code}"
        );
    }
    let aborts = classify_pod(
        Runtime::Gunicorn,
        &pod(terminated(192, "Error"), json!({})),
        &[],
    );
    assert_eq!(
        (aborts[0].reason, aborts[0].signal.as_deref()),
        (Reason::Signaled, Some("signal 64"))
    );
}

#[test]
fn a_run_that_ends_inside_its_startup_window_is_a_boot_failure_for_any_runtime() {
    // uvicorn exits 1 on an import error, 3 s after it started; its startup probe allows 60 s.
    let status = json!({"name": "app", "image": "x", "imageID": "", "ready": false, "restartCount": 2,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
            "startedAt": "2026-11-22T10:00:02Z", "finishedAt": "2026-11-22T10:00:05Z"}}});
    let probed = json!({"spec": {"containers": [{"name": "app", "image": "x",
        "startupProbe": {"httpGet": {"path": "/healthz", "port": 8000}, "periodSeconds": 5, "failureThreshold": 12}}]}});
    let mut with_probe: Value = serde_json::to_value(pod(status.clone(), json!({}))).unwrap();
    with_probe["spec"] = probed["spec"].clone();
    let with_probe: Pod = serde_json::from_value(with_probe).unwrap();
    for runtime in [Runtime::Uvicorn, Runtime::Generic] {
        let aborts = classify_pod(runtime, &with_probe, &[]);
        assert_eq!(aborts[0].reason, Reason::BootFailed, "{runtime:?}");
        assert_eq!(
            aborts[0].message.as_deref(),
            Some("exited 1 3s after it started, inside its 60s boot window")
        );
    }
    // Without a startup probe nothing says how long a boot may take.
    let aborts = classify_pod(Runtime::Uvicorn, &pod(status, json!({})), &[]);
    assert_eq!(aborts[0].reason, Reason::UnexpectedExit);
}

#[test]
fn other_signals_and_exits_name_their_code() {
    let aborts = classify_pod(
        Runtime::Gunicorn,
        &pod(terminated(139, "Error"), json!({})),
        &[],
    );
    assert_eq!(
        (aborts[0].reason, aborts[0].signal.as_deref()),
        (Reason::Signaled, Some("SIGSEGV"))
    );
    let aborts = classify_pod(
        Runtime::Gunicorn,
        &pod(terminated(1, "Error"), json!({})),
        &[],
    );
    assert_eq!(
        (
            aborts[0].reason,
            aborts[0].exit_code,
            aborts[0].signal.clone()
        ),
        (Reason::UnexpectedExit, Some(1), None)
    );
}

#[test]
fn init_containers_are_classified_with_their_own_name_as_plain_programs() {
    let app_waiting = json!({"name": "app", "image": "example/app:1", "imageID": "", "ready": false,
        "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}});
    let migrate = json!({"name": "migrate", "image": "example/app:1", "imageID": "", "ready": false,
        "restartCount": 4,
        "state": {"waiting": {"reason": "CrashLoopBackOff",
            "message": "back-off 1m20s restarting failed container=migrate pod=api-7d9f-abcde_shop(u1)"}},
        "lastState": {"terminated": {"exitCode": 3, "reason": "Error",
            "startedAt": "2026-11-22T10:00:00Z", "finishedAt": "2026-11-22T10:00:02Z"}}});
    let fetched = json!({"name": "fetch", "image": "busybox", "imageID": "", "ready": true,
        "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed",
            "startedAt": "2026-11-22T09:59:58Z", "finishedAt": "2026-11-22T09:59:59Z"}}});
    let p = pod(
        app_waiting,
        json!({"status": {"phase": "Pending", "initContainerStatuses": [fetched, migrate]}}),
    );
    let aborts = classify_pod(Runtime::Gunicorn, &p, &[]);
    let found: Vec<(Option<&str>, Reason, Option<i32>)> = aborts
        .iter()
        .map(|a| (a.container.as_deref(), a.reason, a.exit_code))
        .collect();
    // Exit 3 of a migration is no gunicorn boot failure; the finished `fetch` is no abort.
    assert_eq!(
        found,
        [
            (Some("migrate"), Reason::UnexpectedExit, Some(3)),
            (Some("migrate"), Reason::CrashLoop, None),
        ]
    );
    assert_eq!(aborts[0].restart_count, Some(3));
    // The kubelet names an init container's Events by `spec.initContainers{...}`.
    assert_eq!(
        KubeletEvent::container_from_field_path("spec.initContainers{migrate}").as_deref(),
        Some("migrate")
    );
}

#[test]
fn waiting_reasons() {
    for (waiting, reason) in [
        ("ImagePullBackOff", Reason::ImagePullFailed),
        ("ErrImagePull", Reason::ImagePullFailed),
        ("InvalidImageName", Reason::ImagePullFailed),
        ("CreateContainerConfigError", Reason::ConfigError),
        ("CreateContainerError", Reason::ConfigError),
    ] {
        let status = json!({"name": "app", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                            "state": {"waiting": {"reason": waiting, "message": "m"}}});
        assert_eq!(
            reasons(Runtime::Gunicorn, &pod(status, json!({})), &[]),
            [reason],
            "{waiting}"
        );
    }
}

#[test]
fn pod_level_reasons() {
    let healthy = json!({"name": "app", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
                         "state": {"running": {"startedAt": "2026-11-22T10:00:00Z"}}});
    assert!(reasons(Runtime::Gunicorn, &pod(healthy.clone(), json!({})), &[]).is_empty());
    let evicted = pod(
        healthy.clone(),
        json!({"status": {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}}),
    );
    assert_eq!(reasons(Runtime::Gunicorn, &evicted, &[]), [Reason::Evicted]);
    // The kubelet ends an evicted pod's containers with 137 (reason ContainerStatusUnknown when it
    // lost them): the eviction is counted once, as Evicted; an earlier run's abort still counts.
    let killed_by_eviction = pod(
        json!({"name": "app", "image": "x", "imageID": "", "ready": false, "restartCount": 1,
               "state": {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                                        "message": "The container could not be located when the pod was terminated"}},
               "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                                            "startedAt": "2026-11-22T10:00:00Z", "finishedAt": "2026-11-22T10:05:00Z"}}}),
        json!({"status": {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}}),
    );
    assert_eq!(
        reasons(Runtime::Gunicorn, &killed_by_eviction, &[]),
        [Reason::Evicted, Reason::OOMKilled]
    );
    let pending = pod(
        healthy,
        json!({"status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient memory."}
        ]}}),
    );
    let aborts = classify_pod(Runtime::Gunicorn, &pending, &[]);
    assert_eq!(aborts[0].reason, Reason::Unschedulable);
    assert!(
        aborts[0]
            .message
            .as_deref()
            .unwrap()
            .contains("Insufficient memory")
    );
}

mod arbitrary_status {
    use super::*;
    use jiff::Timestamp;
    use proptest::prelude::*;
    use workerpool_core::aborts::detect;
    use workerpool_core::aborts::podview::PodView;

    fn text() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            prop::sample::select(vec![
                "OOMKilled",
                "Error",
                "Completed",
                "CrashLoopBackOff",
                "ErrImagePull",
                "ImagePullBackOff",
                "CreateContainerConfigError",
                "ContainerCreating",
                "Evicted",
                "",
            ])
            .prop_map(|s| Some(s.to_string())),
            ".{0,12}".prop_map(Some),
        ]
    }

    fn terminated() -> impl Strategy<Value = Value> {
        (any::<i32>(), text(), any::<bool>()).prop_map(|(code, reason, finished)| {
            let mut t = json!({"exitCode": code});
            if let Some(r) = reason {
                t["reason"] = json!(r);
            }
            if finished {
                t["finishedAt"] = json!("2026-11-22T10:00:00Z");
            }
            t
        })
    }

    fn state() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!({})),
            Just(json!({"running": {"startedAt": "2026-11-22T09:59:00Z"}})),
            text().prop_map(|r| json!({"waiting": {"reason": r}})),
            terminated().prop_map(|t| json!({"terminated": t})),
        ]
    }

    fn container() -> impl Strategy<Value = Value> {
        (
            prop::sample::select(vec!["app", "sidecar"]),
            any::<i32>(),
            any::<bool>(),
            state(),
            state(),
        )
            .prop_map(|(name, restarts, ready, state, last)| {
                json!({"name": name, "image": "x", "imageID": "", "ready": ready,
                       "restartCount": restarts, "state": state, "lastState": last})
            })
    }

    fn arbitrary_pod() -> impl Strategy<Value = Pod> {
        (
            prop::collection::vec(container(), 0..4),
            prop::collection::vec(container(), 0..3),
            text(),
            text(),
            any::<bool>(),
        )
            .prop_map(|(containers, init, reason, condition_reason, deleting)| {
                let mut value = json!({
                    "metadata": {"name": "api-x", "uid": "u"},
                    "status": {"containerStatuses": containers, "initContainerStatuses": init, "reason": reason,
                               "conditions": [{"type": "PodScheduled", "status": "False", "reason": condition_reason}]}
                });
                if deleting {
                    value["metadata"]["deletionTimestamp"] = json!("2026-11-22T10:00:01Z");
                }
                serde_json::from_value(value).expect("pod")
            })
    }

    fn event() -> impl Strategy<Value = KubeletEvent> {
        (
            prop::sample::select(vec!["Killing", "Unhealthy", "BackOff"]),
            prop::sample::select(vec![
                "Container app failed liveness probe, will be restarted",
                "Container app failed startup probe, will be restarted",
                "Startup probe failed: connection refused",
                "Liveness probe failed: timeout",
                "",
            ]),
            any::<bool>(),
        )
            .prop_map(|(reason, message, named)| KubeletEvent {
                pod: "api-x".into(),
                container: named.then(|| "app".to_string()),
                reason: reason.into(),
                message: message.into(),
                seen: None,
            })
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_bounded(
            pod in arbitrary_pod(),
            events in prop::collection::vec(event(), 0..4),
            runtime in prop::sample::select(vec![Runtime::Gunicorn, Runtime::Uvicorn, Runtime::Generic]),
        ) {
            let status = pod.status.as_ref();
            let containers = status.and_then(|s| s.container_statuses.as_ref()).map_or(0, Vec::len)
                + status.and_then(|s| s.init_container_statuses.as_ref()).map_or(0, Vec::len);
            let aborts = classify_pod(runtime, &pod, &events);
            // At most two terminations (the current run's and the one before the last restart)
            // and one waiting state per container or init container, plus two pod-level.
            prop_assert!(aborts.len() <= 3 * containers + 2);
            for abort in &aborts {
                if let Some(code) = abort.exit_code {
                    prop_assert_eq!(abort.signal.is_some(), (129..=192).contains(&code));
                }
            }
            let now: Timestamp = "2026-11-22T10:05:00Z".parse().expect("time");
            let found = detect::pod_aborts(runtime, &[&PodView::from(&pod)], &events, now);
            prop_assert!(found.found.len() <= aborts.len());
        }
    }
}
