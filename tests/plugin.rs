//! `kubectl workerpool`: what `get`, `audit` and `convert` decide from objects as the API server
//! returns them, and the binary as a user runs it without a cluster.

use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use workerpool_core::api::{Runtime, WorkerPool};
use workerpool_core::plugin::{audit, convert, tree};
use workerpool_core::pool::policy;

mod common;

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-workerpool");

/// A gunicorn Deployment as the API server returns one (defaults filled in), with `overlay`.
fn deployment(overlay: Value) -> Deployment {
    let mut base = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "uid": "d-1"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 30,
                    "containers": [{
                        "name": "app",
                        "image": "shop/web:1",
                        "command": ["gunicorn", "--worker-tmp-dir", "/dev/shm", "shop.wsgi"],
                        "ports": [{"name": "http", "containerPort": 8000}],
                        "resources": {"limits": {"memory": "512Mi", "cpu": "1"}},
                        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5}
                    }]
                }
            }
        }
    });
    common::merge(&mut base, &overlay);
    serde_json::from_value(base).expect("a Deployment")
}

fn containers(overlay: Value) -> Value {
    json!({"spec": {"template": {"spec": {"containers": [overlay]}}}})
}

/// The app container of [`deployment`] with `fields` merged in.
fn app(fields: Value) -> Value {
    let d = deployment(json!({}));
    let mut container =
        serde_json::to_value(&d.spec.unwrap().template.spec.unwrap().containers[0]).unwrap();
    common::merge(&mut container, &fields);
    containers(container)
}

fn rules(audit: &audit::Audit) -> Vec<&'static str> {
    audit.findings.iter().map(|f| f.rule).collect()
}

/// A running, Ready pod whose app container started `boot` seconds before it became Ready.
fn booted_pod(name: &str, boot: i64) -> Pod {
    let started = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let ready = started + jiff::SignedDuration::from_secs(boot);
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "shop/web:1"}]},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ready.to_string()}],
            "containerStatuses": [{
                "name": "app", "image": "shop/web:1", "imageID": "", "ready": true, "restartCount": 0,
                "state": {"running": {"startedAt": started.to_string()}}
            }]
        }
    }))
    .unwrap()
}

#[test]
fn a_deployment_that_keeps_every_rule_has_no_findings() {
    let audit = audit::audit(&deployment(app(json!({"command": ["gunicorn", "--worker-tmp-dir", "/dev/shm", "--graceful-timeout", "20", "shop.wsgi"]}))), &[], None)
        .expect("a gunicorn Deployment is audited");
    assert_eq!(audit.runtime, "gunicorn");
    assert!(audit.findings.is_empty(), "{:#?}", audit.findings);
}

#[test]
fn a_grace_period_shorter_than_the_prestop_and_graceful_timeout_names_both_and_the_fix() {
    let d =
        deployment(json!({"spec": {"template": {"spec": {"terminationGracePeriodSeconds": 20}}}}));
    let mut d = serde_json::to_value(d).unwrap();
    common::merge(
        &mut d,
        &app(json!({"lifecycle": {"preStop": {"sleep": {"seconds": 10}}}})),
    );
    let d: Deployment = serde_json::from_value(d).unwrap();
    let audit = audit::audit(&d, &[], None).unwrap();
    assert_eq!(rules(&audit), ["grace-period"]);
    let finding = &audit.findings[0];
    assert!(
        finding.message.contains("terminationGracePeriodSeconds 20")
            && finding.message.contains("preStop hook's 10s")
            && finding.message.contains("--graceful-timeout 30s")
            && finding.message.contains("= 40s"),
        "{}",
        finding.message
    );
    assert_eq!(finding.fix, "terminationGracePeriodSeconds: 45");
}

#[test]
fn probes_and_flags_that_fight_gunicorn_are_each_named() {
    let d = deployment(containers(json!({
        "name": "app",
        "image": "shop/web:1",
        "command": ["gunicorn", "--timeout", "20", "shop.wsgi"],
        "livenessProbe": {"httpGet": {"path": "/health", "port": 8000}, "periodSeconds": 5, "failureThreshold": 3, "timeoutSeconds": 1},
        "startupProbe": {"httpGet": {"path": "/health", "port": 8000}, "periodSeconds": 5, "failureThreshold": 6},
        "resources": {"limits": {"cpu": "1"}}
    })));
    // Its pods took up to 45 s from start to Ready.
    let pods = [booted_pod("web-1", 12), booted_pod("web-2", 45)];
    let audit = audit::audit(&d, &pods, None).unwrap();
    assert_eq!(audit.longest_boot_seconds, Some(45));
    assert_eq!(
        rules(&audit),
        [
            "startup-window",
            "gunicorn-timeout-boot",
            "liveness-before-timeout",
            "heartbeat-on-disk",
            "no-memory-limit"
        ]
    );
    let text: Vec<&str> = audit.findings.iter().map(|f| f.message.as_str()).collect();
    assert!(
        text[0].contains("allows 30s") && text[0].contains("(45s)"),
        "{}",
        text[0]
    );
    assert!(
        text[1].contains("--timeout 20") && text[1].contains("(45s)"),
        "{}",
        text[1]
    );
    assert!(
        text[2].contains("after 16s") && text[2].contains("--timeout 20s"),
        "{}",
        text[2]
    );
    // The fixes are the operator's own derivations.
    let derived = policy::liveness_timing(20);
    assert!(
        audit.findings[2]
            .fix
            .contains(&format!("failureThreshold {}", derived.failure_threshold)),
        "{}",
        audit.findings[2].fix
    );
}

#[test]
fn a_celery_worker_without_cpus_or_a_time_limit_is_told_what_it_forks_and_what_shutdown_cuts() {
    let d = deployment(containers(json!({
        "name": "worker",
        "image": "shop/worker:1",
        "command": ["celery", "-A", "shop", "worker", "-l", "info"],
        "resources": {"limits": {"memory": "1Gi"}}
    })));
    let audit = audit::audit(&d, &[], None).unwrap();
    assert_eq!(audit.runtime, "celery");
    assert_eq!(rules(&audit), ["grace-period", "celery-node-cpus"]);
    assert!(audit.findings[0].message.contains("no --time-limit"));
    assert_eq!(audit.findings[0].fix, "--time-limit no longer than 25");
}

#[test]
fn deployments_a_pool_owns_or_that_run_no_app_server_are_not_audited() {
    let owned = deployment(json!({"metadata": {"ownerReferences": [{
        "apiVersion": "workerpool.dev/v1alpha1", "kind": "WorkerPool", "name": "web", "uid": "p-1", "controller": true
    }]}}));
    assert_eq!(audit::audit(&owned, &[], None), None);
    let nginx = deployment(containers(json!({"name": "web", "image": "nginx:1"})));
    assert_eq!(audit::audit(&nginx, &[], None), None);
    // Unless the user names the runtime.
    assert!(audit::audit(&nginx, &[], Some(Runtime::Gunicorn)).is_some());
}

#[test]
fn a_converted_deployment_keeps_its_numbers_and_says_what_the_operator_changes() {
    let mut d = serde_json::to_value(deployment(json!({}))).unwrap();
    common::merge(
        &mut d,
        &app(json!({
            "command": ["gunicorn", "--timeout", "45", "--graceful-timeout", "20", "shop.wsgi"],
            "lifecycle": {"preStop": {"exec": {"command": ["sleep", "8"]}}},
            "startupProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10, "failureThreshold": 9}
        })),
    );
    let d: Deployment = serde_json::from_value(d).unwrap();
    let converted = convert::convert(&d, &[], None, None).expect("converts");
    let pool = &converted.pool;
    assert_eq!(pool.metadata.name.as_deref(), Some("web-pool"));
    assert_eq!(pool.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(pool.spec.replicas, 3);
    assert_eq!(pool.spec.runtime, Runtime::Gunicorn);
    let p = &pool.spec.policy;
    assert_eq!(
        (
            p.boot.timeout_seconds,
            p.requests.timeout_seconds,
            p.shutdown.drain_seconds,
            p.shutdown.graceful_timeout_seconds
        ),
        (90, 45, 8, 20)
    );
    assert_eq!(pool.spec.health.path, "/health");
    // What the operator derives is left out of the template.
    let template = pool.spec.template.spec.as_ref().unwrap();
    let container = &template.containers[0];
    assert!(container.startup_probe.is_none() && container.readiness_probe.is_none());
    assert!(container.lifecycle.is_none() && template.termination_grace_period_seconds.is_none());
    assert!(
        converted
            .changes
            .iter()
            .any(|c| c == "terminationGracePeriodSeconds: 30 → 33"),
        "{:#?}",
        converted.changes
    );
    assert!(converted.changes.iter().any(|c| {
        c.starts_with("rollout: maxSurge 25%, maxUnavailable 25% → maxSurge 2, maxUnavailable 0")
    }));

    let yaml = convert::to_yaml(&converted, "deployment/web in shop").unwrap();
    assert!(
        yaml.contains("timeoutSeconds: 90  # the startupProbe's window"),
        "{yaml}"
    );
    assert!(
        yaml.contains("gracefulTimeoutSeconds: 20  # gunicorn --graceful-timeout"),
        "{yaml}"
    );
    // What it prints reads back as the same pool.
    let read: WorkerPool = serde_yaml::from_str(&yaml).expect("YAML");
    assert_eq!(read.spec, pool.spec);
    assert!(policy::validate(&read.spec).is_ok());
}

#[test]
fn a_pool_cannot_take_the_name_of_the_deployment_it_replaces() {
    let err = convert::convert(&deployment(json!({})), &[], Some("web"), None).unwrap_err();
    assert!(matches!(err, convert::ConvertError::SameName(_)), "{err}");
    assert!(err.to_string().contains("pass --name"));
}

fn pool_with_status() -> WorkerPool {
    serde_json::from_value(json!({
        "apiVersion": "workerpool.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {"replicas": 3, "runtime": "gunicorn", "template": {"spec": {"containers": [{"name": "app", "image": "a"}]}}},
        "status": {
            "observedGeneration": 1, "replicas": 2, "readyReplicas": 1, "rampTarget": 2,
            "phase": "Stalled", "revision": "5d9c7f",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "BootFailureThreshold", "message": "not ready", "lastTransitionTime": "2027-01-15T08:00:00Z"},
                {"type": "Stalled", "status": "True", "reason": "BootFailureThreshold", "message": "3 boot failures of revision 5d9c7f", "lastTransitionTime": "2027-01-15T08:00:00Z"}
            ],
            "circuit": {"open": true, "generation": 1, "message": "3 boot failures"},
            "aborts": {"last": {"pod": "api-5d9c7f-a", "container": "app", "reason": "BootFailed", "exitCode": 3, "restartCount": 2, "hint": "gunicorn: Worker failed to boot (from its log)"}}
        }
    }))
    .unwrap()
}

fn crash_looping_pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "api-5d9c7f-a", "namespace": "shop", "creationTimestamp": "2027-01-15T07:58:00Z",
            "labels": {"workerpool.dev/pool": "api", "pod-template-hash": "5d9c7f"}},
        "spec": {"containers": [{"name": "app", "image": "a"}]},
        "status": {
            "phase": "Running",
            "containerStatuses": [{
                "name": "app", "image": "a", "imageID": "", "ready": false, "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 3, "reason": "Error",
                    "startedAt": "2027-01-15T07:59:00Z", "finishedAt": "2027-01-15T07:59:30Z"}}
            }]
        }
    }))
    .unwrap()
}

#[test]
fn get_draws_the_pool_its_pods_and_their_last_abort_as_a_tree() {
    let pool = pool_with_status();
    let pods = [crash_looping_pod()];
    let warnings = [tree::PoolEvent {
        reason: "BootFailed".into(),
        message: "pod api-5d9c7f-a container app exited 3".into(),
        count: 3,
        last_seen: Some("2027-01-15T07:59:31Z".parse().unwrap()),
    }];
    let now: jiff::Timestamp = "2027-01-15T08:01:00Z".parse().unwrap();
    let tree = tree::build(&tree::Observed {
        pool: &pool,
        pods: &pods,
        jobs: &[],
        pod_events: &[],
        warnings: &warnings,
        now,
    });
    assert_eq!(tree.phase, "Stalled");
    assert!(tree.circuit_open);
    let pod = &tree.pods[0];
    assert_eq!(
        (pod.state.as_str(), pod.restarts, pod.healthy),
        ("CrashLoopBackOff", 2, false)
    );
    let abort = pod.last_abort.as_ref().expect("the pod's last abort");
    assert_eq!(abort.reason, "BootFailed");
    assert_eq!(abort.exit_code, Some(3));
    assert_eq!(abort.ago_seconds, Some(90));
    // The operator's record of the same abort carries what the log said.
    assert_eq!(
        abort.hint.as_deref(),
        Some("gunicorn: Worker failed to boot (from its log)")
    );

    let text = tree::render(&tree, tree::Style { colour: false });
    assert!(!text.contains('\x1b'), "no colour off a terminal:\n{text}");
    for needle in [
        "Status:     Stalled",
        "Message:    BootFailureThreshold: 3 boot failures of revision 5d9c7f",
        "Replicas:   desired 3, ready 1, ramp target 2",
        // The circuit's message is the Stalled one: said once.
        "Circuit:    open\n",
        "└──api-5d9c7f-a",
        "CrashLoopBackOff",
        "ready:0/1,restarts:2",
        "└ last abort: BootFailed (app, exit 3), 1m ago: gunicorn: Worker failed to boot",
        "Warning Events:",
        "BootFailed (x3)",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    let coloured = tree::render(&tree, tree::Style { colour: true });
    assert!(coloured.contains("\x1b[31m✖ Stalled"), "{coloured}");
}

fn plugin(args: &[&str]) -> std::process::Output {
    Command::new(PLUGIN)
        .args(args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .expect("the plugin runs")
}

#[test]
fn the_plugin_names_its_commands_and_fails_plainly_without_a_cluster() {
    let help = plugin(&["--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for command in ["get", "why", "audit", "convert"] {
        assert!(text.contains(command), "{text}");
    }
    assert!(text.contains("Usage: kubectl workerpool"), "{text}");
    let out = plugin(&["get", "api"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an error is exit 2, not a finding's 1"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The plugin as a user runs it against a cluster: here the sandbox's API, served over HTTP after
/// the controller ran the boot-failure scenario on the bundled sample.
#[tokio::test(start_paused = true)]
async fn on_the_sandbox_get_and_why_show_the_boot_failure_the_controller_recorded() {
    use workerpool_sandbox::apiserver::ApiServer;
    use workerpool_sandbox::scenario::Scenario;
    use workerpool_sandbox::{Options, Sandbox};

    let sample = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/samples/gunicorn-django.yaml"
    ))
    .unwrap();
    let parsed = workerpool_core::render::parse_pools(&sample).expect("the sample");
    let pool = serde_json::to_value(&parsed.pools[0]).unwrap();
    let scenario = Scenario::built_in("boot-failure").expect("a built-in scenario");
    let mut sandbox = Sandbox::new(Options::new(scenario, 1));
    sandbox.add_pool(pool).expect("the pool is created");
    sandbox.start_operator();
    sandbox.run_for(300).await;
    sandbox.stop_operator().await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(sandbox.server.clone().serve_http(listener, async move {
        let _ = stopped.await;
    }));
    let dir = std::env::temp_dir().join(format!("workerpool-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, ApiServer::kubeconfig(address)).unwrap();
    let run = |args: &[&str]| {
        tokio::process::Command::new(PLUGIN)
            .args(args)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .output()
    };

    let get = run(&["get", "shop-api", "-n", "shop"])
        .await
        .expect("get runs");
    let text = String::from_utf8_lossy(&get.stdout);
    assert!(
        get.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert!(text.contains("Name:       shop-api"), "{text}");
    assert!(
        text.contains("├──shop-api-init-") || text.contains("└──shop-api-"),
        "{text}"
    );
    assert!(
        text.contains("last abort: BootFailed (app, exit 3)"),
        "{text}"
    );
    // The Warning Events the operator recorded (events.k8s.io/v1), newest first.
    assert!(
        text.contains("Warning Events:") && text.contains("BootFailed (x"),
        "{text}"
    );
    assert!(
        text.contains("BootFailureThreshold"),
        "the open circuit is said:\n{text}"
    );

    let why = run(&["why", "shop-api", "-n", "shop", "-o", "json"])
        .await
        .expect("why runs");
    assert!(
        why.status.success(),
        "{}",
        String::from_utf8_lossy(&why.stderr)
    );
    let findings: Value = serde_json::from_slice(&why.stdout).expect("why -o json is JSON");
    let boot_failures: Vec<&Value> = findings
        .as_array()
        .expect("a list")
        .iter()
        .filter(|f| f["reason"] == "BootFailed")
        .collect();
    assert!(!boot_failures.is_empty(), "{findings:#}");
    // The hint comes from the log the plugin read: gunicorn's own words.
    assert!(
        boot_failures.iter().any(|f| f["hint"]
            .as_str()
            .is_some_and(|h| h.contains("Worker failed to boot"))),
        "{findings:#}"
    );

    let _ = stop.send(());
    let _ = serving.await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_converted_template_leaves_out_what_the_api_server_filled_in() {
    let d = deployment(json!({"spec": {"template": {"spec": {
        "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler",
        "securityContext": {}, "serviceAccountName": "web",
        "containers": [{
            "name": "app", "image": "shop/web:1", "imagePullPolicy": "IfNotPresent",
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
            "command": ["gunicorn", "shop.wsgi"],
            "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
        }]
    }}}}));
    let converted = convert::convert(&d, &[], None, None).unwrap();
    let yaml = convert::to_yaml(&converted, "deployment/web").unwrap();
    for default in [
        "dnsPolicy",
        "restartPolicy",
        "schedulerName",
        "securityContext",
        "imagePullPolicy",
        "terminationMessage",
        "protocol",
    ] {
        assert!(!yaml.contains(default), "{default} in:\n{yaml}");
    }
    // What the user wrote stays, a pull policy the server would not pick among it.
    assert!(yaml.contains("serviceAccountName: web"), "{yaml}");
    let latest = deployment(app(
        json!({"image": "shop/web:latest", "imagePullPolicy": "IfNotPresent"}),
    ));
    let yaml = convert::to_yaml(&convert::convert(&latest, &[], None, None).unwrap(), "d").unwrap();
    assert!(yaml.contains("imagePullPolicy: IfNotPresent"), "{yaml}");
}
