//! The init Job and the circuit breaker through the reconcile pipeline, on the sandbox's API server.

mod harness;

use harness::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::json;
use workerpool_core::api::{InitPhase, WorkerPoolStatus};

fn with_init(replicas: i32) -> serde_json::Value {
    json!({"replicas": replicas, "policy": {"init": {"command": ["python", "manage.py", "migrate"]}}})
}

fn image(deployment: &Deployment) -> String {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers[0].image.clone())
        .unwrap_or_default()
}

async fn event_reasons(h: &Harness) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(h.client.clone(), NS);
    api.list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

async fn status(h: &Harness) -> WorkerPoolStatus {
    h.pool("api").await.status.expect("status")
}

async fn only_job_name(h: &Harness) -> String {
    let jobs = h.jobs().await;
    assert_eq!(jobs.len(), 1, "one init Job");
    jobs[0].metadata.name.clone().expect("name")
}

fn complete() -> serde_json::Value {
    json!({"type": "Complete", "status": "True"})
}

#[tokio::test]
async fn the_init_job_runs_before_the_first_pods() {
    let mut h = harness(vec![pool("api", with_init(4))], vec![]).await;
    h.reconcile("api").await;
    assert!(h.deployment("api").await.is_none(), "no pods before init");
    let job = only_job_name(&h).await;
    let revision = status(&h).await.revision.expect("revision");
    assert!(
        job.starts_with(&format!("api-init-{revision}-")),
        "named by its revision: {job}"
    );
    let s = status(&h).await;
    let reconciling = condition(&s, "Reconciling");
    assert_eq!(
        (reconciling.status.as_str(), reconciling.reason.as_str()),
        ("True", "InitRunning")
    );
    assert_eq!(s.init.as_ref().map(|i| i.phase), Some(InitPhase::Running));
    assert!(event_reasons(&h).await.contains(&"InitStarted".to_string()));

    // While the Job runs, nothing is written (one read confirms no Deployment exists yet).
    h.reconcile("api").await;
    assert!(h.writes().is_empty(), "{:?}", h.writes());
    assert!(h.requests.total() <= 1);

    h.finish_job(&job, complete()).await;
    h.reconcile("api").await;
    let deployment = h.deployment("api").await.expect("deployment after init");
    assert_eq!(replicas(&deployment), 2);
    let s = status(&h).await;
    assert_eq!(s.init.as_ref().map(|i| i.phase), Some(InitPhase::Succeeded));
    assert!(
        event_reasons(&h)
            .await
            .contains(&"InitSucceeded".to_string())
    );

    // Converged, with the finished Job cleaned up by its TTL: not a single request.
    h.all_pods_ready("api").await;
    h.reconcile("api").await;
    h.all_pods_ready("api").await;
    h.reconcile("api").await;
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(h.client.clone(), NS);
    jobs.delete(&job, &Default::default())
        .await
        .expect("delete job");
    h.sync_caches().await;
    h.reconcile("api").await;
    h.reconcile("api").await;
    assert_eq!(h.requests.total(), 0, "{:?}", h.writes());
    assert_eq!(replicas(&h.deployment("api").await.expect("d")), 4);
}

/// A pool of 2 with an init Job: the Job succeeded and the pods are Ready. Also its Job's name.
async fn serving_after_init() -> (Harness, String) {
    let mut h = harness(vec![pool("api", with_init(2))], vec![]).await;
    h.reconcile("api").await;
    let first = only_job_name(&h).await;
    h.finish_job(&first, complete()).await;
    h.reconcile("api").await;
    h.all_pods_ready("api").await;
    h.reconcile("api").await;
    (h, first)
}

#[tokio::test]
async fn a_failed_init_keeps_the_old_revision_serving_until_the_spec_changes() {
    let (mut h, first) = serving_after_init().await;
    assert_eq!(
        image(&h.deployment("api").await.expect("d")),
        "example/app:1"
    );

    // New image: a new Job; the Deployment keeps the running template.
    h.patch_spec(
        "api",
        json!({"template": {"spec": {"containers": [{"name": "app", "image": "example/app:2",
            "ports": [{"name": "http", "containerPort": 8000}]}]}}}),
    )
    .await;
    h.reconcile("api").await;
    let jobs = h.jobs().await;
    let second = jobs
        .iter()
        .filter_map(|j| j.metadata.name.clone())
        .find(|n| n != &first)
        .expect("a Job for the new revision");
    assert_eq!(
        jobs.iter()
            .find(|j| j.metadata.name.as_deref() == Some(second.as_str()))
            .and_then(|j| j.spec.as_ref())
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers[0].image.clone())
            .as_deref(),
        Some("example/app:2"),
        "the Job runs the new image"
    );
    assert_eq!(
        image(&h.deployment("api").await.expect("d")),
        "example/app:1"
    );

    h.finish_job(
        &second,
        json!({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
               "message": "Job has reached the specified backoff limit"}),
    )
    .await;
    h.reconcile("api").await;
    let s = status(&h).await;
    assert_stalled(
        &s,
        "InitFailed",
        "Job has reached the specified backoff limit",
    );
    assert_eq!(s.init.as_ref().map(|i| i.phase), Some(InitPhase::Failed));
    assert_eq!(
        image(&h.deployment("api").await.expect("d")),
        "example/app:1"
    );
    assert!(event_reasons(&h).await.contains(&"InitFailed".to_string()));
    h.reconcile("api").await;
    assert_eq!(h.requests.total(), 0, "a stalled pool writes nothing more");

    // A scale is no spec change: the failed Job is not run again.
    h.patch_spec("api", json!({"replicas": 3})).await;
    h.reconcile("api").await;
    assert_eq!(h.jobs().await.len(), 2, "no new Job on a scale");
    assert_stalled(&status(&h).await, "InitFailed", "backoff limit");

    // A change of the spec retries with a new Job.
    h.patch_spec("api", json!({"policy": {"init": {"timeoutSeconds": 600}}}))
        .await;
    h.reconcile("api").await;
    let third = h
        .jobs()
        .await
        .into_iter()
        .filter_map(|j| j.metadata.name)
        .find(|n| n != &first && n != &second)
        .expect("a retry Job");
    h.finish_job(&third, complete()).await;
    h.reconcile("api").await;
    assert_eq!(
        image(&h.deployment("api").await.expect("d")),
        "example/app:2"
    );
    let stalled = condition(&status(&h).await, "Stalled").status.clone();
    assert_eq!(stalled, "False");
}

/// A pod of the current revision crash-looping with gunicorn's exit 3.
fn failing_pod(name: &str, revision: &str, finished: &str) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"),
            "labels": {"workerpool.dev/pool": "api"},
            "annotations": {"workerpool.dev/revision": revision, "workerpool.dev/runtime": "gunicorn"}},
        // The startup probe the operator applied for a 60 s boot: the window of a run's boot.
        "spec": {"containers": [{"name": "app", "image": "x",
            "startupProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                             "periodSeconds": 5, "failureThreshold": 12}}]},
        "status": {"phase": "Running", "containerStatuses": [{
            "name": "app", "image": "x", "imageID": "", "ready": false, "restartCount": 1,
            "state": {"running": {"startedAt": finished}},
            "lastState": {"terminated": {"exitCode": 3, "reason": "Error", "finishedAt": finished}}}]}
    }))
    .expect("pod")
}

fn revision_of(deployment: &Deployment) -> String {
    workerpool_core::pool::derive::revision_in(deployment)
        .expect("revision annotation")
        .to_string()
}

#[tokio::test]
async fn boot_failures_open_the_circuit_and_a_spec_change_but_a_scale_closes_it() {
    let mut h = harness(vec![pool("api", json!({"replicas": 6}))], vec![]).await;
    h.reconcile("api").await;
    h.all_pods_ready("api").await;
    h.reconcile("api").await;
    let deployment = h.deployment("api").await.expect("d");
    assert_eq!(replicas(&deployment), 4);
    let revision = revision_of(&deployment);

    h.advance(60);
    let finished = (h.now() - jiff::SignedDuration::from_secs(10)).to_string();
    h.set_pods(
        (0..3)
            .map(|i| failing_pod(&format!("api-{i}"), &revision, &finished))
            .collect(),
    );
    h.all_pods_ready("api").await;
    h.reconcile("api").await;
    let s = status(&h).await;
    assert_stalled(&s, "BootFailureThreshold", "3 boot failures of revision");
    let deployment = h.deployment("api").await.expect("d");
    assert_eq!(replicas(&deployment), 4, "the ramp stopped at 4 of 6");
    assert_eq!(deployment.spec.as_ref().and_then(|s| s.paused), Some(true));
    assert!(
        event_reasons(&h)
            .await
            .contains(&"BootFailureThreshold".to_string())
    );
    h.reconcile("api").await;
    assert_eq!(h.requests.total(), 0, "an open circuit writes nothing more");

    // A scale bumps the generation but changes nothing the pods run: it stays open.
    h.patch_spec("api", json!({"replicas": 5})).await;
    h.all_pods_ready("api").await;
    h.reconcile("api").await;
    let s = status(&h).await;
    assert_stalled(&s, "BootFailureThreshold", "3 boot failures of revision");
    assert_eq!(s.circuit.as_ref().map(|c| c.open), Some(true));
    assert_eq!(replicas(&h.deployment("api").await.expect("d")), 4);

    // Any other spec change closes it; the earlier failures no longer count.
    h.patch_spec(
        "api",
        json!({"template": {"metadata": {"annotations": {"fix": "1"}},
            "spec": {"containers": [{"name": "app", "image": "example/app:2",
            "ports": [{"name": "http", "containerPort": 8000}]}]}}}),
    )
    .await;
    h.all_pods_ready("api").await;
    h.reconcile("api").await;
    let s = status(&h).await;
    assert_eq!(condition(&s, "Stalled").status, "False");
    assert_eq!(s.circuit.as_ref().map(|c| c.open), Some(false));
    let deployment = h.deployment("api").await.expect("d");
    assert_eq!(deployment.spec.as_ref().and_then(|s| s.paused), Some(false));
    assert_eq!(replicas(&deployment), 5);
    assert!(
        event_reasons(&h)
            .await
            .contains(&"CircuitClosed".to_string())
    );
}

#[tokio::test]
async fn waiting_on_init_leaves_the_live_template_and_other_managers_fields_alone() {
    let (mut h, first) = serving_after_init().await;

    // `kubectl rollout restart` writes an annotation into the template as a manager of its own.
    let restarted = "kubectl.kubernetes.io/restartedAt";
    let deployments: Api<Deployment> = Api::namespaced(h.client.clone(), NS);
    deployments
        .patch(
            "api",
            &kube::api::PatchParams {
                field_manager: Some("kubectl-rollout".into()),
                ..Default::default()
            },
            &kube::api::Patch::Merge(json!({"spec": {"template": {"metadata": {
                "annotations": {restarted: "2026-11-22T10:00:00Z"}}}}})),
        )
        .await
        .expect("rollout restart");
    h.sync_caches().await;

    // A new image waits on its init Job; a scale-down meanwhile changes only the replicas.
    h.patch_spec(
        "api",
        json!({"replicas": 1, "template": {"spec": {"containers": [{"name": "app",
            "image": "example/app:2", "ports": [{"name": "http", "containerPort": 8000}]}]}}}),
    )
    .await;
    h.reconcile("api").await;
    let held = h.deployment("api").await.expect("d");
    assert_eq!(image(&held), "example/app:1", "the live template is kept");
    assert_eq!(replicas(&held), 1, "the scale-down goes through");
    let annotations = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default()
    };
    assert!(annotations(&held).contains_key(restarted));
    let ours_claim_it = held
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some("workerpool-operator"))
        .any(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.to_string().contains(restarted))
        });
    assert!(!ours_claim_it, "the operator took kubectl's annotation");

    // The Job done, the new template is applied, and the annotation kubectl set survives.
    let second = h
        .jobs()
        .await
        .into_iter()
        .filter_map(|j| j.metadata.name)
        .find(|n| n != &first)
        .expect("the new revision's Job");
    h.finish_job(&second, complete()).await;
    h.reconcile("api").await;
    let rolled = h.deployment("api").await.expect("d");
    assert_eq!(image(&rolled), "example/app:2");
    assert!(annotations(&rolled).contains_key(restarted));
}

#[tokio::test]
async fn a_uvicorn_exit_1_crash_loop_opens_the_circuit() {
    let mut h = harness(
        vec![pool("api", json!({"replicas": 6, "runtime": "uvicorn"}))],
        vec![],
    )
    .await;
    h.reconcile("api").await;
    h.all_pods_ready("api").await;
    h.reconcile("api").await;
    let revision = revision_of(&h.deployment("api").await.expect("d"));

    h.advance(60);
    let finished = (h.now() - jiff::SignedDuration::from_secs(10)).to_string();
    let started = (h.now() - jiff::SignedDuration::from_secs(12)).to_string();
    let pods = (0..3)
        .map(|i| {
            let mut pod = failing_pod(&format!("api-{i}"), &revision, &finished);
            let status = pod
                .status
                .as_mut()
                .and_then(|s| s.container_statuses.as_mut());
            if let Some(container) = status.and_then(|c| c.first_mut()) {
                let ended = container
                    .last_state
                    .as_mut()
                    .and_then(|s| s.terminated.as_mut())
                    .expect("terminated");
                ended.exit_code = 1;
                ended.started_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    started.parse().expect("time"),
                ));
            }
            pod
        })
        .collect();
    h.set_pods(pods);
    h.all_pods_ready("api").await;
    h.reconcile("api").await;
    let s = status(&h).await;
    assert_stalled(&s, "BootFailureThreshold", "3 boot failures of revision");
}

#[tokio::test]
async fn pods_crash_looping_on_oom_kills_after_serving_do_not_open_the_circuit() {
    let mut h = harness(vec![pool("api", json!({"replicas": 6}))], vec![]).await;
    h.reconcile("api").await;
    h.all_pods_ready("api").await;
    h.reconcile("api").await;
    let revision = revision_of(&h.deployment("api").await.expect("d"));

    h.advance(120);
    let started = (h.now() - jiff::SignedDuration::from_secs(100)).to_string();
    let finished = (h.now() - jiff::SignedDuration::from_secs(10)).to_string();
    let pods = (0..4)
        .map(|i| {
            let mut value =
                serde_json::to_value(failing_pod(&format!("api-{i}"), &revision, &finished))
                    .expect("pod");
            let status = &mut value["status"]["containerStatuses"][0];
            status["state"] = json!({"waiting": {"reason": "CrashLoopBackOff"}});
            status["lastState"] = json!({"terminated": {"exitCode": 137, "reason": "OOMKilled",
                "startedAt": started, "finishedAt": finished}});
            serde_json::from_value(value).expect("pod")
        })
        .collect();
    h.set_pods(pods);
    h.reconcile("api").await;
    let s = status(&h).await;
    let stalled = s
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .expect("Stalled");
    assert_eq!(stalled.status, "False", "{}", stalled.message);
    assert!(
        s.circuit.as_ref().is_none_or(|c| !c.open),
        "{:?}",
        s.circuit
    );
    let counts = s
        .aborts
        .as_ref()
        .map(|a| a.counts.clone())
        .unwrap_or_default();
    assert!(
        counts
            .iter()
            .any(|c| c.reason == "OOMKilled" && c.count == 4)
            && counts
                .iter()
                .any(|c| c.reason == "CrashLoop" && c.count == 4),
        "{counts:?}"
    );
}
