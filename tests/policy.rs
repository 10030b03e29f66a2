//! Every derivation rule of the design, on the objects the operator applies.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;
use serde_json::json;
mod common;
use common::{app_container_with, merge};
use workerpool_core::api::{Runtime, Source, WorkerPoolSpec};
use workerpool_core::pool::derive::{self, PoolRef};
use workerpool_core::pool::policy::{self, GRACE_MARGIN_SECONDS, Settings};

fn spec(runtime: &str, extra: serde_json::Value) -> WorkerPoolSpec {
    let mut value = json!({
        "replicas": 6,
        "runtime": runtime,
        "template": {"spec": {"containers": [
            {"name": "app", "image": "example/app:1", "ports": [{"name": "http", "containerPort": 8000}]}
        ]}}
    });
    merge(&mut value, &extra);
    serde_json::from_value(value).expect("valid spec JSON")
}

fn build(spec: &WorkerPoolSpec) -> (Deployment, Settings) {
    let valid = policy::validate(spec).expect("valid");
    let settings = policy::settle(&valid);
    let pool = PoolRef {
        name: "api".into(),
        namespace: "shop".into(),
        uid: Some("uid-1".into()),
    };
    let children = derive::children(&pool, &valid, &settings, policy::first_apply_replicas(spec));
    (children.deployment, settings)
}

fn app(deployment: &Deployment) -> &Container {
    &pod_spec(deployment).containers[0]
}

fn pod_spec(deployment: &Deployment) -> &PodSpec {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("a pod spec")
}

fn env<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
    container
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .value
        .as_deref()
}

/// The message of the conflict reported for `field`.
fn conflict<'a>(settings: &'a Settings, field: &str) -> &'a str {
    match settings.conflicts.iter().find(|c| c.field == field) {
        Some(c) => &c.message,
        None => panic!("no conflict for {field}: {:?}", settings.conflicts),
    }
}

fn window(probe: &Probe) -> i64 {
    i64::from(probe.period_seconds.unwrap()) * i64::from(probe.failure_threshold.unwrap())
}

#[test]
fn defaults_for_gunicorn() {
    let (deployment, settings) = build(&spec("gunicorn", json!({})));
    let pod = pod_spec(&deployment);
    assert_eq!(
        pod.termination_grace_period_seconds,
        Some(5 + 30 + GRACE_MARGIN_SECONDS)
    );
    let app = app(&deployment);
    assert_eq!(
        app.lifecycle
            .as_ref()
            .unwrap()
            .pre_stop
            .as_ref()
            .unwrap()
            .sleep
            .as_ref()
            .unwrap()
            .seconds,
        5
    );
    assert!(window(app.startup_probe.as_ref().unwrap()) >= 60);
    // Without --preload the worker timeout covers the boot: max(30, 60).
    assert_eq!(
        env(app, "GUNICORN_CMD_ARGS"),
        Some("--timeout=60 --graceful-timeout=30 --worker-tmp-dir=/dev/shm")
    );
    let liveness = app.liveness_probe.as_ref().unwrap();
    assert!(window(liveness) + i64::from(liveness.timeout_seconds.unwrap()) > 60);
    let readiness = app.readiness_probe.as_ref().unwrap();
    assert!(
        window(readiness) <= 5,
        "readiness reacts within a few seconds"
    );
    assert_eq!(
        readiness.http_get.as_ref().unwrap().path.as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        readiness.http_get.as_ref().unwrap().port,
        IntOrString::String("http".into())
    );
    let strategy = deployment.spec.as_ref().unwrap().strategy.as_ref().unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let rolling = strategy.rolling_update.as_ref().unwrap();
    assert_eq!(rolling.max_surge, Some(IntOrString::Int(2)));
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
    assert_eq!(
        deployment.spec.as_ref().unwrap().replicas,
        Some(2),
        "first apply is min(6, maxConcurrent)"
    );
    assert!(settings.conflicts.is_empty());
    assert_eq!(settings.effective.worker_timeout_seconds, Some(60));
}

#[test]
fn labels_selector_and_runtime_annotation() {
    let (deployment, _) = build(&spec("uvicorn", json!({})));
    let labels = deployment.metadata.labels.as_ref().unwrap();
    for key in [
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "workerpool.dev/pool",
    ] {
        assert_eq!(labels.get(key).map(String::as_str), Some("api"), "{key}");
    }
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("workerpool-operator")
    );
    let template = &deployment.spec.as_ref().unwrap().template;
    let meta = template.metadata.as_ref().unwrap();
    assert_eq!(
        meta.annotations
            .as_ref()
            .unwrap()
            .get("workerpool.dev/runtime")
            .map(String::as_str),
        Some("uvicorn")
    );
    assert_eq!(
        meta.labels
            .as_ref()
            .unwrap()
            .get("workerpool.dev/pool")
            .map(String::as_str),
        Some("api")
    );
    let owner = &deployment.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("WorkerPool", "uid-1", Some(true))
    );
}

#[test]
fn preload_keeps_the_request_timeout() {
    let (deployment, _) = build(&spec(
        "gunicorn",
        json!({"policy": {"boot": {"preload": true, "timeoutSeconds": 120}}}),
    ));
    assert_eq!(
        env(app(&deployment), "GUNICORN_CMD_ARGS"),
        Some("--timeout=30 --graceful-timeout=30 --preload --worker-tmp-dir=/dev/shm")
    );
}

#[test]
fn uvicorn_gets_its_graceful_shutdown_env() {
    let (deployment, _) = build(&spec(
        "uvicorn",
        json!({"policy": {"shutdown": {"gracefulTimeoutSeconds": 45}}}),
    ));
    let app = app(&deployment);
    assert_eq!(env(app, "UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN"), Some("45"));
    assert_eq!(env(app, "GUNICORN_CMD_ARGS"), None);
}

#[test]
fn generic_gets_no_app_server_flags() {
    let (deployment, settings) = build(&spec(
        "generic",
        json!({"health": {"check": "exec", "command": ["celery", "inspect", "ping"]}}),
    ));
    let app = app(&deployment);
    assert_eq!(app.env, None);
    assert!(app.liveness_probe.as_ref().unwrap().exec.is_some());
    assert_eq!(settings.effective.worker_timeout_seconds, None);
}

#[test]
fn no_drain_means_no_pre_stop_hook() {
    let (deployment, _) = build(&spec(
        "gunicorn",
        json!({"policy": {"shutdown": {"drainSeconds": 0}}}),
    ));
    assert!(app(&deployment).lifecycle.is_none());
}

#[test]
fn explicit_grace_period_wins_and_is_reported_with_both_numbers() {
    let (deployment, settings) = build(&spec(
        "gunicorn",
        json!({"template": {"spec": {"terminationGracePeriodSeconds": 20}}}),
    ));
    let pod = pod_spec(&deployment);
    assert_eq!(pod.termination_grace_period_seconds, Some(20));
    assert_eq!(
        settings.effective.termination_grace_period_source,
        Source::Template
    );
    let message = conflict(&settings, "terminationGracePeriodSeconds");
    assert!(
        message.contains("20") && message.contains("35"),
        "{message}"
    );
}

#[test]
fn the_users_own_pre_stop_hook_is_the_drain() {
    // `sleep 60` as an exec hook: the grace period is derived from it, not from drainSeconds.
    let hook = |command: serde_json::Value| {
        app_container_with(json!({"lifecycle": {"preStop": {"exec": {"command": command}}}}))
    };
    let (deployment, settings) = build(&spec("gunicorn", hook(json!(["sleep", "60"]))));
    assert_eq!(settings.effective.pre_stop_sleep_seconds, Some(60));
    assert_eq!(
        pod_spec(&deployment).termination_grace_period_seconds,
        Some(60 + 30 + GRACE_MARGIN_SECONDS)
    );
    assert!(settings.conflicts.is_empty(), "{:?}", settings.conflicts);
    for command in [
        json!(["/bin/sleep", "15"]),
        json!(["sh", "-c", "sleep 15 && kill -TERM 1"]),
    ] {
        let (_, settings) = build(&spec("gunicorn", hook(command.clone())));
        assert_eq!(
            settings.effective.pre_stop_sleep_seconds,
            Some(15),
            "{command}"
        );
    }
    // With the grace period set too, the conflict names the hook, and says when it alone
    // outlasts the period.
    let grace_conflict = |command: serde_json::Value| {
        let mut extra = hook(command);
        merge(
            &mut extra,
            &json!({"template": {"spec": {"terminationGracePeriodSeconds": 40}}}),
        );
        let (_, settings) = build(&spec("gunicorn", extra));
        conflict(&settings, "terminationGracePeriodSeconds").to_string()
    };
    let message = grace_conflict(json!(["sleep", "60"]));
    assert!(
        message.contains("the preStop hook's 60s") && message.contains("alone outlasts"),
        "{message}"
    );
    let message = grace_conflict(json!(["sleep", "20"]));
    assert!(
        message
            .contains("the preStop hook's 20s + policy.shutdown.gracefulTimeoutSeconds 30s = 50"),
        "{message}"
    );
    // A hook whose length cannot be known: the policy's drain is counted for it, and said so.
    let mut extra = app_container_with(
        json!({"lifecycle": {"preStop": {"httpGet": {"path": "/drain", "port": 8000}}}}),
    );
    merge(
        &mut extra,
        &json!({"template": {"spec": {"terminationGracePeriodSeconds": 10}}}),
    );
    let (_, settings) = build(&spec("gunicorn", extra));
    assert!(
        conflict(&settings, "terminationGracePeriodSeconds").contains("length is unknown"),
        "{:?}",
        settings.conflicts
    );
}

#[test]
fn a_probe_kill_has_a_short_grace_period_and_the_pod_keeps_the_full_one() {
    let (deployment, settings) = build(&spec("gunicorn", json!({})));
    let pod = pod_spec(&deployment);
    assert_eq!(pod.termination_grace_period_seconds, Some(40));
    let container = app(&deployment);
    let probe_grace = |probe: &Option<Probe>| {
        probe
            .as_ref()
            .and_then(|p| p.termination_grace_period_seconds)
    };
    assert_eq!(
        probe_grace(&container.liveness_probe),
        Some(policy::PROBE_KILL_GRACE_SECONDS)
    );
    assert_eq!(
        probe_grace(&container.startup_probe),
        Some(policy::PROBE_KILL_GRACE_SECONDS)
    );
    assert_eq!(
        probe_grace(&container.readiness_probe),
        None,
        "the API refuses it on readiness"
    );
    assert_eq!(
        settings.effective.probe_kill_grace_period_seconds,
        Some(policy::PROBE_KILL_GRACE_SECONDS)
    );
    // Never longer than the pod's own period.
    let (deployment, _) = build(&spec(
        "gunicorn",
        json!({"template": {"spec": {"terminationGracePeriodSeconds": 4}}}),
    ));
    assert_eq!(probe_grace(&app(&deployment).liveness_probe), Some(4));
}

#[test]
fn the_init_job_runs_in_the_apps_whole_environment() {
    let spec = spec(
        "gunicorn",
        json!({
            "policy": {"init": {"command": ["python", "manage.py", "migrate"]}},
            "template": {"spec": {
                "serviceAccountName": "shop",
                "volumes": [{"name": "secrets", "emptyDir": {}}],
                "initContainers": [
                    {"name": "vault-agent-init", "image": "vault:1",
                     "volumeMounts": [{"name": "secrets", "mountPath": "/vault"}]},
                    {"name": "cloud-sql-proxy", "image": "proxy:2", "restartPolicy": "Always"}
                ]
            }}
        }),
    );
    let valid = policy::validate(&spec).expect("valid");
    let settings = policy::settle(&valid);
    assert!(settings.conflicts.is_empty(), "{:?}", settings.conflicts);
    let pool = PoolRef {
        name: "api".into(),
        namespace: "shop".into(),
        uid: Some("uid-1".into()),
    };
    let children = derive::children(&pool, &valid, &settings, 2);
    let job = children.init_job.expect("an init Job");
    let pod = job.spec.and_then(|s| s.template.spec).expect("pod spec");
    let inits: Vec<(&str, Option<&str>)> = pod
        .init_containers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|c| (c.name.as_str(), c.restart_policy.as_deref()))
        .collect();
    assert_eq!(
        inits,
        [
            ("vault-agent-init", None),
            ("cloud-sql-proxy", Some("Always"))
        ],
        "in order, the native sidecar still one"
    );
    assert_eq!(pod.containers.len(), 1);
    assert_eq!(pod.service_account_name.as_deref(), Some("shop"));
    assert_eq!(pod.volumes.as_ref().map(Vec::len), Some(1));

    // A classic sidecar in containers stays out of the Job, by name, with the fix.
    let with_sidecar = {
        let mut spec = spec.clone();
        if let Some(pod) = spec.template.spec.as_mut() {
            pod.containers.push(Container {
                name: "log-shipper".into(),
                image: Some("shipper:1".into()),
                ..Container::default()
            });
        }
        spec
    };
    let valid = policy::validate(&with_sidecar).expect("valid");
    let settings = policy::settle(&valid);
    let message = conflict(&settings, "policy.init");
    assert!(
        message.contains("log-shipper") && message.contains("restartPolicy: Always"),
        "{message}"
    );
    let job = derive::children(&pool, &valid, &settings, 2)
        .init_job
        .expect("Job");
    let names: Vec<String> = job
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers.into_iter().map(|c| c.name).collect())
        .unwrap_or_default();
    assert_eq!(names, ["init"]);
}

#[test]
fn command_line_timeout_wins_and_is_reported() {
    let extra = app_container_with(json!({"args": ["--timeout", "10"]}));
    let (_, settings) = build(&spec("gunicorn", extra));
    assert_eq!(settings.effective.worker_timeout_seconds, Some(10));
    let message = conflict(&settings, "gunicorn --timeout");
    assert!(
        message.contains("10") && message.contains("30"),
        "{message}"
    );
}

#[test]
fn users_own_gunicorn_args_are_kept_and_completed() {
    let extra = app_container_with(
        json!({"env": [{"name": "GUNICORN_CMD_ARGS", "value": "--workers 4 --timeout 90"}]}),
    );
    let (deployment, settings) = build(&spec("gunicorn", extra));
    assert_eq!(
        env(app(&deployment), "GUNICORN_CMD_ARGS"),
        Some("--workers 4 --timeout 90 --graceful-timeout=30 --worker-tmp-dir=/dev/shm")
    );
    assert_eq!(settings.effective.worker_timeout_seconds, Some(90));
    assert!(settings.conflicts.is_empty());
}

#[test]
fn gunicorn_heartbeats_in_ram_unless_told_where() {
    // A worker-tmp-dir of the user's, in their GUNICORN_CMD_ARGS or on the command line, stays.
    let in_env = app_container_with(
        json!({"env": [{"name": "GUNICORN_CMD_ARGS", "value": "--worker-tmp-dir /tmp/hb"}]}),
    );
    let (deployment, _) = build(&spec("gunicorn", in_env));
    assert_eq!(
        env(app(&deployment), "GUNICORN_CMD_ARGS"),
        Some("--worker-tmp-dir /tmp/hb --timeout=60 --graceful-timeout=30")
    );
    let on_command_line = app_container_with(
        json!({"command": ["gunicorn", "--worker-tmp-dir=/run/hb", "shop.wsgi"]}),
    );
    let (deployment, _) = build(&spec("gunicorn", on_command_line));
    assert_eq!(
        env(app(&deployment), "GUNICORN_CMD_ARGS"),
        Some("--timeout=60 --graceful-timeout=30")
    );
    // uvicorn and generic workers have no such file.
    let (deployment, _) = build(&spec("uvicorn", json!({})));
    assert_eq!(env(app(&deployment), "GUNICORN_CMD_ARGS"), None);
}

#[test]
fn explicit_probes_win_and_short_ones_are_reported() {
    let extra = app_container_with(
        json!({"startupProbe": {"httpGet": {"path": "/", "port": 8000}, "periodSeconds": 5, "failureThreshold": 3},
         "livenessProbe": {"httpGet": {"path": "/", "port": 8000}, "periodSeconds": 5, "failureThreshold": 2}}),
    );
    let (deployment, settings) = build(&spec("gunicorn", extra));
    assert_eq!(
        app(&deployment)
            .startup_probe
            .as_ref()
            .unwrap()
            .failure_threshold,
        Some(3)
    );
    let fields: Vec<&str> = settings
        .conflicts
        .iter()
        .map(|c| c.field.as_str())
        .collect();
    assert_eq!(fields, ["startupProbe", "livenessProbe"]);
    assert!(
        settings.conflicts[0].message.contains("15s")
            && settings.conflicts[0].message.contains("60")
    );
}

#[test]
fn invalid_specs_name_the_field() {
    let cases = [
        (json!({"container": "web"}), "spec.container"),
        (json!({"health": {"port": "metrics"}}), "spec.health.port"),
        (
            json!({"policy": {"shutdown": {"drainSeconds": -1}}}),
            "spec.policy.shutdown.drainSeconds",
        ),
        (
            json!({"policy": {"disruption": {"maxUnavailable": "lots"}}}),
            "spec.policy.disruption.maxUnavailable",
        ),
        (
            json!({"policy": {"init": {"command": []}}}),
            "spec.policy.init.command",
        ),
        (json!({"replicas": -3}), "spec.replicas"),
    ];
    for (extra, field) in cases {
        let invalid = policy::validate(&spec("gunicorn", extra)).expect_err(field);
        assert_eq!(invalid.0[0].path, field, "{invalid}");
    }
}

fn runtime_strategy() -> impl Strategy<Value = Runtime> {
    prop_oneof![
        Just(Runtime::Gunicorn),
        Just(Runtime::Uvicorn),
        Just(Runtime::Generic)
    ]
}

proptest! {
    #[test]
    fn every_invariant_holds_for_any_valid_policy(
        runtime in runtime_strategy(),
        replicas in 0i32..500,
        boot in 1i64..=86_400,
        max_concurrent in 1i32..=1000,
        preload in any::<bool>(),
        request in 1i64..=86_400,
        drain in 0i64..=3600,
        graceful in 1i64..=86_400,
    ) {
        let preload = preload && runtime == Runtime::Gunicorn;
        let s = spec(runtime.as_str(), json!({
            "replicas": replicas,
            "policy": {
                "boot": {"timeoutSeconds": boot, "maxConcurrent": max_concurrent, "preload": preload},
                "requests": {"timeoutSeconds": request},
                "shutdown": {"drainSeconds": drain, "gracefulTimeoutSeconds": graceful},
            }
        }));
        let (deployment, settings) = build(&s);
        prop_assert!(settings.conflicts.is_empty());
        let dspec = deployment.spec.as_ref().unwrap();
        let pod = dspec.template.spec.as_ref().unwrap();
        let grace = pod.termination_grace_period_seconds.unwrap();
        prop_assert!(grace > drain + graceful, "grace {} vs {} + {}", grace, drain, graceful);
        prop_assert_eq!(grace, drain + graceful + GRACE_MARGIN_SECONDS);
        let app = &pod.containers[0];
        let pre_stop = app.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()).and_then(|p| p.sleep.as_ref()).map(|s| s.seconds);
        prop_assert_eq!(pre_stop, (drain > 0).then_some(drain));
        let startup = app.startup_probe.as_ref().unwrap();
        prop_assert!(window(startup) >= boot);
        prop_assert!(startup.period_seconds.unwrap() >= 1 && startup.timeout_seconds.unwrap() <= startup.period_seconds.unwrap());
        let liveness = app.liveness_probe.as_ref().unwrap();
        let app_timeout = settings.effective.worker_timeout_seconds.unwrap_or(request);
        prop_assert!(app_timeout >= request);
        prop_assert!(window(liveness) + i64::from(liveness.timeout_seconds.unwrap()) > request);
        prop_assert!(window(liveness) > app_timeout);
        let readiness = app.readiness_probe.as_ref().unwrap();
        prop_assert!(window(readiness) <= 10);
        match runtime {
            Runtime::Gunicorn => {
                let args = env(app, "GUNICORN_CMD_ARGS").unwrap();
                let timeout: i64 = args.split(' ').find_map(|a| a.strip_prefix("--timeout=")).unwrap().parse().unwrap();
                prop_assert!(timeout >= request);
                if !preload { prop_assert!(timeout >= boot); }
                let expected_graceful = format!("--graceful-timeout={graceful}");
                prop_assert!(args.contains(&expected_graceful));
                prop_assert_eq!(args.contains("--preload"), preload);
            }
            Runtime::Uvicorn => {
                let expected = graceful.to_string();
                prop_assert_eq!(env(app, "UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN"), Some(expected.as_str()));
            }
            Runtime::Generic => prop_assert!(app.env.is_none()),
            Runtime::Celery => unreachable!("the strategy draws no celery pool"),
        }
        let rolling = dspec.strategy.as_ref().unwrap().rolling_update.as_ref().unwrap();
        prop_assert_eq!(rolling.max_surge.clone(), Some(IntOrString::Int(max_concurrent)));
        prop_assert_eq!(rolling.max_unavailable.clone(), Some(IntOrString::Int(0)));
        // The first apply is the ramp's first step: never more than maxConcurrent boot at once.
        prop_assert_eq!(policy::first_apply_replicas(&s), replicas.min(max_concurrent));
        prop_assert_eq!(dspec.replicas, Some(policy::first_apply_replicas(&s)));
    }
}

#[test]
fn the_revision_follows_what_shapes_the_pods_and_the_spec_hash_all_but_replicas() {
    let base = spec("gunicorn", json!({}));
    let revision = derive::revision_of(&base);
    let hash = derive::spec_hash(&base);
    assert_eq!((revision.len(), hash.len()), (10, 10));
    let scaled = spec("gunicorn", json!({"replicas": 40}));
    assert_eq!(
        derive::revision_of(&scaled),
        revision,
        "a scale: same revision"
    );
    assert_eq!(derive::spec_hash(&scaled), hash, "and same spec hash");
    for (what, extra) in [
        (
            "the image",
            json!({"template": {"spec": {"containers": [{"name": "app", "image": "example/app:2",
                "ports": [{"name": "http", "containerPort": 8000}]}]}}}),
        ),
        (
            "a template annotation",
            json!({"template": {"metadata": {"annotations": {"a": "b"}}}}),
        ),
        (
            "the boot policy",
            json!({"policy": {"boot": {"timeoutSeconds": 90}}}),
        ),
        ("the health check", json!({"health": {"path": "/ready"}})),
    ] {
        let changed = spec("gunicorn", extra);
        assert_ne!(
            derive::revision_of(&changed),
            revision,
            "{what}: new revision"
        );
        assert_ne!(derive::spec_hash(&changed), hash, "{what}: new spec hash");
    }
    for (what, extra) in [
        (
            "the init command",
            json!({"policy": {"init": {"command": ["migrate"]}}}),
        ),
        (
            "the failure threshold",
            json!({"policy": {"failure": {"bootFailureThreshold": 9}}}),
        ),
        (
            "the disruption budget",
            json!({"policy": {"disruption": {"maxUnavailable": 2}}}),
        ),
    ] {
        let changed = spec("gunicorn", extra);
        assert_eq!(
            derive::revision_of(&changed),
            revision,
            "{what} does not roll the pods"
        );
        assert_ne!(derive::spec_hash(&changed), hash, "{what}: new spec hash");
    }
    assert_ne!(derive::revision_of(&spec("uvicorn", json!({}))), revision);
    let (deployment, _) = build(&base);
    assert_eq!(derive::revision_in(&deployment), Some(revision.as_str()));
}

#[test]
fn the_init_job_is_named_by_revision_and_command() {
    let migrate: workerpool_core::api::InitPolicy =
        serde_json::from_value(json!({"command": ["migrate"]})).expect("init");
    let seed: workerpool_core::api::InitPolicy =
        serde_json::from_value(json!({"command": ["seed"]})).expect("init");
    let a = derive::init_job_name("api", "aaaaaaaaaa", &migrate);
    assert!(a.starts_with("api-init-aaaaaaaaaa-"), "{a}");
    assert_eq!(a, derive::init_job_name("api", "aaaaaaaaaa", &migrate));
    assert_ne!(a, derive::init_job_name("api", "aaaaaaaaaa", &seed));
    assert_ne!(a, derive::init_job_name("api", "bbbbbbbbbb", &migrate));
    let long = derive::init_job_name(&"p".repeat(63), "aaaaaaaaaa", &migrate);
    assert!(long.len() <= 63, "{long}");
}

#[test]
fn a_generic_worker_without_a_port_or_health_is_valid_and_gets_no_probes() {
    // A celery worker: only `runtime` and `template`, no port.
    let worker: WorkerPoolSpec = serde_json::from_value(json!({
        "runtime": "generic",
        "template": {"spec": {"containers": [
            {"name": "worker", "image": "x/celery:1", "command": ["celery", "-A", "app", "worker"]}
        ]}}
    }))
    .expect("spec");
    let (deployment, settings) = build(&worker);
    let container = app(&deployment);
    assert_eq!(
        (
            &container.startup_probe,
            &container.readiness_probe,
            &container.liveness_probe
        ),
        (&None, &None, &None),
        "no probe it cannot answer"
    );
    assert_eq!(
        (
            settings.effective.startup_probe,
            settings.effective.readiness_probe,
            settings.effective.liveness_probe
        ),
        (None, None, None),
        "and none published"
    );

    // A probe the template sets is kept and published.
    let mut probed = worker.clone();
    let containers = &mut probed.template.spec.as_mut().expect("pod").containers;
    containers[0].liveness_probe = serde_json::from_value(
        json!({"exec": {"command": ["celery", "inspect", "ping"]}, "periodSeconds": 30}),
    )
    .expect("probe");
    let (deployment, settings) = build(&probed);
    assert!(app(&deployment).liveness_probe.is_some());
    assert!(app(&deployment).startup_probe.is_none());
    assert_eq!(
        settings.effective.liveness_probe.map(|p| p.source),
        Some(Source::Template)
    );

    // With a port named http, or an app server, the health check is probed as before.
    let served = spec("generic", json!({}));
    assert!(app(&build(&served).0).readiness_probe.is_some());
    let gunicorn: WorkerPoolSpec = serde_json::from_value(json!({
        "runtime": "gunicorn",
        "template": {"spec": {"containers": [{"name": "web", "image": "x/web:1"}]}}
    }))
    .expect("spec");
    let refused = policy::validate(&gunicorn).expect_err("no port named http");
    assert!(
        refused.to_string().contains("spec.health.port"),
        "{refused}"
    );
}

#[test]
fn the_init_jobs_pod_carries_the_templates_labels_and_annotations_but_not_the_pool_selector() {
    let pool = spec(
        "gunicorn",
        json!({
            "policy": {"init": {"command": ["python", "manage.py", "migrate"]}},
            "template": {"metadata": {
                "labels": {"app": "shop", "db-access": "true"},
                "annotations": {"sidecar.istio.io/inject": "false"}
            }}
        }),
    );
    let valid = policy::validate(&pool).expect("valid");
    let settings = policy::settle(&valid);
    let pool_ref = PoolRef {
        name: "api".into(),
        namespace: "shop".into(),
        uid: Some("uid-1".into()),
    };
    let children = derive::children(&pool_ref, &valid, &settings, 1);
    let job = children.init_job.expect("init job");
    let meta = job
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .expect("pod metadata");
    let labels = meta.labels.as_ref().expect("labels");
    assert_eq!(labels.get("app").map(String::as_str), Some("shop"));
    assert_eq!(labels.get("db-access").map(String::as_str), Some("true"));
    assert_eq!(
        labels.get("workerpool.dev/init").map(String::as_str),
        Some("api")
    );
    assert!(
        !labels.contains_key("workerpool.dev/pool"),
        "the Job's pod is not one of the pool's: {labels:?}"
    );
    assert_eq!(
        meta.annotations
            .as_ref()
            .and_then(|a| a.get("sidecar.istio.io/inject"))
            .map(String::as_str),
        Some("false")
    );
}

fn is_label_value(value: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    value.is_empty()
        || (value.len() <= 63
            && edge(value.chars().next())
            && edge(value.chars().last())
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
}

fn is_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

fn labels_of(
    meta: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
) -> Vec<String> {
    meta.and_then(|m| m.labels.as_ref())
        .map(|l| l.values().cloned().collect())
        .unwrap_or_default()
}

proptest! {
    #[test]
    fn every_derived_name_and_label_value_is_valid_for_any_accepted_pool_name(
        name in "([a-z0-9]([-a-z0-9]{0,24}[a-z0-9])?\\.){0,2}[a-z0-9]([-a-z0-9]{0,24}[a-z0-9])?"
            .prop_filter("at most 63 characters", |n| n.len() <= 63),
    ) {
        let pool = spec(
            "gunicorn",
            json!({"policy": {"init": {"command": ["python", "manage.py", "migrate"]}}}),
        );
        let valid = policy::validate(&pool).expect("valid");
        let settings = policy::settle(&valid);
        let pool_ref = PoolRef { name: name.clone(), namespace: "shop".into(), uid: Some("u".into()) };
        let children = derive::children(&pool_ref, &valid, &settings, 1);
        let job = children.init_job.expect("init job");
        let deployment = &children.deployment;
        let pdb = children.pdb.as_ref().expect("a budget");
        let job_name = job.metadata.name.clone().unwrap_or_default();
        // The Job controller puts the Job's name in a label of its pods.
        prop_assert!(is_label_value(&job_name) && is_subdomain(&job_name), "{job_name}");
        for object_name in [&deployment.metadata.name, &pdb.metadata.name] {
            let object_name = object_name.clone().unwrap_or_default();
            prop_assert!(is_subdomain(&object_name), "{object_name}");
        }
        let deployment_spec = deployment.spec.as_ref().expect("spec");
        let mut values = labels_of(Some(&deployment.metadata));
        values.extend(labels_of(deployment_spec.template.metadata.as_ref()));
        values.extend(deployment_spec.selector.match_labels.clone().unwrap_or_default().into_values());
        values.extend(labels_of(Some(&pdb.metadata)));
        values.extend(labels_of(Some(&job.metadata)));
        values.extend(labels_of(job.spec.as_ref().and_then(|s| s.template.metadata.as_ref())));
        for value in values {
            prop_assert!(is_label_value(&value), "label value {value:?} of pool {name}");
        }
    }
}

#[test]
fn the_grace_period_follows_the_graceful_timeout_wherever_it_is_set() {
    // uvicorn's flag on the command line: the grace period is derived from it, not from the policy.
    let command_line = app_container_with(json!({"command":
        ["uvicorn", "shop.main:app", "--timeout-graceful-shutdown", "90"]}));
    let (deployment, settings) = build(&spec("uvicorn", command_line));
    let pod = pod_spec(&deployment);
    assert_eq!(
        pod.termination_grace_period_seconds,
        Some(5 + 90 + GRACE_MARGIN_SECONDS)
    );
    assert_eq!(settings.effective.graceful_timeout_seconds, Some(90));
    assert!(settings.conflicts.is_empty(), "{:?}", settings.conflicts);

    // gunicorn's in its own GUNICORN_CMD_ARGS.
    let env = app_container_with(
        json!({"env": [{"name": "GUNICORN_CMD_ARGS", "value": "--graceful-timeout 50"}]}),
    );
    let (deployment, _) = build(&spec("gunicorn", env));
    let pod = pod_spec(&deployment);
    assert_eq!(
        pod.termination_grace_period_seconds,
        Some(5 + 50 + GRACE_MARGIN_SECONDS)
    );

    // A grace period the user set that is too short names the flag the user set.
    let mut too_short = app_container_with(json!({"command":
        ["uvicorn", "shop.main:app", "--timeout-graceful-shutdown", "90"]}));
    merge(
        &mut too_short,
        &json!({"template": {"spec": {"terminationGracePeriodSeconds": 30}}}),
    );
    let (_, settings) = build(&spec("uvicorn", too_short));
    let message = conflict(&settings, "terminationGracePeriodSeconds");
    assert!(
        message.contains("uvicorn --timeout-graceful-shutdown 90s") && message.contains("= 95"),
        "{message}"
    );
}

#[test]
fn a_worker_class_whose_timeout_is_a_heartbeat_is_said_and_sync_is_not() {
    let class_of = |container: serde_json::Value| {
        let (_, settings) = build(&spec("gunicorn", app_container_with(container)));
        let heartbeat = settings
            .conflicts
            .iter()
            .find(|c| c.field == "gunicorn --worker-class")
            .map(|c| c.message.clone());
        (settings.effective.worker_class, heartbeat)
    };
    // gunicorn's default is sync: --timeout bounds a request, nothing to say.
    assert_eq!(class_of(json!({})), (Some("sync".into()), None));
    // On the command line, short or long, or in the container's own GUNICORN_CMD_ARGS.
    for container in [
        json!({"command": ["gunicorn", "-k", "gthread", "shop.wsgi"]}),
        json!({"args": ["--worker-class=gthread"]}),
        json!({"env": [{"name": "GUNICORN_CMD_ARGS", "value": "--worker-class gthread"}]}),
        // gunicorn runs sync with more than one thread as gthread.
        json!({"args": ["--threads", "4"]}),
        json!({"args": ["-k", "egg:gunicorn#gthread"]}),
    ] {
        let (class, heartbeat) = class_of(container.clone());
        assert_eq!(class.as_deref(), Some("gthread"), "{container}");
        let message = heartbeat.unwrap_or_else(|| panic!("no warning for {container}"));
        assert!(
            message.contains("heartbeat")
                && message.contains("--timeout 60s")
                && message.contains("policy.requests.timeoutSeconds 30")
                && message.contains("statement_timeout"),
            "{message}"
        );
    }
    // The command line beats GUNICORN_CMD_ARGS, as gunicorn reads them.
    let (class, heartbeat) = class_of(json!({
        "args": ["-k", "sync"],
        "env": [{"name": "GUNICORN_CMD_ARGS", "value": "-k gevent"}]
    }));
    assert_eq!((class.as_deref(), heartbeat), (Some("sync"), None));
    for (written, bound) in [
        ("gevent", "gevent.Timeout"),
        ("eventlet", "eventlet.Timeout"),
        ("asgi", "asyncio.timeout"),
        ("uvicorn.workers.UvicornWorker", "asyncio.timeout"),
        ("uvicorn_worker.UvicornWorker", "asyncio.timeout"),
        ("tornado", "asyncio.timeout"),
    ] {
        let (class, heartbeat) = class_of(json!({"args": ["-k", written]}));
        assert_eq!(class.as_deref(), Some(written));
        let message = heartbeat.unwrap_or_else(|| panic!("no warning for {written}"));
        assert!(message.contains(bound), "{written}: {message}");
    }
    // A class the operator does not know is named, with no claim about it.
    assert_eq!(
        class_of(json!({"args": ["-k", "myapp.workers.Custom"]})),
        (Some("myapp.workers.Custom".into()), None)
    );
    // A warning, not a stall: the pool still gets its derived flags.
    let (deployment, _) = build(&spec(
        "gunicorn",
        app_container_with(json!({"args": ["-k", "gthread"]})),
    ));
    assert!(env(app(&deployment), "GUNICORN_CMD_ARGS").is_some_and(|v| v.contains("--timeout=60")));
    // Other runtimes have no worker class.
    let (_, settings) = build(&spec("uvicorn", json!({})));
    assert_eq!(settings.effective.worker_class, None);
}

#[test]
fn a_gunicorn_timeout_of_zero_is_said_to_turn_the_timeout_off() {
    let (_, settings) = build(&spec(
        "gunicorn",
        app_container_with(json!({"args": ["--timeout", "0"]})),
    ));
    let message = conflict(&settings, "gunicorn --timeout");
    assert!(
        message.contains("turns gunicorn's worker timeout off") && !message.contains("shorter"),
        "{message}"
    );
}

#[test]
fn uvicorn_with_several_workers_gets_a_health_check_timeout_as_long_as_a_boot() {
    let uvicorn = |container: serde_json::Value| {
        build(&spec(
            "uvicorn",
            merge_into(
                app_container_with(container),
                json!({"policy": {"boot": {"timeoutSeconds": 90}}}),
            ),
        ))
    };
    let healthcheck = "UVICORN_TIMEOUT_WORKER_HEALTHCHECK";
    for container in [
        json!({"command": ["uvicorn", "app.main:app", "--workers", "4"]}),
        json!({"args": ["--workers=2"]}),
        json!({"env": [{"name": "WEB_CONCURRENCY", "value": "3"}]}),
        json!({"env": [{"name": "UVICORN_WORKERS", "value": "3"}]}),
        // A count from a ConfigMap may be more than one; the variable is harmless if not.
        json!({"env": [{"name": "WEB_CONCURRENCY", "valueFrom": {"configMapKeyRef": {"name": "web", "key": "workers"}}}]}),
    ] {
        let (deployment, settings) = uvicorn(container.clone());
        assert_eq!(
            env(app(&deployment), healthcheck),
            Some("90"),
            "{container}"
        );
        assert_eq!(
            settings.effective.worker_healthcheck_timeout_seconds,
            Some(90)
        );
        assert!(settings.conflicts.is_empty(), "{:?}", settings.conflicts);
    }
    // One process has no supervisor: nothing to set.
    for container in [
        json!({}),
        json!({"args": ["--workers", "1"]}),
        // --workers on the command line beats WEB_CONCURRENCY, as click and uvicorn read them.
        json!({"args": ["--workers", "1"], "env": [{"name": "WEB_CONCURRENCY", "value": "8"}]}),
    ] {
        let (deployment, settings) = uvicorn(container.clone());
        assert_eq!(env(app(&deployment), healthcheck), None, "{container}");
        assert_eq!(settings.effective.worker_healthcheck_timeout_seconds, None);
    }
    // The user's own value wins, and one shorter than a boot is reported with both numbers.
    for container in [
        json!({"args": ["--workers", "4", "--timeout-worker-healthcheck", "10"]}),
        json!({"args": ["--workers", "4"], "env": [{"name": healthcheck, "value": "10"}]}),
    ] {
        let (deployment, settings) = uvicorn(container.clone());
        assert_ne!(
            env(app(&deployment), healthcheck),
            Some("90"),
            "{container}"
        );
        assert_eq!(
            settings.effective.worker_healthcheck_timeout_seconds,
            Some(10)
        );
        let message = conflict(&settings, "uvicorn --timeout-worker-healthcheck");
        assert!(
            message.contains("10") && message.contains("policy.boot.timeoutSeconds 90"),
            "{message}"
        );
    }
}

fn merge_into(mut base: serde_json::Value, overlay: serde_json::Value) -> serde_json::Value {
    merge(&mut base, &overlay);
    base
}

#[test]
fn a_stop_signal_on_which_the_app_server_does_not_drain_is_named() {
    use policy::{StopSignalSource, stop_signal_conflict};
    let reported = StopSignalSource::Reported { pod: "api-1" };
    let drops = |runtime, signal| stop_signal_conflict(runtime, "app", signal, reported);
    // Drains: SIGTERM everywhere, SIGINT for uvicorn (it handles both alike).
    for (runtime, signal) in [
        (Runtime::Gunicorn, "SIGTERM"),
        (Runtime::Uvicorn, "SIGTERM"),
        (Runtime::Uvicorn, "SIGINT"),
        (Runtime::Uvicorn, "INT"),
        (Runtime::Generic, "SIGTERM"),
        (Runtime::Generic, "SIGQUIT"),
    ] {
        assert_eq!(drops(runtime, signal), None, "{runtime} {signal}");
    }
    for (runtime, signal, effect) in [
        (Runtime::Gunicorn, "SIGQUIT", "gunicorn's quick shutdown"),
        (Runtime::Gunicorn, "SIGINT", "gunicorn's quick shutdown"),
        (Runtime::Gunicorn, "quit", "gunicorn's quick shutdown"),
        (Runtime::Gunicorn, "SIGHUP", "reloads its workers"),
        (Runtime::Gunicorn, "SIGUSR1", "does not stop on it"),
        (Runtime::Uvicorn, "SIGQUIT", "uvicorn does not handle it"),
        (Runtime::Generic, "SIGKILL", "killed at once"),
    ] {
        let found = drops(runtime, signal).unwrap_or_else(|| panic!("{runtime} {signal}"));
        assert_eq!(found.field, "stopSignal");
        assert!(
            found.message.contains(effect)
                && found.message.contains("pod api-1")
                && found.message.contains("STOPSIGNAL SIGTERM")
                && found.message.contains("ContainerStopSignals"),
            "{runtime} {signal}: {}",
            found.message
        );
    }
    // The first pod by name is named, whatever order they come in.
    let first = policy::reported_stop_signal(
        Runtime::Gunicorn,
        "app",
        [
            ("api-b", "SIGQUIT"),
            ("api-a", "SIGTERM"),
            ("api-c", "SIGINT"),
        ],
    )
    .expect("a conflict");
    assert!(first.message.contains("pod api-b"), "{}", first.message);

    // The template's own lifecycle.stopSignal is read at derivation, with its own fix.
    let extra = app_container_with(json!({"lifecycle": {"stopSignal": "SIGQUIT"}}));
    let (deployment, settings) = build(&spec("gunicorn", extra));
    let message = conflict(&settings, "lifecycle.stopSignal");
    assert!(
        message.contains("sets lifecycle.stopSignal SIGQUIT")
            && message.contains("set lifecycle.stopSignal: SIGTERM or remove it"),
        "{message}"
    );
    // Reported, never written: the value is the user's, as written.
    let lifecycle = app(&deployment).lifecycle.as_ref().expect("lifecycle");
    assert_eq!(lifecycle.stop_signal.as_deref(), Some("SIGQUIT"));
    let (deployment, settings) = build(&spec("gunicorn", json!({})));
    assert!(settings.conflicts.is_empty());
    assert_eq!(
        app(&deployment)
            .lifecycle
            .as_ref()
            .and_then(|l| l.stop_signal.as_deref()),
        None
    );
}

/// A celery pool whose app container runs `command` with `resources`.
fn celery(
    command: &[&str],
    resources: serde_json::Value,
    extra: serde_json::Value,
) -> WorkerPoolSpec {
    let mut overlay = json!({
        "health": {"check": "exec", "command": ["celery", "-A", "shop", "inspect", "ping", "-d", "celery@$(HOSTNAME)"]},
        "template": {"spec": {"containers": [
            {"name": "app", "image": "example/app:1", "command": command, "resources": resources}
        ]}}
    });
    merge(&mut overlay, &extra);
    spec("celery", overlay)
}

const WORKER: &[&str] = &["celery", "-A", "shop", "worker", "-l", "INFO"];

#[test]
fn a_celery_worker_gets_children_per_cpu_a_task_time_limit_and_a_memory_bound_per_child() {
    let s = celery(
        WORKER,
        json!({"limits": {"cpu": "2", "memory": "1Gi"}}),
        json!({"policy": {"requests": {"timeoutSeconds": 300}, "shutdown": {"gracefulTimeoutSeconds": 300}}}),
    );
    let (deployment, settings) = build(&s);
    let app = app(&deployment);
    assert_eq!(env(app, "CELERY_WORKER_CONCURRENCY"), Some("2"));
    assert_eq!(env(app, "CELERY_WORKER_TIME_LIMIT"), Some("300"));
    // Three quarters of 1 GiB (1,048,576 KiB) over two children.
    assert_eq!(
        env(app, "CELERY_WORKER_MAX_MEMORY_PER_CHILD"),
        Some("393216")
    );
    let effective = &settings.effective;
    assert_eq!(
        (
            effective.concurrency,
            effective.task_time_limit_seconds,
            effective.max_memory_per_child_kib
        ),
        (Some(2), Some(300), Some(393_216))
    );
    assert_eq!(
        effective.concurrency_source,
        Some(workerpool_core::api::ConcurrencySource::ContainerCpus)
    );
    assert!(settings.conflicts.is_empty(), "{:?}", settings.conflicts);
}

#[test]
fn what_the_worker_is_given_is_kept_and_nothing_is_derived_over_it() {
    let mut s = celery(
        &[
            "celery",
            "-A",
            "shop",
            "worker",
            "--concurrency=6",
            "--time-limit",
            "45",
        ],
        json!({"limits": {"cpu": "2", "memory": "1Gi"}}),
        json!({}),
    );
    if let Some(container) = s.template.spec.as_mut().map(|p| &mut p.containers[0]) {
        container.env = Some(vec![k8s_openapi::api::core::v1::EnvVar {
            name: "CELERY_WORKER_MAX_MEMORY_PER_CHILD".into(),
            value: Some("200000".into()),
            value_from: None,
        }]);
    }
    let (deployment, settings) = build(&s);
    let app = app(&deployment);
    assert_eq!(env(app, "CELERY_WORKER_CONCURRENCY"), None);
    assert_eq!(env(app, "CELERY_WORKER_TIME_LIMIT"), None);
    assert_eq!(
        env(app, "CELERY_WORKER_MAX_MEMORY_PER_CHILD"),
        Some("200000")
    );
    let effective = &settings.effective;
    assert_eq!(
        (
            effective.concurrency,
            effective.task_time_limit_seconds,
            effective.max_memory_per_child_kib
        ),
        (Some(6), Some(45), Some(200_000))
    );
    assert_eq!(
        effective.concurrency_source,
        Some(workerpool_core::api::ConcurrencySource::Template)
    );
}

#[test]
fn a_thread_pool_is_not_sized_by_cpus_nor_recycled_by_memory() {
    let s = celery(
        &["celery", "-A", "shop", "worker", "-P", "threads"],
        json!({"limits": {"cpu": "2", "memory": "1Gi"}}),
        json!({}),
    );
    let (deployment, settings) = build(&s);
    let app = app(&deployment);
    assert_eq!(env(app, "CELERY_WORKER_CONCURRENCY"), None);
    assert_eq!(env(app, "CELERY_WORKER_MAX_MEMORY_PER_CHILD"), None);
    assert_eq!(settings.effective.concurrency, None);
}

#[test]
fn a_celery_worker_without_cpus_is_warned_that_celery_counts_the_nodes() {
    let s = celery(WORKER, json!({"limits": {"memory": "512Mi"}}), json!({}));
    let (deployment, settings) = build(&s);
    assert!(conflict(&settings, "celery --concurrency").contains("one child per CPU of the node"));
    assert_eq!(
        settings.effective.concurrency_source,
        Some(workerpool_core::api::ConcurrencySource::NodeCpus)
    );
    assert_eq!(env(app(&deployment), "CELERY_WORKER_CONCURRENCY"), None);
    assert_eq!(
        env(app(&deployment), "CELERY_WORKER_MAX_MEMORY_PER_CHILD"),
        None
    );
}

#[test]
fn a_task_time_limit_longer_than_the_warm_shutdown_is_a_conflict_naming_both() {
    let s = celery(
        &["celery", "-A", "shop", "worker", "--time-limit=900"],
        json!({"limits": {"cpu": "1"}}),
        json!({"policy": {"shutdown": {"gracefulTimeoutSeconds": 60}}}),
    );
    let (_, settings) = build(&s);
    let message = conflict(&settings, "celery --time-limit");
    assert!(message.contains("a task may run 900s"), "{message}");
    assert!(
        message.contains("policy.shutdown.gracefulTimeoutSeconds 60s"),
        "{message}"
    );
    assert!(
        message.contains("terminationGracePeriodSeconds 65"),
        "{message}"
    );
}

#[test]
fn a_celery_worker_has_no_endpoints_to_drain_and_nothing_to_be_ready_for() {
    let s = celery(
        WORKER,
        json!({"limits": {"cpu": "1"}}),
        json!({"policy": {"boot": {"timeoutSeconds": 120}, "shutdown": {"gracefulTimeoutSeconds": 90}}}),
    );
    let (deployment, settings) = build(&s);
    let pod = pod_spec(&deployment);
    let app = app(&deployment);
    assert!(
        app.lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .is_none()
    );
    assert_eq!(
        pod.termination_grace_period_seconds,
        Some(90 + GRACE_MARGIN_SECONDS)
    );
    assert!(app.readiness_probe.is_none());
    assert_eq!(settings.effective.readiness_probe, None);
    let startup = app
        .startup_probe
        .as_ref()
        .expect("the exec check as the startup probe");
    assert!(startup.exec.is_some() && window(startup) >= 120);
    let liveness = app.liveness_probe.as_ref().expect("a slow liveness probe");
    assert!(liveness.exec.is_some());
    assert!(liveness.period_seconds.unwrap() >= 60 && liveness.failure_threshold.unwrap() >= 3);
}

#[test]
fn a_celery_worker_without_an_exec_check_is_not_probed_over_the_network() {
    let mut s = celery(WORKER, json!({"limits": {"cpu": "1"}}), json!({}));
    s.health = Default::default();
    let (deployment, _) = build(&s);
    let app = app(&deployment);
    assert!(
        app.startup_probe.is_none()
            && app.liveness_probe.is_none()
            && app.readiness_probe.is_none()
    );
}

#[test]
fn a_command_celery_would_refuse_or_that_runs_no_worker_is_named() {
    let late_app = celery(
        &["celery", "worker", "-A", "shop"],
        json!({"limits": {"cpu": "1"}}),
        json!({}),
    );
    let (_, settings) = build(&late_app);
    assert!(conflict(&settings, "command").contains("celery 5 refuses"));
    let beat = celery(
        &["celery", "-A", "shop", "beat"],
        json!({"limits": {"cpu": "1"}}),
        json!({}),
    );
    let (deployment, settings) = build(&beat);
    assert!(conflict(&settings, "command").contains("does not start a celery worker"));
    assert_eq!(env(app(&deployment), "CELERY_WORKER_TIME_LIMIT"), None);
}
