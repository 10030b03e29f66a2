//! The binary as a user runs it.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_workerpool-operator");
const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/config/samples/gunicorn-django.yaml"
);

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("binary exits")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn crd_prints_the_checked_in_file() {
    let out = run(&["crd"], None);
    assert!(out.status.success());
    let checked_in = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/workerpool.dev_workerpools.yaml"
    ))
    .unwrap();
    assert_eq!(text(&out.stdout), checked_in);
}

#[test]
fn render_prints_every_child_deterministically() {
    let first = run(&["render", "-f", SAMPLE], None);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let second = run(&["render", "-f", SAMPLE], None);
    assert_eq!(first.stdout, second.stdout);
    let yaml = text(&first.stdout);
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("each document is YAML"))
        .collect();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["Job", "Deployment", "PodDisruptionBudget"]);
    let deployment = &docs[1];
    let revision =
        deployment["spec"]["template"]["metadata"]["annotations"]["workerpool.dev/revision"]
            .as_str()
            .expect("the template carries its revision");
    assert_eq!(revision.len(), 10);
    assert_eq!(deployment["spec"]["paused"].as_bool(), Some(false));
    let job = &docs[0];
    let job_name = job["metadata"]["name"].as_str().expect("Job name");
    let init_hash = job_name
        .strip_prefix(&format!("shop-api-init-{revision}-"))
        .expect("named by the revision, then the init command");
    assert_eq!(init_hash.len(), 5, "{job_name}");
    let job_pod = &job["spec"]["template"]["spec"];
    assert_eq!(job_pod["restartPolicy"].as_str(), Some("Never"));
    assert_eq!(
        job_pod["containers"][0]["command"],
        serde_yaml::from_str::<serde_yaml::Value>("[python, manage.py, migrate, --noinput]")
            .unwrap()
    );
    assert_eq!(
        job_pod["containers"][0]["image"],
        deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    );
    assert_eq!(job["spec"]["activeDeadlineSeconds"].as_i64(), Some(300));
    assert_eq!(job["spec"]["backoffLimit"].as_i64(), Some(1));
    assert!(job["spec"]["ttlSecondsAfterFinished"].as_i64().is_some());
    assert!(
        job["spec"]["template"]["metadata"]["labels"]["workerpool.dev/pool"].is_null(),
        "init pods are not pool pods"
    );
    assert_eq!(deployment["spec"]["replicas"].as_i64(), Some(2));
    assert_eq!(
        deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_i64(),
        Some(40)
    );
    assert!(yaml.contains("GUNICORN_CMD_ARGS"));
    assert!(
        text(&first.stderr).is_empty(),
        "no warnings for the sample: {}",
        text(&first.stderr)
    );
}

#[test]
fn render_reads_standard_input() {
    let sample = std::fs::read_to_string(SAMPLE).unwrap();
    let from_file = run(&["render", "-f", SAMPLE], None);
    let from_stdin = run(&["render", "-f", "-"], Some(&sample));
    assert!(from_stdin.status.success(), "{}", text(&from_stdin.stderr));
    assert_eq!(from_file.stdout, from_stdin.stdout);
}

const MINIMAL: &str = r#"
apiVersion: workerpool.dev/v1alpha1
kind: WorkerPool
metadata: {name: api}
spec:
  runtime: gunicorn
  template:
    spec:
      containers:
        - name: app
          image: example/app:1
          ports: [{name: http, containerPort: 8000}]
"#;

#[test]
fn render_accepts_a_minimal_pool() {
    let out = run(&["render", "-f", "-"], Some(MINIMAL));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    // No namespace invented: the objects go where `kubectl apply` points, as the pool would.
    assert!(!yaml.contains("namespace:"), "{yaml}");
    // The output says it is the first apply, and what applying it over a running pool does.
    assert!(
        yaml.starts_with("# WorkerPool api: what the operator applies when it first sees the pool"),
        "{yaml}"
    );
    assert!(
        !yaml.contains("scale it down"),
        "one replica is no ramp: {yaml}"
    );
    let six = MINIMAL.replace("runtime: gunicorn", "runtime: gunicorn\n  replicas: 6");
    let out = run(&["render", "-f", "-"], Some(&six));
    let yaml = text(&out.stdout);
    assert!(
        yaml.contains("starts at 2 of 6 replicas") && yaml.contains("would scale it down"),
        "{yaml}"
    );
}

#[test]
fn render_makes_a_budget_only_where_it_protects_a_pod_and_says_why_not() {
    let kinds = |yaml: &str| -> Vec<String> {
        yaml.lines()
            .filter_map(|l| l.strip_prefix("kind: "))
            .map(str::to_string)
            .collect()
    };
    // One replica, which maxUnavailable 1 lets go.
    let one = text(&run(&["render", "-f", "-"], Some(MINIMAL)).stdout);
    assert_eq!(kinds(&one), ["Deployment"], "{one}");
    assert!(
        one.contains("# No PodDisruptionBudget: with maxUnavailable 1 and replicas 1, a budget"),
        "{one}"
    );
    let three = MINIMAL.replace("runtime: gunicorn", "runtime: gunicorn\n  replicas: 3");
    let three = text(&run(&["render", "-f", "-"], Some(&three)).stdout);
    assert_eq!(
        kinds(&three),
        ["Deployment", "PodDisruptionBudget"],
        "{three}"
    );
    assert!(!three.contains("No PodDisruptionBudget"), "{three}");
    let off = MINIMAL.replace(
        "runtime: gunicorn",
        "runtime: gunicorn\n  replicas: 3\n  policy: {disruption: {budget: false}}",
    );
    let off = text(&run(&["render", "-f", "-"], Some(&off)).stdout);
    assert_eq!(kinds(&off), ["Deployment"], "{off}");
    assert!(
        off.contains("# No PodDisruptionBudget: policy.disruption.budget is false"),
        "{off}"
    );
}

#[test]
fn invalid_input_exits_non_zero_naming_the_field() {
    let cases = [
        (
            MINIMAL.replace("runtime: gunicorn", "runtime: php"),
            "spec.runtime",
        ),
        (
            MINIMAL.replace("runtime: gunicorn", "runtime: gunicorn\n  container: web"),
            "spec.container",
        ),
        (
            MINIMAL.replace(
                "runtime: gunicorn",
                "runtime: gunicorn\n  policy: {boot: {maxConcurrent: 0}}",
            ),
            "spec.policy.boot.maxConcurrent",
        ),
        (
            MINIMAL.replace(
                "runtime: gunicorn",
                "runtime: gunicorn\n  policy: {boot: {timeoutSeconds: soon}}",
            ),
            "spec.policy.boot.timeoutSeconds",
        ),
        (
            MINIMAL.replace("kind: WorkerPool", "kind: Deployment"),
            "kind",
        ),
        ("{not yaml: [".to_string(), "YAML"),
    ];
    for (input, field) in cases {
        let out = run(&["render", "-f", "-"], Some(&input));
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "accepted: {input}");
        assert!(stderr.contains(field), "expected {field} in: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn misspelled_fields_are_refused_as_strict_field_validation_would() {
    for (input, field) in [
        (
            MINIMAL.replace(
                "runtime: gunicorn",
                "runtime: gunicorn\n  policy: {boot: {timeoutSecond: 120}}",
            ),
            "\"spec.policy.boot.timeoutSecond\"",
        ),
        (
            MINIMAL.replace(
                "image: example/app:1",
                "image: example/app:1\n          imagePullPolicyy: Always",
            ),
            "\"spec.template.spec.containers[0].imagePullPolicyy\"",
        ),
        (
            MINIMAL.replace(
                "metadata: {name: api}",
                "metadata: {name: api, lables: {a: b}}",
            ),
            "\"metadata.lables\"",
        ),
    ] {
        let render: &[&str] = &["render", "-f", "-"];
        let sandbox: &[&str] = &["sandbox", "-f", "-", "--duration", "1m"];
        for args in [render, sandbox] {
            let command = args[0];
            let out = run(args, Some(&input));
            let stderr = text(&out.stderr);
            assert!(!out.status.success(), "{command} accepted: {input}");
            assert!(
                stderr.contains("unknown field") && stderr.contains(field),
                "{command}: expected {field} in: {stderr}"
            );
        }
    }
}

/// `render` exits non-zero on `input`, saying `needle`.
fn assert_render_refuses(input: &str, needle: &str) {
    let out = run(&["render", "-f", "-"], Some(input));
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "accepted: {input}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
}

#[test]
fn pool_names_longer_than_a_label_value_are_refused() {
    let name = "a".repeat(64);
    let long = MINIMAL.replace(
        "metadata: {name: api}",
        &format!("metadata: {{name: {name}}}"),
    );
    assert_render_refuses(&long, "metadata.name must be at most 63 characters");
    let fits = MINIMAL.replace(
        "metadata: {name: api}",
        &format!("metadata: {{name: {}}}", &name[..63]),
    );
    assert!(run(&["render", "-f", "-"], Some(&fits)).status.success());
    let upper = MINIMAL.replace("metadata: {name: api}", "metadata: {name: Api}");
    assert_render_refuses(&upper, "metadata.name \"Api\"");
}

#[test]
fn render_reads_a_stream_of_pools_and_skips_other_documents() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config/samples");
    let mut stream = String::new();
    for file in [
        "namespaces.yaml",
        "gunicorn-django.yaml",
        "uvicorn-fastapi.yaml",
        "celery-worker.yaml",
    ] {
        stream.push_str("---\n");
        stream.push_str(&std::fs::read_to_string(format!("{dir}/{file}")).unwrap());
    }
    stream.push_str("---\n");
    let out = run(&["render", "-f", "-"], Some(&stream));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rendered = text(&out.stdout);
    let deployments = rendered.matches("kind: Deployment").count();
    assert_eq!(deployments, 3, "{rendered}");
    let stderr = text(&out.stderr);
    assert!(
        stderr
            .lines()
            .all(|l| l.starts_with("note: ") && l.contains("skipped Namespace")),
        "{stderr}"
    );
    // One document and a trailing separator is one pool.
    let trailing = format!("{MINIMAL}---\n");
    let out = run(&["render", "-f", "-"], Some(&trailing));
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A bad pool in a stream is named by its place.
    let bad = format!(
        "{MINIMAL}---\n{}",
        MINIMAL.replace("runtime: gunicorn", "runtime: php")
    );
    assert_render_refuses(&bad, "document 2: spec.runtime");
}

#[test]
fn an_app_server_without_a_memory_limit_is_warned_about() {
    let out = run(&["render", "-f", "-"], Some(MINIMAL));
    assert!(out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("warning: container \"app\" sets no resources.limits.memory"),
        "{stderr}"
    );
    let limited = MINIMAL.replace(
        "image: example/app:1",
        "image: example/app:1\n          resources: {limits: {memory: 1Gi}}",
    );
    let out = run(&["render", "-f", "-"], Some(&limited));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

/// The ```yaml blocks of the README.
fn readme_yaml_blocks() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next().map(str::to_string))
        .collect()
}

#[test]
fn every_pool_and_scenario_in_the_readme_runs_as_written() {
    let blocks = readme_yaml_blocks();
    let dir = std::env::temp_dir().join(format!("workerpool-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut pools, mut scenarios) = (0, 0);
    for (i, block) in blocks.iter().enumerate() {
        if block.starts_with("apiVersion: workerpool.dev/") && block.contains("kind: WorkerPool") {
            let out = run(&["render", "-f", "-"], Some(block));
            assert!(
                out.status.success(),
                "README pool {i}: {}",
                text(&out.stderr)
            );
            let out = run(&["sandbox", "-f", "-", "--duration", "2m"], Some(block));
            assert!(
                out.status.success(),
                "README pool {i}: {}",
                text(&out.stderr)
            );
            pools += 1;
        } else if block.contains("bootSeconds:") {
            let path = dir.join(format!("scenario-{i}.yaml"));
            std::fs::write(&path, block).unwrap();
            let out = run(
                &[
                    "sandbox",
                    "-f",
                    SAMPLE,
                    "--scenario",
                    path.to_str().unwrap(),
                    "--duration",
                    "2m",
                ],
                None,
            );
            assert!(
                out.status.success(),
                "README scenario {i}: {}",
                text(&out.stderr)
            );
            scenarios += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        pools >= 1 && scenarios >= 1,
        "{pools} pools, {scenarios} scenarios"
    );
}

#[test]
fn the_sandbox_refuses_a_duration_beyond_its_maximum_at_once() {
    let started = std::time::Instant::now();
    let out = run(
        &["sandbox", "-f", SAMPLE, "--duration", "99999999999"],
        None,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("at most 86400 s"),
        "{}",
        text(&out.stderr)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn the_same_seed_prints_the_same_json_and_another_seed_does_not() {
    let sandbox = |seed: &str| {
        let out = run(
            &[
                "sandbox",
                "-f",
                SAMPLE,
                "--scenario",
                "boot-failure",
                "--duration",
                "4m",
                "--seed",
                seed,
                "-o",
                "json",
            ],
            None,
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        out.stdout
    };
    let first = sandbox("7");
    let report: serde_json::Value = serde_json::from_slice(&first).expect("json");
    let events = report["events"].as_array().expect("events");
    assert!(
        events
            .iter()
            .any(|e| e["series"]["count"].as_i64() > Some(1)),
        "a repeated Event, with its series time: {events:?}"
    );
    // Every time printed is the virtual clock's, so today's date appears nowhere.
    let today = jiff::Timestamp::now().to_string()[..10].to_string();
    let printed = text(&first);
    assert!(!printed.contains(&today), "{today} in the report");
    assert_eq!(first, sandbox("7"), "the same seed, byte for byte");
    assert_ne!(first, sandbox("8"));
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = run(&["render", "-f", "/nonexistent/pool.yaml"], None);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("/nonexistent/pool.yaml"));
}

#[test]
fn template_values_that_break_a_rule_are_warned_about() {
    let input = MINIMAL.replace(
        "    spec:\n      containers:",
        "    spec:\n      terminationGracePeriodSeconds: 12\n      containers:",
    );
    let out = run(&["render", "-f", "-"], Some(&input));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("warning: terminationGracePeriodSeconds"),
        "{stderr}"
    );
    assert!(stderr.contains("12") && stderr.contains("35"), "{stderr}");
    assert!(text(&out.stdout).contains("terminationGracePeriodSeconds: 12"));
}

#[test]
fn every_bundled_sample_renders_without_warnings() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config/samples");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        // Every pool; the kustomization and the namespaces are not pools.
        let is_pool = path.extension().and_then(|e| e.to_str()) == Some("yaml")
            && std::fs::read_to_string(&path).is_ok_and(|t| t.contains("kind: WorkerPool"));
        if !is_pool {
            continue;
        }
        let out = run(&["render", "-f", path.to_str().unwrap()], None);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            text(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{}: {}",
            path.display(),
            text(&out.stderr)
        );
        count += 1;
    }
    assert!(
        count >= 3,
        "expected the gunicorn, uvicorn and celery samples"
    );
}

const PODS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pods.json");
const EVENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/events.json");
const HEALTHY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/healthy-pod.json"
);

#[test]
fn diagnose_prints_a_table() {
    let out = run(&["diagnose", "-f", PODS, "--events", EVENTS], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("POD") && lines[0].contains("REASON"),
        "{table}"
    );
    assert!(
        lines[1].contains("shop-api-6d8f7c9b5-x2x7k") && lines[1].contains("BootFailed"),
        "{table}"
    );
    assert!(table.contains("LivenessTimeout"), "{table}");
}

#[test]
fn diagnose_json_has_the_documented_shape() {
    let out = run(
        &["diagnose", "-f", PODS, "--events", EVENTS, "-o", "json"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let aborts: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON array");
    let aborts = aborts.as_array().expect("array");
    let reasons: Vec<&str> = aborts.iter().filter_map(|a| a["reason"].as_str()).collect();
    assert_eq!(reasons, ["BootFailed", "CrashLoop", "LivenessTimeout"]);
    let keys: Vec<&String> = aborts[0].as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 8);
    for key in [
        "pod",
        "container",
        "reason",
        "exitCode",
        "signal",
        "restartCount",
        "message",
        "hint",
    ] {
        assert!(aborts.iter().all(|a| a.get(key).is_some()), "{key} missing");
    }
    assert_eq!(aborts[0]["exitCode"], 3);
    assert_eq!(aborts[0]["signal"], serde_json::Value::Null);
    assert_eq!(aborts[1]["exitCode"], serde_json::Value::Null);
}

#[test]
fn diagnose_without_events_cannot_see_probe_kills() {
    let out = run(&["diagnose", "-f", PODS, "-o", "json"], None);
    let aborts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(aborts[2]["reason"], "UnexpectedExit");
}

#[test]
fn diagnose_of_a_healthy_pod_is_empty() {
    let out = run(&["diagnose", "-f", HEALTHY, "-o", "json"], None);
    assert!(out.status.success());
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        serde_json::json!([])
    );
    let out = run(
        &["diagnose", "-f", "-"],
        Some(&std::fs::read_to_string(HEALTHY).unwrap()),
    );
    assert_eq!(text(&out.stdout), "no aborts found\n");
}

/// A pod of the init Job `job`, its migrate container ended with `code`.
fn job_pod(name: &str, code: i32) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop",
            "labels": {"batch.kubernetes.io/job-name": "shop-api-init-3f9c2a71d0", "job-name": "shop-api-init-3f9c2a71d0"},
            "annotations": {"workerpool.dev/runtime": "gunicorn"},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "shop-api-init-3f9c2a71d0", "uid": "j1", "controller": true}]},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "init", "image": "shop:1"}]},
        "status": {"phase": if code == 0 { "Succeeded" } else { "Failed" }, "containerStatuses": [{
            "name": "init", "image": "shop:1", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                "startedAt": "2026-11-22T10:00:00Z", "finishedAt": "2026-11-22T10:00:03Z"}}}]}
    })
}

#[test]
fn diagnose_of_a_job_pod_reports_only_a_failed_run() {
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        job_pod("shop-api-init-done", 0), job_pod("shop-api-init-failed", 3)]});
    let out = run(
        &["diagnose", "-f", "-", "-o", "json"],
        Some(&list.to_string()),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let aborts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let aborts = aborts.as_array().expect("array");
    assert_eq!(
        aborts.len(),
        1,
        "a completed Job pod is no abort: {aborts:?}"
    );
    let failed = &aborts[0];
    assert_eq!(failed["pod"], "shop-api-init-failed");
    assert_eq!(
        failed["reason"], "UnexpectedExit",
        "a plain program's exit 3, not gunicorn's"
    );
    assert_eq!(failed["exitCode"], 3);
    assert_eq!(
        failed["message"],
        "a run of Job shop-api-init-3f9c2a71d0 failed: Error"
    );
    assert!(
        failed["hint"]
            .as_str()
            .is_some_and(|h| h.contains("InitFailed")),
        "{failed}"
    );
}

#[test]
fn diagnose_runtime_flag_applies_to_pods_without_the_annotation() {
    let pods = std::fs::read_to_string(PODS).unwrap().replace(
        "\"workerpool.dev/runtime\": \"gunicorn\"",
        "\"team\": \"shop\"",
    );
    let generic = run(&["diagnose", "-f", "-", "-o", "json"], Some(&pods));
    let aborts: serde_json::Value = serde_json::from_slice(&generic.stdout).unwrap();
    assert_eq!(
        aborts[0]["reason"], "UnexpectedExit",
        "unannotated pods default to generic"
    );
    let gunicorn = run(
        &["diagnose", "-f", "-", "--runtime", "gunicorn", "-o", "json"],
        Some(&pods),
    );
    let aborts: serde_json::Value = serde_json::from_slice(&gunicorn.stdout).unwrap();
    assert_eq!(aborts[0]["reason"], "BootFailed");
}

#[test]
fn diagnose_rejects_bad_input_clearly() {
    for (input, needle) in [
        ("{\"kind\": \"Deployment\"}", "expected Pod or PodList"),
        ("[[[", "not JSON or YAML"),
        (
            "{\"kind\": \"PodList\", \"items\": [{\"metadata\": {\"name\": 5}}]}",
            "items[0].metadata.name",
        ),
    ] {
        let out = run(&["diagnose", "-f", "-"], Some(input));
        assert!(!out.status.success(), "accepted {input}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(needle), "expected {needle:?} in {stderr}");
        assert!(!stderr.contains("panicked"));
    }
    let out = run(&["diagnose", "-f", PODS, "--runtime", "php"], None);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("unknown runtime"));
}

const WORKER_TIMEOUT_LOG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/worker-timeout.log"
);
const BOOT_FAILURE_LOG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/boot-failure.log"
);

fn findings(out: &Output) -> Vec<serde_json::Value> {
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .expect("JSON")
        .as_array()
        .expect("array")
        .clone()
}

#[test]
fn diagnose_log_names_the_error_behind_a_boot_failure() {
    let target = format!("shop-api-6d8f7c9b5-x2x7k={BOOT_FAILURE_LOG}");
    let out = run(
        &["diagnose", "-f", PODS, "--log", &target, "-o", "json"],
        None,
    );
    let found = findings(&out);
    assert_eq!(found[0]["reason"], "BootFailed");
    let hint = found[0]["hint"].as_str().expect("hint");
    assert!(
        hint.contains("Worker failed to boot")
            && hint.contains("ModuleNotFoundError: No module named 'stripe'"),
        "{hint}"
    );
    // The other pod's abort keeps the advice for its reason.
    assert!(
        found[2]["hint"]
            .as_str()
            .expect("hint")
            .contains("exited on its own")
    );

    let table = run(&["diagnose", "-f", PODS, "--log", &target], None);
    let table = text(&table.stdout);
    assert!(table.lines().next().unwrap().ends_with("HINT"), "{table}");
    assert!(table.contains("No module named 'stripe'"), "{table}");
}

/// `diagnose -o json` of the pod on standard input, with the worker-timeout log.
fn diagnose_with_worker_timeout_log(pod: &str) -> Output {
    run(
        &[
            "diagnose",
            "-f",
            "-",
            "--log",
            WORKER_TIMEOUT_LOG,
            "-o",
            "json",
        ],
        Some(pod),
    )
}

#[test]
fn diagnose_log_finds_worker_timeouts_and_worker_oom_kills_of_a_ready_pod() {
    let mut pod: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(HEALTHY).unwrap()).unwrap();
    pod["spec"]["containers"][0]["env"] =
        serde_json::json!([{"name": "GUNICORN_CMD_ARGS", "value": "--timeout 10 --workers 2"}]);
    pod["spec"]["containers"][0]["resources"] = serde_json::json!({"limits": {"memory": "512Mi"}});
    let out = diagnose_with_worker_timeout_log(&pod.to_string());
    let found = findings(&out);
    assert_eq!(found.len(), 2, "{found:?}");
    let (timeout, oom) = (&found[0], &found[1]);
    assert_eq!(timeout["reason"], "WorkerTimeout");
    assert_eq!(timeout["container"], "app");
    assert_eq!(timeout["exitCode"], serde_json::Value::Null);
    assert_eq!(timeout["message"], "worker pid 9");
    let hint = timeout["hint"].as_str().unwrap();
    assert!(
        hint.contains("--timeout 10s") && hint.contains("not an OOM"),
        "{hint}"
    );
    assert_eq!(oom["reason"], "OOMKilled");
    assert_eq!(oom["message"], "worker pid 10");
    let hint = oom["hint"].as_str().unwrap();
    assert!(hint.contains("pid 10") && hint.contains("512Mi"), "{hint}");

    // Without a timeout anywhere in the pod, gunicorn's default is named.
    let plain = std::fs::read_to_string(HEALTHY).unwrap();
    let out = diagnose_with_worker_timeout_log(&plain);
    assert!(
        findings(&out)[0]["hint"]
            .as_str()
            .unwrap()
            .contains("--timeout 30s")
    );
}

#[test]
fn diagnose_log_is_matched_to_its_pod() {
    let bare = run(&["diagnose", "-f", PODS, "--log", BOOT_FAILURE_LOG], None);
    assert!(!bare.status.success());
    assert!(
        text(&bare.stderr).contains("POD=FILE"),
        "{}",
        text(&bare.stderr)
    );
    let unknown = format!("shop-api-gone={BOOT_FAILURE_LOG}");
    let out = run(&["diagnose", "-f", PODS, "--log", &unknown], None);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no pod shop-api-gone"));
    let container = format!("shop-api-6d8f7c9b5-q9w4r/app={WORKER_TIMEOUT_LOG}");
    let out = run(
        &["diagnose", "-f", PODS, "--log", &container, "-o", "json"],
        None,
    );
    let found = findings(&out);
    assert!(
        found
            .iter()
            .any(|f| f["reason"] == "WorkerTimeout" && f["pod"] == "shop-api-6d8f7c9b5-q9w4r")
    );
}

#[test]
fn diagnose_never_prints_terminal_escapes_or_bidi_overrides_from_the_cluster() {
    let pods = std::fs::read_to_string(PODS).unwrap().replace(
        "\"Error\"",
        "\"\\u001b]0;owned\\u0007\\u001b[2J\\u202etxt.exe\\u009b\"",
    );
    assert!(pods.contains("\\u202e"), "the fixture changed");
    for format in ["table", "json"] {
        let out = run(&["diagnose", "-f", "-", "-o", format], Some(&pods));
        assert!(out.status.success(), "{}", text(&out.stderr));
        let shown = text(&out.stdout);
        assert!(shown.contains("txt.exe"), "{shown}");
        assert!(
            !shown
                .chars()
                .any(|c| (c.is_control() && c != '\n') || ('\u{202a}'..='\u{202e}').contains(&c)),
            "{format}: {shown:?}"
        );
    }
    let out = run(
        &["diagnose", "-f", "-"],
        Some("{\"kind\": \"\\u001b[2J\\u2066Deployment\"}"),
    );
    let error = text(&out.stderr);
    assert!(
        error.contains("Deployment") && !error.contains('\u{1b}') && !error.contains('\u{2066}')
    );
}

#[test]
fn diagnose_refuses_input_nested_deeper_than_any_pod_at_once() {
    let padding = "x".repeat(60 << 20);
    let nested = "[".repeat(3 << 20);
    let yaml = format!(
        "kind: Pod\nmetadata:\n  name: a\n  annotations:\n    pad: {padding}\n    x: {nested}\n"
    );
    let json = format!(
        "{{\"kind\": \"Pod\", \"metadata\": {{\"name\": \"a\", \"annotations\": {{\"pad\": \"{padding}\", \"x\": {nested}}}}}}}"
    );
    for input in [yaml, json] {
        let started = std::time::Instant::now();
        let out = run(&["diagnose", "-f", "-"], Some(&input));
        let took = started.elapsed();
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains("nests"), "{}", text(&out.stderr));
        assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
    }
    let too_big = "#".repeat((64 << 20) + 1);
    let out = run(&["diagnose", "-f", "-"], Some(&too_big));
    assert!(text(&out.stderr).contains("larger than 64 MiB"));
}

#[test]
fn sandbox_prints_a_timeline_a_summary_and_the_described_pool() {
    let out = run(&["sandbox", "-f", SAMPLE, "--duration", "3m"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for expected in [
        "scenario healthy, seed 1, 180 simulated seconds",
        "Timeline",
        "created with 2 replicas",
        "Ready=True (AllReplicasReady)",
        "All replicas ready after:",
        "$ kubectl describe workerpool -n shop shop-api",
        "Phase:  Ready",
        "Normal   RampStep",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

const BOOT_FAILURE_JSON: &[&str] = &[
    "sandbox",
    "-f",
    SAMPLE,
    "--scenario",
    "boot-failure",
    "--duration",
    "300",
    "-o",
    "json",
];

#[test]
fn sandbox_json_is_one_object_with_the_pool_timeline_and_counts() {
    let out = run(BOOT_FAILURE_JSON, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["pool"]["kind"], "WorkerPool");
    assert_eq!(
        report["pool"]["status"]["aborts"]["last"]["reason"],
        "BootFailed"
    );
    assert!(
        report["timeline"]
            .as_array()
            .is_some_and(|t| t.iter().all(|e| e["at"].is_number()))
    );
    assert_eq!(report["maxBooting"], 2);
    assert!(report["allReadyAfterSeconds"].is_null());
    assert!(
        report["requests"]["patch"]["Deployment"]
            .as_u64()
            .is_some_and(|n| n >= 1)
    );
    // The same seed gives the same run.
    let again = run(BOOT_FAILURE_JSON, None);
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json");
    assert_eq!(report["timeline"], again["timeline"]);
}

#[test]
fn sandbox_runs_a_scenario_file_and_rejects_unknown_names() {
    let dir = std::env::temp_dir().join(format!("workerpool-sandbox-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("exit4.yaml");
    std::fs::write(&file, "name: bad-import\nbootSeconds: 4\nbootExitCode: 4\n").expect("write");
    let out = run(
        &[
            "sandbox",
            "-f",
            SAMPLE,
            "--scenario",
            file.to_str().expect("utf-8"),
            "--duration",
            "120",
            "-o",
            "json",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["scenario"], "bad-import");
    assert_eq!(
        report["pool"]["status"]["aborts"]["last"]["reason"],
        "AppLoadFailed"
    );

    let unknown = run(&["sandbox", "-f", SAMPLE, "--scenario", "meteor"], None);
    assert!(!unknown.status.success());
    assert!(text(&unknown.stderr).contains("unknown scenario \"meteor\""));
    let bad = run(&["sandbox", "-f", SAMPLE, "--duration", "ten"], None);
    assert!(!bad.status.success());
}

#[test]
fn run_on_a_taken_metrics_port_fails_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = taken.local_addr().expect("its address").to_string();
    let dir = std::env::temp_dir().join(format!("wp-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n\
         users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n\
         current-context: c\n",
    )
    .expect("kubeconfig");
    let out = Command::new(BIN)
        .args(["run", &format!("--metrics-addr={addr}")])
        .env("KUBECONFIG", &kubeconfig)
        .stdin(Stdio::null())
        .output()
        .expect("binary runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("--metrics-addr {addr}")) && stderr.contains("in use"),
        "{stderr}"
    );
}

#[test]
fn run_without_a_cluster_says_in_one_line_how_to_name_one() {
    let home = std::env::temp_dir().join(format!("wp-no-kubeconfig-{}", std::process::id()));
    std::fs::create_dir_all(&home).expect("scratch home");
    let out = Command::new(BIN)
        .args(["run", "--metrics-addr=127.0.0.1:0"])
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("HOME", &home)
        .output()
        .expect("binary runs");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("--kubeconfig") && lines[0].contains("KUBECONFIG"),
        "{stderr}"
    );
    // A named kubeconfig that does not exist is named back.
    let out = run(
        &[
            "run",
            "--metrics-addr=127.0.0.1:0",
            "--kubeconfig",
            "/nonexistent/config",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("/nonexistent/config"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_yaml_mistake_is_named_by_line_and_column_and_once() {
    let broken = "apiVersion: workerpool.dev/v1alpha1\nkind: WorkerPool\nmetadata: {name: api}\nspec:\n  runtime: gunicorn\n   template: x\n";
    let out = run(&["render", "-f", "-"], Some(broken));
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("at line 6 column 12"), "{stderr}");
    // A number out of range is one message naming the field.
    let negative = MINIMAL.replace("runtime: gunicorn", "runtime: gunicorn\n  replicas: -1");
    let out = run(&["render", "-f", "-"], Some(&negative));
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert_eq!(stderr.matches("spec.replicas").count(), 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

const UVICORN_SUPERVISOR_LOG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/uvicorn-supervisor.log"
);

#[test]
fn diagnose_log_reads_a_worker_process_uvicorns_supervisor_replaced_as_a_worker_timeout() {
    let mut pod: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(HEALTHY).unwrap()).unwrap();
    pod["metadata"]["annotations"]["workerpool.dev/runtime"] = "uvicorn".into();
    let diagnose = |pod: &serde_json::Value| {
        let out = run(
            &[
                "diagnose",
                "-f",
                "-",
                "--log",
                UVICORN_SUPERVISOR_LOG,
                "-o",
                "json",
            ],
            Some(&pod.to_string()),
        );
        findings(&out)
    };
    // Without a value in the pod, uvicorn's default 5 s is named.
    pod["spec"]["containers"][0]["args"] = serde_json::json!(["--workers", "4"]);
    let found = diagnose(&pod);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["reason"], "WorkerTimeout");
    assert_eq!(found[0]["message"], "worker pid 9");
    let hint = found[0]["hint"].as_str().unwrap();
    assert!(
        hint.contains("--timeout-worker-healthcheck 5s")
            && hint.contains("UVICORN_TIMEOUT_WORKER_HEALTHCHECK"),
        "{hint}"
    );
    pod["spec"]["containers"][0]["env"] =
        serde_json::json!([{"name": "UVICORN_TIMEOUT_WORKER_HEALTHCHECK", "value": "20"}]);
    let hint = diagnose(&pod)[0]["hint"].as_str().unwrap().to_string();
    assert!(hint.contains("--timeout-worker-healthcheck 20s"), "{hint}");
}

#[test]
fn diagnose_warns_of_a_reported_stop_signal_the_app_server_does_not_drain_on() {
    let mut pod: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(HEALTHY).unwrap()).unwrap();
    pod["status"]["containerStatuses"][0]["stopSignal"] = "SIGQUIT".into();
    let out = run(
        &["diagnose", "-f", "-", "-o", "json"],
        Some(&pod.to_string()),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("warning: pod shop-api-6d8f7c9b5-ok reports that container \"app\" is stopped with SIGQUIT")
            && stderr.contains("gunicorn's quick shutdown"),
        "{stderr}"
    );
    // The findings on standard output are unchanged.
    assert_eq!(findings(&out), Vec::<serde_json::Value>::new());
    pod["status"]["containerStatuses"][0]["stopSignal"] = "SIGTERM".into();
    let out = run(&["diagnose", "-f", "-"], Some(&pod.to_string()));
    assert_eq!(text(&out.stderr), "");
}

const CELERY_LOG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/celery-worker.log"
);

#[test]
fn diagnose_log_reads_a_celery_workers_child_kills_and_its_broker() {
    let mut pod: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(HEALTHY).unwrap()).unwrap();
    pod["metadata"]["annotations"]["workerpool.dev/runtime"] = "celery".into();
    pod["spec"]["containers"][0]["command"] =
        serde_json::json!(["celery", "-A", "shop", "worker", "--time-limit=3"]);
    pod["spec"]["containers"][0]["resources"] = serde_json::json!({"limits": {"memory": "1Gi"}});
    let out = run(
        &["diagnose", "-f", "-", "--log", CELERY_LOG, "-o", "json"],
        Some(&pod.to_string()),
    );
    let found = findings(&out);
    let reasons: Vec<&str> = found.iter().filter_map(|f| f["reason"].as_str()).collect();
    assert_eq!(
        reasons,
        ["OOMKilled", "WorkerTimeout", "BrokerUnreachable"],
        "{found:?}"
    );
    assert_eq!(found[0]["message"], "worker pid 29662");
    assert!(found[0]["hint"].as_str().unwrap().contains("1Gi"));
    let timeout = found[1]["hint"].as_str().unwrap();
    assert!(
        timeout.contains("hard time limit (3.0s) for task shop.slow")
            && timeout.contains("not an OOM"),
        "{timeout}"
    );
    assert!(
        found[2]["hint"]
            .as_str()
            .unwrap()
            .contains("redis://redis.shop:6379/0")
    );
}
