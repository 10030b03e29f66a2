//! End-to-end scenarios on a real cluster with the operator installed (see e2e/run.sh).
//!
//! Ignored by a plain `cargo test`: the suite needs a kind cluster, the chart installed and the
//! images `busybox:1.36` and `python:3.12-alpine` pullable; `e2e/run.sh` runs it with `--ignored`.
//! Each scenario uses its own namespace,
//! real pods with inline commands, and asserts on the WorkerPool's status as a user reads it.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use workerpool_core::api::{WorkerPool, WorkerPoolStatus};

struct Scenario {
    client: Client,
    namespace: String,
}

impl Scenario {
    async fn new(name: &str) -> Scenario {
        let client = Client::try_default()
            .await
            .expect("a kubeconfig for the e2e cluster");
        let namespace = format!("e2e-{name}");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let object: Namespace =
            serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("namespace");
        match namespaces.create(&PostParams::default(), &object).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("creating namespace {namespace}: {e}"),
        }
        Scenario { client, namespace }
    }

    fn pools(&self) -> Api<WorkerPool> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn apply(&self, name: &str, spec: Value) {
        let pool = json!({
            "apiVersion": "workerpool.dev/v1alpha1", "kind": "WorkerPool",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec
        });
        self.pools()
            .patch(
                name,
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&pool),
            )
            .await
            .expect("apply the pool");
    }

    async fn status(&self, name: &str) -> Option<WorkerPoolStatus> {
        self.pools().get(name).await.ok()?.status
    }

    /// Polls the pool's status until `done` holds, or fails with the last status seen.
    async fn wait_for(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&WorkerPoolStatus) -> bool,
    ) -> WorkerPoolStatus {
        let start = Instant::now();
        loop {
            let status = self.status(name).await;
            if let Some(s) = status.as_ref().filter(|s| done(s)) {
                return s.clone();
            }
            assert!(
                start.elapsed() < timeout,
                "{name}: timed out waiting for {what}; last status: {status:#?}"
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Waits until the pool's ledger counts at least one abort of this reason.
    async fn wait_for_abort(
        &self,
        name: &str,
        reason: &str,
        timeout: Duration,
    ) -> WorkerPoolStatus {
        self.wait_for(name, reason, timeout, |st| counted(st, reason) >= 1)
            .await
    }

    async fn pods(&self, pool: &str) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        api.list(&ListParams::default().labels(&format!("workerpool.dev/pool={pool}")))
            .await
            .expect("list pods")
            .items
    }

    async fn cleanup(self) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let _ = namespaces
            .delete(&self.namespace, &DeleteParams::default())
            .await;
    }
}

fn condition(status: &WorkerPoolStatus, type_: &str) -> Option<(String, String)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn counted(status: &WorkerPoolStatus, reason: &str) -> i64 {
    status
        .aborts
        .as_ref()
        .and_then(|a| a.counts.iter().find(|c| c.reason == reason))
        .map_or(0, |c| c.count)
}

/// busybox serving /healthz on port 8000 after `boot_seconds`.
fn web(boot_seconds: u32, prefix: &str) -> Value {
    json!({
        "name": "app", "image": "busybox:1.36",
        "command": ["sh", "-c", format!(
            "{prefix} sleep {boot_seconds}; mkdir -p /srv && echo ok > /srv/healthz && exec httpd -f -p 8000 -h /srv")],
        "ports": [{"name": "http", "containerPort": 8000}]
    })
}

fn pool_spec(replicas: i32, runtime: &str, container: Value, policy: Value) -> Value {
    json!({
        "replicas": replicas, "runtime": runtime,
        "template": {"spec": {"containers": [container]}},
        "policy": policy
    })
}

const MINUTES: fn(u64) -> Duration = |m| Duration::from_secs(60 * m);

#[tokio::test]
#[ignore = "needs a kind cluster: run e2e/run.sh"]
async fn a_healthy_pool_becomes_ready() {
    let s = Scenario::new("healthy").await;
    s.apply("web", pool_spec(2, "generic", web(1, ""), json!({})))
        .await;
    let status = s
        .wait_for("web", "Ready=True", MINUTES(3), |st| {
            condition(st, "Ready").is_some_and(|c| c.0 == "True")
        })
        .await;
    assert_eq!(status.ready_replicas, 2);
    assert_eq!(
        condition(&status, "Stalled").map(|c| c.0).as_deref(),
        Some("False")
    );
    s.cleanup().await;
}

#[tokio::test]
#[ignore = "needs a kind cluster: run e2e/run.sh"]
async fn an_exit_3_is_a_boot_failure_and_opens_the_circuit() {
    let s = Scenario::new("boot-failure").await;
    let container = json!({
        "name": "app", "image": "busybox:1.36",
        "command": ["sh", "-c", "echo '[ERROR] Reason: Worker failed to boot.'; exit 3"],
        "ports": [{"name": "http", "containerPort": 8000}]
    });
    s.apply("api", pool_spec(4, "gunicorn", container, json!({})))
        .await;
    let status = s
        .wait_for("api", "BootFailed and an open circuit", MINUTES(5), |st| {
            counted(st, "BootFailed") >= 3
                && condition(st, "Stalled").is_some_and(|c| c.1 == "BootFailureThreshold")
        })
        .await;
    let last = status.aborts.and_then(|a| a.last).expect("last abort");
    assert!(last.hint.is_some_and(|h| h.contains("failed to boot")));
    s.cleanup().await;
}

#[tokio::test]
#[ignore = "needs a kind cluster: run e2e/run.sh"]
async fn memory_past_the_limit_is_oom_killed() {
    let s = Scenario::new("oom").await;
    let container = json!({
        "name": "app", "image": "python:3.12-alpine",
        "command": ["python", "-c", "import time; time.sleep(3); b = bytearray(512 * 1024 * 1024); time.sleep(60)"],
        "ports": [{"name": "http", "containerPort": 8000}],
        "resources": {"limits": {"memory": "64Mi"}}
    });
    s.apply(
        "mem",
        pool_spec(
            1,
            "generic",
            container,
            json!({"boot": {"timeoutSeconds": 120}}),
        ),
    )
    .await;
    s.wait_for_abort("mem", "OOMKilled", MINUTES(4)).await;
    s.cleanup().await;
}

#[tokio::test]
#[ignore = "needs a kind cluster: run e2e/run.sh"]
async fn a_boot_slower_than_its_timeout_is_a_startup_timeout() {
    let s = Scenario::new("slow-boot").await;
    s.apply(
        "slow",
        pool_spec(
            1,
            "generic",
            web(120, ""),
            json!({"boot": {"timeoutSeconds": 10}}),
        ),
    )
    .await;
    s.wait_for_abort("slow", "StartupTimeout", MINUTES(4)).await;
    s.cleanup().await;
}

#[tokio::test]
#[ignore = "needs a kind cluster: run e2e/run.sh"]
async fn ignoring_sigterm_is_grace_period_exceeded_on_scale_down() {
    let s = Scenario::new("ignore-sigterm").await;
    let policy = json!({"shutdown": {"drainSeconds": 0, "gracefulTimeoutSeconds": 3}});
    // A shell at PID 1 that ignores SIGTERM and keeps the server in the background.
    let container = json!({
        "name": "app", "image": "busybox:1.36",
        "command": ["sh", "-c", "trap '' TERM; mkdir -p /srv && echo ok > /srv/healthz && httpd -p 8000 -h /srv; while true; do sleep 1; done"],
        "ports": [{"name": "http", "containerPort": 8000}]
    });
    s.apply(
        "stubborn",
        pool_spec(2, "generic", container.clone(), policy.clone()),
    )
    .await;
    s.wait_for("stubborn", "Ready=True", MINUTES(3), |st| {
        condition(st, "Ready").is_some_and(|c| c.0 == "True")
    })
    .await;
    s.apply("stubborn", pool_spec(1, "generic", container, policy))
        .await;
    let status = s
        .wait_for_abort("stubborn", "GracePeriodExceeded", MINUTES(2))
        .await;
    let hint = status.aborts.and_then(|a| a.last).and_then(|l| l.hint);
    assert!(hint.is_some_and(|h| h.contains("exec")));
    s.cleanup().await;
}

#[tokio::test]
#[ignore = "needs a kind cluster: run e2e/run.sh"]
async fn a_staggered_scale_up_never_boots_more_than_max_concurrent() {
    let s = Scenario::new("stagger").await;
    s.apply(
        "ramp",
        pool_spec(
            6,
            "generic",
            web(8, ""),
            json!({"boot": {"maxConcurrent": 2, "timeoutSeconds": 60}}),
        ),
    )
    .await;
    let start = Instant::now();
    let mut most_booting = 0;
    loop {
        let pods = s.pods("ramp").await;
        let booting = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                !p.status
                    .as_ref()
                    .and_then(|st| st.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        most_booting = most_booting.max(booting);
        let ready = s.status("ramp").await.is_some_and(|st| {
            condition(&st, "Ready").is_some_and(|c| c.0 == "True") && st.ready_replicas == 6
        });
        if ready {
            break;
        }
        assert!(
            start.elapsed() < MINUTES(5),
            "the ramp did not finish; pods: {:?}",
            pods.iter().map(|p| p.name_any()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(most_booting <= 2, "{most_booting} pods booted at once");
    s.cleanup().await;
}
