//! The e2e suite on a real control plane (kube-apiserver, controller-manager, scheduler, KWOK
//! nodes), started by `e2e/real-cluster`, which installs the chart with helm, points
//! `WORKERPOOL_CONTROL_PLANE` at the cluster's directory and runs these tests with `--ignored`.
//! A plain `cargo test` lists them as ignored; `.ci/run` runs them all.
//!
//! The operator runs as processes beside the cluster with a token of the chart's ServiceAccount:
//! a verb the chart's RBAC lacks is a 403 and fails the suite. What is asserted is what a user
//! reads through `kubectl`. Pods behave as their template annotations ask (e2e/kwok-stages.yaml).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Cluster {
    dir: PathBuf,
    operator_bin: PathBuf,
}

fn cluster() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            let dir = std::env::var_os("WORKERPOOL_CONTROL_PLANE")?;
            let operator_bin = std::env::var_os("WORKERPOOL_OPERATOR_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_workerpool-operator").into());
            Some(Cluster {
                dir: dir.into(),
                operator_bin,
            })
        })
        .as_ref()
}

/// The cluster, with two leader-elected operators running. Tests run one at a time: they share
/// the operators.
fn setup() -> (&'static Cluster, MutexGuard<'static, Operators>) {
    static OPERATORS: OnceLock<Mutex<Operators>> = OnceLock::new();
    let cluster = cluster().expect(
        "WORKERPOOL_CONTROL_PLANE names no control plane: run these tests through e2e/real-cluster",
    );
    let mut operators = OPERATORS
        .get_or_init(|| Mutex::new(Operators::default()))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    operators.ensure_running(cluster);
    (cluster, operators)
}

// --- the operator processes ---------------------------------------------------------------

struct Operator {
    identity: String,
    port: u16,
    child: Child,
    log: PathBuf,
    log_start: u64,
    pid_file: PathBuf,
}

impl Operator {
    fn start(cluster: &Cluster, identity: &str, port: u16, kubeconfig: &str) -> Operator {
        let log_path = cluster.dir.join(format!("logs/operator-{identity}.log"));
        // The log is shared with earlier processes of the same identity: this one's starts here.
        let log_start = std::fs::metadata(&log_path).map_or(0, |m| m.len());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("operator log");
        let child = Command::new(&cluster.operator_bin)
            .args([
                "run",
                &format!("--metrics-addr=127.0.0.1:{port}"),
                "--leader-elect",
                "--lease-name=workerpool-operator",
                "--lease-namespace=workerpool-system",
                &format!("--identity={identity}"),
            ])
            .env("KUBECONFIG", cluster.dir.join(kubeconfig))
            .env("RUST_LOG", "info,workerpool_core=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the operator");
        // The processes outlive this test binary (its statics are never dropped):
        // `e2e/control-plane down` stops them by these files.
        let pid_file = cluster.dir.join(format!("run/operator-{identity}.pid"));
        std::fs::write(&pid_file, child.id().to_string()).expect("pid file");
        Operator {
            identity: identity.into(),
            port,
            child,
            log: log_path,
            log_start,
            pid_file,
        }
    }

    /// What this process has logged.
    fn log(&self) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let start = usize::try_from(self.log_start).unwrap_or(0).min(text.len());
        String::from_utf8_lossy(&text[start..]).into_owned()
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path)
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status();
    }

    /// Waits for the process to end; its exit status, or None if it is still running.
    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

#[derive(Default)]
struct Operators {
    running: Vec<Operator>,
}

impl Operators {
    fn ensure_running(&mut self, cluster: &Cluster) {
        self.running.retain_mut(Operator::running);
        for (identity, port) in [("operator-a", 18080), ("operator-b", 18081)] {
            if !self.running.iter().any(|o| o.identity == identity) {
                self.running.push(Operator::start(
                    cluster,
                    identity,
                    port,
                    "operator.kubeconfig",
                ));
            }
        }
    }

    /// Stops every operator with SIGTERM, as a node drain or an upgrade does.
    fn stop_all(&mut self) {
        for operator in &mut self.running {
            operator.signal("TERM");
            assert!(
                operator.wait_exit(Duration::from_secs(30)).is_some(),
                "{} did not stop on SIGTERM",
                operator.identity
            );
        }
        self.running.clear();
    }

    /// The process holding the Lease.
    fn leading(&self) -> &Operator {
        let leader = self.leader().expect("a leader");
        self.running
            .iter()
            .find(|o| o.identity == leader)
            .expect("the leader runs")
    }

    fn leader(&self) -> Option<&str> {
        let lease = kubectl_json(&[
            "get",
            "lease",
            "workerpool-operator",
            "-n",
            "workerpool-system",
        ])?;
        let holder = lease["spec"]["holderIdentity"].as_str()?;
        self.running
            .iter()
            .find(|o| o.identity == holder)
            .map(|o| o.identity.as_str())
    }
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-m",
            "5",
            "-w",
            "\n%{http_code}",
            &format!("http://127.0.0.1:{port}{path}"),
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, body.to_string()))
}

// --- kubectl --------------------------------------------------------------------------------

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn kubectl_with(args: &[&str], stdin: Option<&str>) -> Output {
    let cluster = cluster().expect("a control plane");
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", cluster.dir.join("admin.kubeconfig"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl on the PATH");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).expect("kubectl stdin");
    }
    let out = child.wait_with_output().expect("kubectl");
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// A command that keeps running (a watch) as the cluster's admin, its output kept for when it is
/// stopped.
fn watching(program: &str, args: &[&str]) -> Child {
    let cluster = cluster().expect("a control plane");
    Command::new(program)
        .args(args)
        .env("KUBECONFIG", cluster.dir.join("admin.kubeconfig"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{program} runs: {error}"))
}

/// The operator's own command line (`render`, `diagnose`) with `stdin`, as a user pipes to it.
fn operator_cli(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_workerpool-operator"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the operator binary runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("the operator binary exits")
}

fn kubectl(args: &[&str]) -> Output {
    kubectl_with(args, None)
}

fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(out.ok, "kubectl {}: {}", args.join(" "), out.stderr);
    out.stdout
}

fn kubectl_json(args: &[&str]) -> Option<Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = kubectl(&all);
    if !out.ok {
        return None;
    }
    serde_json::from_str(&out.stdout).ok()
}

fn apply(yaml: &str) -> Output {
    kubectl_with(&["apply", "-f", "-"], Some(yaml))
}

fn namespace(name: &str) -> String {
    let _ = kubectl(&["create", "namespace", name]);
    name.to_string()
}

/// Polls until `probe` returns Some, or fails saying what it waited for and what `last` shows.
fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
    last: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}; now:\n{}",
            last()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

// --- pools ----------------------------------------------------------------------------------

/// A pool whose pods behave as `behaviour` (KWOK stage annotations) asks.
fn pool(
    ns: &str,
    name: &str,
    replicas: u32,
    runtime: &str,
    behaviour: &[(&str, &str)],
    policy: Value,
) -> String {
    let annotations: serde_json::Map<String, Value> = behaviour
        .iter()
        .map(|(k, v)| (format!("e2e.workerpool.dev/{k}"), json!(v)))
        .collect();
    json!({
        "apiVersion": "workerpool.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "runtime": runtime,
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {"containers": [{
                    "name": "app",
                    "image": "registry.example/app:1",
                    "ports": [{"name": "http", "containerPort": 8000}],
                    "resources": {"limits": {"memory": "512Mi"}}
                }]}
            },
            "policy": policy
        }
    })
    .to_string()
}

fn status(ns: &str, name: &str) -> Value {
    kubectl_json(&["get", "wp", name, "-n", ns])
        .map(|p| p["status"].clone())
        .unwrap_or(Value::Null)
}

fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn condition_is(status: &Value, type_: &str, value: &str) -> bool {
    condition(status, type_).is_some_and(|c| c["status"] == value)
}

fn counted(status: &Value, reason: &str) -> i64 {
    status["aborts"]["counts"]
        .as_array()
        .and_then(|counts| counts.iter().find(|c| c["reason"] == reason))
        .and_then(|c| c["count"].as_i64())
        .unwrap_or(0)
}

fn describe(ns: &str, name: &str) -> String {
    kubectl_ok(&["describe", "wp", name, "-n", ns])
}

/// `kubectl wait --for=condition=Ready` on one pool, as a user runs it.
fn kubectl_wait_ready(ns: &str, name: &str, timeout: &str) -> Output {
    kubectl(&[
        "wait",
        "--for=condition=Ready",
        &format!("wp/{name}"),
        "-n",
        ns,
        &format!("--timeout={timeout}"),
    ])
}

fn wait_ready(ns: &str, name: &str, timeout: Duration) -> Value {
    wait_until(
        &format!("{ns}/{name} Ready"),
        timeout,
        || {
            let s = status(ns, name);
            condition_is(&s, "Ready", "True").then_some(s)
        },
        || describe(ns, name),
    )
}

fn wait_abort(ns: &str, name: &str, reason: &str, at_least: i64, timeout: Duration) -> Value {
    wait_until(
        &format!("{ns}/{name}: {at_least} × {reason}"),
        timeout,
        || {
            let s = status(ns, name);
            (counted(&s, reason) >= at_least).then_some(s)
        },
        || describe(ns, name),
    )
}

/// A one-replica gunicorn pool `api` in namespace `ns` whose pods behave as `behaviour` asks,
/// once `reason` is counted and reported: its status.
fn aborting_pool(
    operators: &Operators,
    ns: &str,
    behaviour: &[(&str, &str)],
    reason: &str,
) -> Value {
    let ns = namespace(ns);
    let yaml = pool(&ns, "api", 1, "gunicorn", behaviour, json!({}));
    assert!(apply(&yaml).ok);
    let status = wait_abort(&ns, "api", reason, 1, 2 * MINUTE);
    assert_reported(operators, &ns, reason);
    status
}

/// An abort of pool `api` in `ns` is a Warning Event naming the pod and a sample of the leader's
/// abort counter.
fn assert_reported(operators: &Operators, ns: &str, reason: &str) {
    let events = events(ns, &format!("reason={reason},type=Warning"), "json");
    assert!(
        events.contains("pod api-"),
        "no {reason} Event naming a pod: {events}"
    );
    let sample = format!(
        "workerpool_worker_aborts_total{{namespace=\"{ns}\",pool=\"api\",reason=\"{reason}\"}}"
    );
    let metrics = metrics(operators);
    assert!(metrics.contains(&sample), "{sample} missing: {metrics}");
}

fn metrics(operators: &Operators) -> String {
    operators
        .leading()
        .get("/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// `kubectl get events -n NS --field-selector SELECTOR -o OUTPUT`.
fn events(ns: &str, selector: &str, output: &str) -> String {
    kubectl_ok(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        selector,
        "-o",
        output,
    ])
}

/// Runs `e2e/control-plane COMMAND` on the suite's cluster.
fn control_plane(cluster: &Cluster, command: &str) {
    let done = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/control-plane"))
        .args([command, &cluster.dir.to_string_lossy()])
        .status()
        .expect("e2e/control-plane");
    assert!(done.success(), "e2e/control-plane {command}");
}

/// Once the last status writes have landed, the operator asks nothing about `ns` for `quiet`.
fn assert_no_requests(cluster: &Cluster, ns: &str, quiet: Duration) {
    std::thread::sleep(Duration::from_secs(5));
    let audit = Audit::start(cluster);
    std::thread::sleep(quiet);
    let requests = audit.requests_in(ns);
    assert!(
        requests.is_empty(),
        "requests while nothing changed: {:#?}",
        summary(&requests)
    );
}

const MINUTE: Duration = Duration::from_secs(60);

// --- the tests ------------------------------------------------------------------------------

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn the_crd_is_established_and_invalid_pools_are_refused_naming_the_field() {
    let _setup = setup();
    let crd = kubectl_json(&["get", "crd", "workerpools.workerpool.dev"]).expect("the CRD");
    let established = crd["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
    });
    assert!(established, "{crd:#}");
    // The API server takes the CRD without a warning (an unknown format would be one).
    let crd_file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/workerpool.dev_workerpools.yaml"
    );
    let reapplied = kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        "-f",
        crd_file,
    ]);
    assert!(reapplied.ok, "{}", reapplied.stderr);
    assert!(
        !reapplied.stderr.contains("Warning"),
        "the API server warned: {}",
        reapplied.stderr
    );

    let ns = namespace("e2e-admission");
    // The API server and `render` refuse the same pools, naming the same field.
    let refused = |yaml: String, field: &str| {
        let out = apply(&yaml);
        assert!(!out.ok, "accepted: {yaml}");
        assert!(
            out.stderr.contains(field),
            "{field} not named: {}",
            out.stderr
        );
        let rendered = operator_cli(&["render", "-f", "-"], &yaml);
        let stderr = String::from_utf8_lossy(&rendered.stderr);
        assert!(!rendered.status.success(), "render accepted: {yaml}");
        assert!(
            stderr.contains(field),
            "render did not name {field}: {stderr}"
        );
    };
    refused(
        pool(
            &ns,
            "zero",
            1,
            "gunicorn",
            &[],
            json!({"boot": {"maxConcurrent": 0}}),
        ),
        "spec.policy.boot.maxConcurrent",
    );
    refused(
        pool(
            &ns,
            "typo",
            1,
            "gunicorn",
            &[],
            json!({"boot": {"timeoutSecond": 120}}),
        ),
        "unknown field \"spec.policy.boot.timeoutSecond\"",
    );
    refused(
        pool(
            &ns,
            "preload",
            1,
            "uvicorn",
            &[],
            json!({"boot": {"preload": true}}),
        ),
        "preload",
    );
    refused(
        pool(
            &ns,
            "budget",
            1,
            "gunicorn",
            &[],
            json!({"disruption": {"maxUnavailable": "150%"}}),
        ),
        "spec.policy.disruption.maxUnavailable",
    );
    // A gunicorn pool whose app container declares no port named http has nothing to probe.
    let unnamed =
        pool(&ns, "unnamed", 1, "gunicorn", &[], json!({})).replace("\"http\"", "\"web\"");
    refused(unnamed, "spec.health.port");
    // A negative count is one message, not one from the schema and one from the scale
    // subresource.
    let negative = pool(&ns, "negative", 1, "gunicorn", &[], json!({}))
        .replace("\"replicas\":1", "\"replicas\":-1");
    let out = apply(&negative);
    assert!(!out.ok, "accepted: {negative}");
    assert_eq!(out.stderr.matches("replicas").count(), 1, "{}", out.stderr);
    let long = "a".repeat(64);
    refused(
        pool(&ns, &long, 1, "gunicorn", &[], json!({})),
        "metadata.name",
    );
    assert!(
        kubectl_ok(&["get", "wp", "-n", &ns, "-o", "name"])
            .trim()
            .is_empty()
    );
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn both_operators_are_ready_the_leader_and_the_standby() {
    let (_, operators) = setup();
    for op in &operators.running {
        wait_until(
            &format!("{} /readyz 200", op.identity),
            MINUTE,
            || op.get("/readyz").filter(|(code, _)| *code == 200),
            || format!("{:?}", op.get("/readyz")),
        );
        assert_eq!(op.get("/healthz").map(|(c, _)| c), Some(200));
    }
    assert!(operators.leader().is_some(), "one of them holds the Lease");
    let leading: Vec<&str> = operators
        .running
        .iter()
        .filter(|op| op.log().contains("acquired leadership"))
        .map(|op| op.identity.as_str())
        .collect();
    assert_eq!(leading.len(), 1, "more than one leader: {leading:?}");
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn the_samples_apply_on_a_fresh_cluster_and_every_pool_becomes_ready() {
    let _setup = setup();
    let root = env!("CARGO_MANIFEST_DIR");
    kubectl_ok(&["apply", "-k", &format!("{root}/config/samples")]);
    for (ns, name, replicas) in [
        ("shop", "shop-api", 6),
        ("search", "search-api", 4),
        ("shop", "mailer", 3),
    ] {
        let status = wait_ready(ns, name, 4 * MINUTE);
        assert_eq!(status["readyReplicas"], replicas, "{status:#}");
    }
    // The gunicorn sample migrates in an init Job first, whose pod carries the template's labels
    // (a NetworkPolicy that admits the app admits its migration) but not the pool's.
    assert_eq!(status("shop", "shop-api")["init"]["phase"], "Succeeded");
    let init = status("shop", "shop-api")["init"]["job"]
        .as_str()
        .expect("the init Job's name")
        .to_string();
    let job = kubectl_json(&["get", "job", &init, "-n", "shop"]).expect("the init Job");
    let labels = &job["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["db-access"], "true", "{job:#}");
    assert!(labels.get("workerpool.dev/pool").is_none(), "{labels:#}");
    // gunicorn heartbeats in RAM.
    let deployment =
        kubectl_json(&["get", "deployment", "shop-api", "-n", "shop"]).expect("Deployment");
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(env.contains("--worker-tmp-dir=/dev/shm"), "{env}");
    // A probe kill has a short grace period of its own; the pod keeps its full one.
    let pod_spec = &deployment["spec"]["template"]["spec"];
    let app = &pod_spec["containers"][0];
    assert_eq!(
        app["livenessProbe"]["terminationGracePeriodSeconds"], 10,
        "{app:#}"
    );
    assert_eq!(
        app["startupProbe"]["terminationGracePeriodSeconds"], 10,
        "{app:#}"
    );
    assert!(
        pod_spec["terminationGracePeriodSeconds"].as_i64() > Some(10),
        "{pod_spec:#}"
    );
    let out = kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "wp",
        "--all",
        "-n",
        "shop",
        "--timeout=10s",
    ]);
    assert!(out.contains("condition met"), "{out}");
    let text = describe("shop", "shop-api");
    assert!(text.contains("Termination Grace Period Seconds"), "{text}");
    assert!(text.contains("RampStep"), "{text}");
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn the_ramp_never_boots_more_than_max_concurrent_pods_at_once() {
    let _setup = setup();
    let ns = namespace("e2e-ramp");
    let yaml = pool(
        &ns,
        "web",
        6,
        "gunicorn",
        &[("boot", "3s")],
        json!({"boot": {"maxConcurrent": 2}}),
    );
    assert!(apply(&yaml).ok);
    let start = Instant::now();
    let mut most_booting = 0;
    loop {
        let pods = kubectl_json(&["get", "pods", "-n", &ns, "-l", "workerpool.dev/pool=web"])
            .unwrap_or(Value::Null);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        let booting = items
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| {
                !p["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .count();
        most_booting = most_booting.max(booting);
        let ready = items.len() == 6 && booting == 0;
        if ready || start.elapsed() > 3 * MINUTE {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(most_booting <= 2, "{most_booting} pods booting at once");
    let ready = wait_ready(&ns, "web", MINUTE);
    assert_eq!(ready["readyReplicas"], 6);

    // A scale through the scale subresource ramps the same way and changes nothing else.
    kubectl_ok(&["scale", "wp/web", "-n", &ns, "--replicas=8"]);
    wait_until(
        "8 ready",
        2 * MINUTE,
        || (status(&ns, "web")["readyReplicas"] == 8).then_some(()),
        || describe(&ns, "web"),
    );
    assert_eq!(counted(&status(&ns, "web"), "BootFailed"), 0);
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_gunicorn_exit_3_is_a_boot_failure_and_opens_the_circuit() {
    let (_, operators) = setup();
    let ns = namespace("e2e-boot-failure");
    let yaml = pool(
        &ns,
        "api",
        2,
        "gunicorn",
        &[
            ("scenario", "exit"),
            ("exit-code", "3"),
            ("boot", "1s"),
            ("restart", "2s"),
        ],
        json!({"failure": {"bootFailureThreshold": 3}}),
    );
    assert!(apply(&yaml).ok);
    let opened = wait_until(
        "BootFailed ≥ 3 and Stalled=BootFailureThreshold",
        3 * MINUTE,
        || {
            let s = status(&ns, "api");
            (counted(&s, "BootFailed") >= 3
                && condition(&s, "Stalled").is_some_and(|c| c["reason"] == "BootFailureThreshold"))
            .then_some(s)
        },
        || describe(&ns, "api"),
    );
    assert_eq!(opened["aborts"]["last"]["exitCode"], 3, "{opened:#}");
    let text = describe(&ns, "api");
    assert!(text.contains("BootFailed"), "{text}");

    // `kubectl scale` bumps the generation but is no fix: the circuit stays open, no pod is added.
    kubectl_ok(&["scale", "wp/api", "-n", &ns, "--replicas=4"]);
    wait_until(
        "the scale to be observed",
        MINUTE,
        || {
            let s = status(&ns, "api");
            (s["observedGeneration"] == 2).then_some(())
        },
        || describe(&ns, "api"),
    );
    let s = status(&ns, "api");
    assert_eq!(s["circuit"]["open"], true, "{s:#}");
    assert!(
        condition(&s, "Stalled").is_some_and(|c| c["reason"] == "BootFailureThreshold"),
        "{s:#}"
    );
    let deployment = kubectl_json(&["get", "deployment", "api", "-n", &ns]).expect("Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2, "no pod added");
    assert_eq!(deployment["spec"]["paused"], true);
    let events = events(&ns, "reason=BootFailed", "json");
    assert!(
        events.contains("api-"),
        "no BootFailed Event naming a pod: {events}"
    );
    // The crash loop beside the boot failures, in status, Events and metrics.
    assert!(counted(&opened, "CrashLoop") >= 1, "{opened:#}");
    assert_reported(&operators, &ns, "CrashLoop");
    let metrics = metrics(&operators);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("workerpool_worker_aborts_total")
                && l.contains("reason=\"BootFailed\"")
                && l.contains(&ns)
                && !l.ends_with(" 0")),
        "{metrics}"
    );
    // The stalled pool is a gauge an alert can fire on.
    let stalled = format!(
        "workerpool_pool_condition{{namespace=\"{ns}\",pool=\"api\",condition=\"Stalled\"}} 1"
    );
    assert!(metrics.lines().any(|l| l == stalled), "{metrics}");

    // `diagnose` reads the same pods and Events as saved with kubectl, and says the same.
    let pods = kubectl_ok(&["get", "pods", "-n", &ns, "-o", "json"]);
    let events = kubectl_ok(&["get", "events", "-n", &ns, "-o", "json"]);
    let dir = std::env::temp_dir().join(format!("e2e-diagnose-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch");
    let events_file = dir.join("events.json");
    std::fs::write(&events_file, events).expect("events file");
    let events_path = events_file.to_string_lossy().into_owned();
    let out = operator_cli(
        &[
            "diagnose",
            "-f",
            "-",
            "-o",
            "json",
            "--events",
            &events_path,
        ],
        &pods,
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let findings: Value = serde_json::from_slice(&out.stdout).expect("diagnose JSON");
    let boot_failed = findings
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["reason"] == "BootFailed")
        .unwrap_or_else(|| panic!("no BootFailed in {findings:#}"));
    assert_eq!(boot_failed["exitCode"], 3, "{findings:#}");
    assert!(
        boot_failed["hint"]
            .as_str()
            .is_some_and(|h| h.contains("exited 3")),
        "{findings:#}"
    );
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn an_oom_kill_is_counted_as_oom_killed() {
    let (_, operators) = setup();
    let status = aborting_pool(
        &operators,
        "e2e-oom",
        &[("scenario", "oom"), ("boot", "1s"), ("serve", "3s")],
        "OOMKilled",
    );
    assert_eq!(
        status["aborts"]["last"]["reason"], "OOMKilled",
        "{status:#}"
    );
    assert!(
        condition(&status, "Degraded").is_some_and(|c| c["reason"] == "OOMKilled"),
        "{status:#}"
    );
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_boot_slower_than_the_startup_window_is_a_startup_timeout() {
    let (_, operators) = setup();
    aborting_pool(
        &operators,
        "e2e-startup",
        &[
            ("scenario", "startup-timeout"),
            ("boot", "2s"),
            ("restart", "2s"),
        ],
        "StartupTimeout",
    );
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_liveness_kill_exiting_0_is_a_liveness_timeout() {
    let (_, operators) = setup();
    aborting_pool(
        &operators,
        "e2e-liveness",
        &[("scenario", "liveness"), ("boot", "1s"), ("serve", "3s")],
        "LivenessTimeout",
    );
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_pod_that_ignores_sigterm_is_grace_period_exceeded_on_scale_down() {
    let (_, operators) = setup();
    let ns = namespace("e2e-sigkill");
    let yaml = pool(
        &ns,
        "api",
        2,
        "gunicorn",
        &[("on-delete", "sigkill"), ("boot", "1s")],
        json!({"shutdown": {"drainSeconds": 1, "gracefulTimeoutSeconds": 2}}),
    );
    assert!(apply(&yaml).ok);
    wait_ready(&ns, "api", 2 * MINUTE);
    kubectl_ok(&["scale", "wp/api", "-n", &ns, "--replicas=1"]);
    let status = wait_abort(&ns, "api", "GracePeriodExceeded", 1, 2 * MINUTE);
    assert_eq!(status["aborts"]["last"]["exitCode"], 137, "{status:#}");
    assert_reported(&operators, &ns, "GracePeriodExceeded");
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn sigterm_stops_an_operator_whose_api_server_is_unreachable() {
    let (cluster, _operators) = setup();
    let unreachable = cluster.dir.join("unreachable.kubeconfig");
    let text =
        std::fs::read_to_string(cluster.dir.join("operator.kubeconfig")).expect("kubeconfig");
    let text = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("server:") {
                "    server: https://127.0.0.1:1".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&unreachable, text).expect("write kubeconfig");
    let mut op = Operator::start(
        cluster,
        "operator-unreachable",
        18089,
        "unreachable.kubeconfig",
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(op.running(), "it keeps trying while the API server is away");
    op.signal("TERM");
    let signalled = Instant::now();
    let exit = op.wait_exit(Duration::from_secs(15));
    assert!(exit.is_some(), "still running 15 s after SIGTERM");
    // No reconcile was ever under way: nothing to wait for.
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "took {:?} to stop with nothing in flight",
        signalled.elapsed()
    );
}

/// SIGKILLs the operator holding the Lease and waits for the other to take it: (old, new) leader.
/// The killed one is started again by the next test's setup.
fn kill_the_leader(operators: &mut Operators) -> (String, String) {
    let leader = wait_until(
        "a leader",
        MINUTE,
        || operators.leader().map(str::to_string),
        String::new,
    );
    let index = operators
        .running
        .iter()
        .position(|o| o.identity == leader)
        .expect("the leader runs");
    let killed = operators.running.remove(index);
    killed.signal("KILL");
    drop(killed);
    let new_leader = wait_until(
        "the standby to take the Lease",
        2 * MINUTE,
        || {
            operators
                .leader()
                .filter(|l| *l != leader)
                .map(str::to_string)
        },
        || {
            format!(
                "{:?}",
                kubectl_json(&["get", "lease", "-n", "workerpool-system"])
            )
        },
    );
    (leader, new_leader)
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_new_leader_counts_no_termination_twice() {
    let (_, mut operators) = setup();
    let ns = namespace("e2e-recount");
    // Each pod fails to boot twice (exit 3), then serves.
    let yaml = pool(
        &ns,
        "api",
        2,
        "gunicorn",
        &[
            ("scenario", "exit"),
            ("exit-times", "2"),
            ("boot", "1s"),
            ("restart", "1s"),
        ],
        json!({"failure": {"bootFailureThreshold": 10}}),
    );
    assert!(apply(&yaml).ok);
    let s = wait_ready(&ns, "api", 2 * MINUTE);
    let counted_before = wait_until(
        "4 boot failures counted",
        MINUTE,
        || {
            let s = status(&ns, "api");
            (counted(&s, "BootFailed") == 4).then_some(s)
        },
        || format!("{s:#}"),
    );
    let metrics_before = metrics(&operators);

    // The leader dies; the new one lists every pod again and sees the same four terminations.
    kill_the_leader(&mut operators);
    // A change to the pool makes the new leader reconcile it for certain.
    kubectl_ok(&["annotate", "wp/api", "-n", &ns, "e2e/touched=1"]);
    std::thread::sleep(Duration::from_secs(10));
    let after = status(&ns, "api");
    assert_eq!(counted(&after, "BootFailed"), 4, "{after:#}");
    assert_eq!(
        after["aborts"]["last"], counted_before["aborts"]["last"],
        "{after:#}"
    );
    // The new leader's counters start at 0 and it has nothing new to count.
    let metrics_after = metrics(&operators);
    assert!(
        !metrics_after
            .lines()
            .any(|l| l.starts_with("workerpool_worker_aborts_total")
                && l.contains(&ns)
                && !l.ends_with(" 0")),
        "before: {metrics_before}\nafter: {metrics_after}"
    );
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_leader_killed_mid_ramp_is_replaced_and_the_ramp_finishes_counting_each_failure_once() {
    let (_, mut operators) = setup();
    let ns = namespace("e2e-failover-mid-ramp");
    // Six pods, two at a time; each fails its first boot (exit 3), then serves.
    let yaml = pool(
        &ns,
        "api",
        6,
        "gunicorn",
        &[
            ("scenario", "exit"),
            ("exit-times", "1"),
            ("boot", "2s"),
            ("restart", "1s"),
        ],
        json!({"boot": {"maxConcurrent": 2}, "failure": {"bootFailureThreshold": 20}}),
    );
    assert!(apply(&yaml).ok);
    wait_until(
        "the second ramp step and a counted boot failure",
        2 * MINUTE,
        || {
            let s = status(&ns, "api");
            (s["rampTarget"].as_i64() >= Some(4) && counted(&s, "BootFailed") >= 1).then_some(())
        },
        || describe(&ns, "api"),
    );
    let before = status(&ns, "api");
    assert!(before["rampTarget"].as_i64() < Some(6), "{before:#}");

    kill_the_leader(&mut operators);
    let s = wait_ready(&ns, "api", 2 * MINUTE);
    assert_eq!(s["readyReplicas"], 6, "{s:#}");
    std::thread::sleep(Duration::from_secs(6));
    let s = status(&ns, "api");
    assert_eq!(counted(&s, "BootFailed"), 6, "one per pod: {s:#}");
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn the_standby_takes_over_when_the_leader_is_killed() {
    let (_, mut operators) = setup();
    let (leader, new_leader) = kill_the_leader(&mut operators);
    assert_ne!(new_leader, leader);

    let ns = namespace("e2e-failover");
    assert!(
        apply(&pool(
            &ns,
            "web",
            2,
            "gunicorn",
            &[("boot", "1s")],
            json!({})
        ))
        .ok
    );
    wait_ready(&ns, "web", 2 * MINUTE);
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_converged_fleet_costs_no_requests() {
    let (cluster, _operators) = setup();
    let ns = namespace("e2e-quiet");
    for name in ["a", "b", "c"] {
        assert!(
            apply(&pool(
                &ns,
                name,
                2,
                "gunicorn",
                &[("boot", "1s")],
                json!({})
            ))
            .ok
        );
    }
    for name in ["a", "b", "c"] {
        wait_ready(&ns, name, 2 * MINUTE);
    }
    assert_no_requests(cluster, &ns, MINUTE);
}

/// The operator's requests in the audit log (the audit policy logs only its ServiceAccount).
struct Audit {
    path: PathBuf,
    offset: usize,
}

impl Audit {
    /// Counts from now on.
    fn start(cluster: &Cluster) -> Audit {
        let path = cluster.dir.join("logs/audit.log");
        let offset = std::fs::read_to_string(&path).map_or(0, |t| t.len());
        Audit { path, offset }
    }

    /// Requests since the start about objects in `ns` or cluster-wide, leaving out the Lease and
    /// watches. Pools other tests left crash-looping are not this test's business.
    fn requests_in(&self, ns: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.path).expect("audit log");
        text[self.offset.min(text.len())..]
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|e: &Value| e["stage"] == "ResponseComplete")
            .filter(|e| e["objectRef"]["resource"] != "leases")
            .filter(|e| e["verb"] != "watch")
            .filter(|e| {
                e["objectRef"]["namespace"]
                    .as_str()
                    .is_none_or(|namespace| namespace == ns)
            })
            .collect()
    }
}

fn summary(requests: &[Value]) -> Vec<String> {
    requests
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["verb"].as_str().unwrap_or_default(),
                e["objectRef"]["resource"].as_str().unwrap_or_default(),
                e["objectRef"]["subresource"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

fn count(requests: &[Value], verb: &str, resource: &str) -> usize {
    requests
        .iter()
        .filter(|e| e["verb"] == verb && e["objectRef"]["resource"] == resource)
        .count()
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_child_the_server_refuses_stalls_the_pool_naming_it() {
    let _setup = setup();
    let ns = namespace("e2e-refused");
    // A port name that is no IANA service name (upper case) passes the CRD, and the
    // Deployment's validation refuses it.
    let mut yaml: Value =
        serde_json::from_str(&pool(&ns, "api", 1, "gunicorn", &[], json!({}))).expect("pool JSON");
    yaml["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array_mut()
        .expect("ports")
        .push(json!({"name": "METRICS", "containerPort": 9100}));
    let out = apply(&yaml.to_string());
    assert!(out.ok, "{}", out.stderr);
    let s = wait_until(
        "Stalled=WriteRefused",
        MINUTE,
        || {
            let s = status(&ns, "api");
            condition(&s, "Stalled")
                .is_some_and(|c| c["reason"] == "WriteRefused")
                .then_some(s)
        },
        || describe(&ns, "api"),
    );
    let message = condition(&s, "Stalled").expect("Stalled")["message"].to_string();
    assert!(
        message.contains(&format!("Deployment {ns}/api")) && message.contains("422"),
        "{message}"
    );
    assert!(message.contains("METRICS"), "{message}");
    let events = events(&ns, "reason=WriteRefused", "name");
    assert!(!events.trim().is_empty(), "no WriteRefused Event");
    assert_ne!(s["observedGeneration"], -1, "{s:#}");
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_scale_runs_no_second_init_job_and_costs_a_bounded_number_of_requests() {
    let (cluster, _operators) = setup();
    let ns = namespace("e2e-init-scale");
    let yaml = pool(
        &ns,
        "api",
        2,
        "gunicorn",
        &[("boot", "1s")],
        json!({"init": {"command": ["python", "manage.py", "migrate"]}}),
    );
    assert!(apply(&yaml).ok);
    let s = wait_ready(&ns, "api", 2 * MINUTE);
    assert_eq!(s["init"]["phase"], "Succeeded", "{s:#}");
    let job = s["init"]["job"].as_str().expect("init Job").to_string();

    let audit = Audit::start(cluster);
    kubectl_ok(&["scale", "wp/api", "-n", &ns, "--replicas=4"]);
    wait_until(
        "4 ready",
        2 * MINUTE,
        || (status(&ns, "api")["readyReplicas"] == 4).then_some(()),
        || describe(&ns, "api"),
    );
    let s = wait_ready(&ns, "api", MINUTE);
    assert_eq!(s["init"]["job"], job.as_str(), "the same init Job: {s:#}");
    let jobs = kubectl_ok(&["get", "jobs", "-n", &ns, "-o", "name"]);
    assert!(
        jobs.lines().all(|j| j.ends_with(&job)),
        "a second init Job: {jobs}"
    );
    // What the scale cost: one step of 2 pods is one Deployment write, a few status writes.
    std::thread::sleep(Duration::from_secs(3));
    let requests = audit.requests_in(&ns);
    eprintln!("requests for a scale 2 → 4: {:#?}", summary(&requests));
    assert_eq!(count(&requests, "create", "jobs"), 0);
    assert!(
        count(&requests, "patch", "deployments") <= 1,
        "{:#?}",
        summary(&requests)
    );
    assert!(requests.len() <= 12, "{:#?}", summary(&requests));
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_ramp_survives_an_api_server_restart_without_a_hot_loop() {
    let (cluster, _operators) = setup();
    let ns = namespace("e2e-apiserver-restart");
    let yaml = pool(
        &ns,
        "web",
        6,
        "gunicorn",
        &[("boot", "4s")],
        json!({"boot": {"maxConcurrent": 2}}),
    );
    assert!(apply(&yaml).ok);
    wait_until(
        "the first ramp step",
        MINUTE,
        || (status(&ns, "web")["rampTarget"].as_i64() >= Some(2)).then_some(()),
        || describe(&ns, "web"),
    );
    control_plane(cluster, "restart-apiserver");
    // The watches reconnect on their own back-off (at most 5 s apart), not the controller's.
    let s = wait_ready(&ns, "web", MINUTE);
    assert_eq!(s["readyReplicas"], 6, "{s:#}");
    assert_eq!(counted(&s, "BootFailed"), 0);

    // Converged after the restart: nothing more is asked of the API server.
    assert_no_requests(cluster, &ns, Duration::from_secs(20));
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_scale_down_whose_pods_exit_143_is_no_abort() {
    let _setup = setup();
    let ns = namespace("e2e-scale-down");
    // The default on deletion: the app keeps SIGTERM's default action and exits 143.
    let yaml = pool(&ns, "api", 3, "gunicorn", &[("boot", "1s")], json!({}));
    assert!(apply(&yaml).ok);
    wait_ready(&ns, "api", 2 * MINUTE);
    kubectl_ok(&["scale", "wp/api", "-n", &ns, "--replicas=1"]);
    wait_until(
        "the two pods gone",
        2 * MINUTE,
        || {
            let pods = kubectl_ok(&["get", "pods", "-n", &ns, "-o", "name"]);
            (pods.lines().count() == 1).then_some(())
        },
        || kubectl_ok(&["get", "pods", "-n", &ns, "-o", "wide"]),
    );
    std::thread::sleep(Duration::from_secs(8));
    let s = status(&ns, "api");
    assert!(
        s["aborts"]["counts"]
            .as_array()
            .is_none_or(|counts| counts.is_empty()),
        "a scale-down counted as aborts: {s:#}"
    );
    assert!(!condition_is(&s, "Degraded", "True"), "{s:#}");
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_gunicorn_exit_4_is_an_app_that_failed_to_load() {
    let (_, operators) = setup();
    let status = aborting_pool(
        &operators,
        "e2e-app-load",
        &[
            ("scenario", "exit"),
            ("exit-code", "4"),
            ("boot", "1s"),
            ("restart", "2s"),
        ],
        "AppLoadFailed",
    );
    assert_eq!(status["aborts"]["last"]["exitCode"], 4, "{status:#}");
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_uvicorn_exit_1_at_boot_is_a_boot_failure() {
    let (_, operators) = setup();
    let ns = namespace("e2e-uvicorn-exit-1");
    // uvicorn exits 1 on an import error; a real kubelet backs off 10 s and more before the next
    // run, longer than the settle time a verdict from the boot window waits.
    let yaml = pool(
        &ns,
        "api",
        1,
        "uvicorn",
        &[
            ("scenario", "exit"),
            ("exit-code", "1"),
            ("boot", "1s"),
            ("restart", "8s"),
        ],
        json!({}),
    );
    assert!(apply(&yaml).ok);
    let status = wait_abort(&ns, "api", "BootFailed", 1, 2 * MINUTE);
    assert_eq!(status["aborts"]["last"]["exitCode"], 1, "{status:#}");
    assert_reported(&operators, &ns, "BootFailed");
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_pool_with_only_a_template_becomes_ready() {
    let _setup = setup();
    let ns = namespace("e2e-minimal");
    // A celery worker: no port, no health, no policy.
    let mut yaml = plain_worker(&ns, None);
    yaml["spec"]["template"]["spec"]["containers"][0]["command"] =
        json!(["celery", "-A", "app", "worker"]);
    let out = apply(&yaml.to_string());
    assert!(out.ok, "{}", out.stderr);
    let s = wait_ready(&ns, "worker", 2 * MINUTE);
    assert!(s["effective"]["startupProbe"].is_null(), "{s:#}");
    let deployment = kubectl_json(&["get", "deployment", "worker", "-n", &ns]).expect("Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert!(container["readinessProbe"].is_null(), "{container:#}");
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_deployment_edited_with_kubectl_is_set_back_after_the_pool_converged() {
    let _setup = setup();
    let ns = namespace("e2e-edited");
    assert!(apply(&plain_worker(&ns, None).to_string()).ok);
    wait_ready(&ns, "worker", 2 * MINUTE);
    let grace = |d: &Value| d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].clone();
    let deployment = kubectl_json(&["get", "deployment", "worker", "-n", &ns]).expect("Deployment");
    let derived = grace(&deployment);
    assert!(derived.is_i64(), "{deployment:#}");
    // The operator has found this Deployment current before; a hand edit must still be seen.
    kubectl_ok(&[
        "patch",
        "deployment/worker",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"spec": {"template": {"spec": {"terminationGracePeriodSeconds": 600}}}}"#,
    ]);
    wait_set_back(
        "the edited grace period set back to the derived one",
        &["deployment", "worker", "-n", &ns],
        |deployment| grace(deployment) == derived,
    );
}

/// A pool `worker` of one plain container (the CRD's default size unless `replicas`): no port,
/// no health, no policy.
fn plain_worker(ns: &str, replicas: Option<i32>) -> Value {
    let mut pool = json!({
        "apiVersion": "workerpool.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": "worker", "namespace": ns},
        "spec": {
            "runtime": "generic",
            "template": {"spec": {"containers": [{
                "name": "worker",
                "image": "registry.example/worker:1"
            }]}}
        }
    });
    if let Some(replicas) = replicas {
        pool["spec"]["replicas"] = json!(replicas);
    }
    pool
}

/// Waits up to a minute until the object `get` names (kind, name, namespace flags) reads as
/// `restored` says, as the operator sets back a hand edit of a child.
fn wait_set_back(what: &str, get: &[&str], restored: impl Fn(&Value) -> bool) {
    let read = || kubectl_json(&[&["get"], get].concat());
    wait_until(
        what,
        MINUTE,
        || restored(&read()?).then_some(()),
        || format!("{:#}", read().unwrap_or_default()),
    );
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_label_taken_off_a_budget_with_kubectl_is_put_back() {
    let _setup = setup();
    let ns = namespace("e2e-budget-label");
    assert!(apply(&plain_worker(&ns, Some(2)).to_string()).ok);
    wait_ready(&ns, "worker", 2 * MINUTE);
    const LABEL: &str = "app.kubernetes.io/name";
    let label = |budget: &Value| {
        budget["metadata"]["labels"][LABEL]
            .as_str()
            .map(String::from)
    };
    let budget = kubectl_json(&["get", "pdb", "worker", "-n", &ns]).expect("budget");
    let derived = label(&budget);
    assert!(derived.is_some(), "{budget:#}");
    // The cache keeps a budget's labels packed; an edit of them must still be seen and undone.
    kubectl_ok(&["label", "pdb/worker", "-n", &ns, &format!("{LABEL}-")]);
    wait_set_back(
        "the label taken off the budget put back",
        &["pdb", "worker", "-n", &ns],
        |budget| label(budget) == derived,
    );
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn an_image_that_cannot_be_pulled_is_image_pull_failed() {
    let (_, operators) = setup();
    let status = aborting_pool(
        &operators,
        "e2e-image-pull",
        &[("scenario", "image-pull")],
        "ImagePullFailed",
    );
    let last = &status["aborts"]["last"];
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.contains("Back-off pulling image")),
        "{status:#}"
    );
    assert!(!condition_is(&status, "Ready", "True"), "{status:#}");
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_missing_secret_is_a_config_error() {
    let (_, operators) = setup();
    let status = aborting_pool(
        &operators,
        "e2e-config-error",
        &[("scenario", "config-error")],
        "ConfigError",
    );
    assert!(
        status["aborts"]["last"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("secret \"app-env\" not found")),
        "{status:#}"
    );
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_pool_stuck_on_a_failing_init_container_says_which_and_why() {
    let (_, operators) = setup();
    let ns = namespace("e2e-init-fail");
    let mut yaml: Value = serde_json::from_str(&pool(
        &ns,
        "api",
        1,
        "gunicorn",
        &[("scenario", "init-fail")],
        json!({}),
    ))
    .expect("pool JSON");
    yaml["spec"]["template"]["spec"]["initContainers"] = json!([{
        "name": "migrate",
        "image": "registry.example/app:1",
        "command": ["python", "manage.py", "migrate"]
    }]);
    assert!(apply(&yaml.to_string()).ok);
    let status = wait_until(
        "Ready=False with reason InitContainersFailing",
        2 * MINUTE,
        || {
            let s = status(&ns, "api");
            condition(&s, "Ready")
                .is_some_and(|c| c["reason"] == "InitContainersFailing")
                .then_some(s)
        },
        || describe(&ns, "api"),
    );
    let message = condition(&status, "Ready")
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("init container migrate CrashLoopBackOff after exit 1"),
        "{message}"
    );
    // The init container's exit and crash loop are aborts under its own name.
    let status = wait_abort(&ns, "api", "UnexpectedExit", 1, MINUTE);
    assert_eq!(
        status["aborts"]["last"]["container"], "migrate",
        "{status:#}"
    );
    assert!(counted(&status, "CrashLoop") >= 1, "{status:#}");
    assert_reported(&operators, &ns, "CrashLoop");
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_worker_ended_by_a_signal_is_signaled_with_the_signal_named() {
    let (_, operators) = setup();
    let status = aborting_pool(
        &operators,
        "e2e-signaled",
        &[
            ("scenario", "crash"),
            ("exit-code", "134"),
            ("boot", "1s"),
            ("serve", "3s"),
        ],
        "Signaled",
    );
    let last = &status["aborts"]["last"];
    assert_eq!(
        (&last["exitCode"], &last["signal"]),
        (&json!(134), &json!("SIGABRT")),
        "{status:#}"
    );
    // The pod regains readiness after each crash, for 3 s: the pool never says Ready.
    let ns = "e2e-signaled";
    let status = wait_abort(ns, "api", "Signaled", 3, 2 * MINUTE);
    assert!(!condition_is(&status, "Ready", "True"), "{status:#}");
    let ready = events(ns, "reason=Ready", "name");
    assert_eq!(ready.lines().count(), 0, "{}", describe(ns, "api"));
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn an_evicted_pod_is_counted_once_as_evicted() {
    let (_, operators) = setup();
    let ns = "e2e-evicted";
    let status = aborting_pool(
        &operators,
        ns,
        &[("scenario", "evict"), ("boot", "1s"), ("serve", "3s")],
        "Evicted",
    );
    assert!(
        status["aborts"]["last"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("low on resource: memory")),
        "{status:#}"
    );
    // The container the eviction ended (137, ContainerStatusUnknown) is no second abort.
    std::thread::sleep(Duration::from_secs(8));
    let status = self::status(ns, "api");
    let counts = status["aborts"]["counts"].as_array().cloned();
    assert!(
        counts
            .unwrap_or_default()
            .iter()
            .all(|c| c["reason"] == "Evicted"),
        "{status:#}"
    );
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_pod_no_node_fits_is_unschedulable_with_the_schedulers_message() {
    let (_, operators) = setup();
    let ns = namespace("e2e-unschedulable");
    let mut pool: Value =
        serde_json::from_str(&pool(&ns, "api", 1, "gunicorn", &[], json!({}))).expect("json");
    pool["spec"]["template"]["spec"]["nodeSelector"] = json!({"disktype": "ssd"});
    assert!(apply(&pool.to_string()).ok);
    let status = wait_abort(&ns, "api", "Unschedulable", 1, 2 * MINUTE);
    assert!(
        status["aborts"]["last"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("node(s) didn't match Pod's node affinity/selector")),
        "{status:#}"
    );
    assert_reported(&operators, &ns, "Unschedulable");
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn gunicorns_worker_timeout_is_told_apart_from_a_worker_oom_kill_by_pid() {
    let (_, operators) = setup();
    // KWOK's kubelet API serves this namespace's pods e2e/logs/gunicorn-worker-timeout.log:
    // WORKER TIMEOUT (pid:9) and its SIGKILL, then a SIGKILL of pid 10 with no timeout. The pod
    // keeps booting, never ready, so the operator samples its log through the API server.
    let ns = namespace("e2e-worker-timeout");
    let yaml = pool(
        &ns,
        "api",
        1,
        "gunicorn",
        &[("scenario", "booting")],
        json!({"boot": {"timeoutSeconds": 600}}),
    );
    assert!(apply(&yaml).ok);
    let status = wait_until(
        "WorkerTimeout and OOMKilled from the log",
        2 * MINUTE,
        || {
            let s = status(&ns, "api");
            (counted(&s, "WorkerTimeout") >= 1 && counted(&s, "OOMKilled") >= 1).then_some(s)
        },
        || describe(&ns, "api"),
    );
    assert_eq!(counted(&status, "WorkerTimeout"), 1, "{status:#}");
    assert_eq!(counted(&status, "OOMKilled"), 1, "pid 10 only: {status:#}");
    assert_reported(&operators, &ns, "WorkerTimeout");
    let events = events(&ns, "reason=WorkerTimeout", "json");
    assert!(
        events.contains("worker pid 9") && events.contains("not an OOM"),
        "{events}"
    );
    let timeout = status["effective"]["workerTimeoutSeconds"]
        .as_i64()
        .expect("gunicorn's --timeout");
    assert!(
        events.contains(&format!("--timeout {timeout}s")),
        "{events}"
    );
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn watches_expired_by_an_etcd_compaction_relist_and_converge_without_a_hot_loop() {
    let (cluster, operators) = setup();
    let ns = namespace("e2e-compaction");
    let yaml = pool(&ns, "web", 2, "gunicorn", &[("boot", "1s")], json!({}));
    assert!(apply(&yaml).ok);
    wait_ready(&ns, "web", 2 * MINUTE);
    let op = operators.leading();
    let log_before = op.log().len();

    control_plane(cluster, "compact-etcd");
    // A change made after the compaction reaches the operator only through re-listed watches.
    kubectl_ok(&["scale", "wp/web", "-n", &ns, "--replicas=4"]);
    let s = wait_until(
        "4 of 4 ready after the compaction",
        MINUTE,
        || {
            let s = status(&ns, "web");
            (condition_is(&s, "Ready", "True") && s["readyReplicas"] == 4).then_some(s)
        },
        || describe(&ns, "web"),
    );
    assert_eq!(s["observedGeneration"], 2, "{s:#}");
    let log = op.log();
    let since = &log[log_before.min(log.len())..];
    assert!(
        since.contains("too old resource version") || since.contains("Expired"),
        "no expired watch in the leader's log: {since}"
    );
    // The pod watch may come back after the Deployment's: the pool waits for the pods the
    // Deployment counts to be seen, so the Ready it reads is for good, with nothing left to write.
    assert_no_requests(cluster, &ns, Duration::from_secs(20));
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn status_fields_an_earlier_version_merge_patched_are_handed_to_the_apply_manager() {
    let (_, mut operators) = setup();
    let ns = namespace("e2e-status-upgrade");
    assert!(apply(&plain_worker(&ns, None).to_string()).ok);
    wait_ready(&ns, "worker", 2 * MINUTE);
    // What an earlier version did: the status as a merge patch (an Update entry of the same
    // manager), here with a field this pool no longer has: a generic runtime has no --timeout.
    kubectl_ok(&[
        "patch",
        "wp/worker",
        "-n",
        &ns,
        "--subresource=status",
        "--type=merge",
        "--field-manager=workerpool-operator-status",
        "-p",
        r#"{"status": {"effective": {"workerTimeoutSeconds": 30}}}"#,
    ]);
    // The upgrade: a new process lists every pool and writes the status it computes.
    kill_the_leader(&mut operators);
    let pool = wait_until(
        "the stale field removed and no Update entry of the status manager left",
        MINUTE,
        || {
            let pool = kubectl_json(&["get", "wp", "worker", "-n", &ns, "--show-managed-fields"])?;
            let legacy = pool["metadata"]["managedFields"]
                .as_array()?
                .iter()
                .any(|e| {
                    e["manager"] == "workerpool-operator-status" && e["operation"] == "Update"
                });
            (pool["status"]["effective"]["workerTimeoutSeconds"].is_null() && !legacy)
                .then_some(pool)
        },
        || {
            format!(
                "{:#}",
                kubectl_json(&["get", "wp", "worker", "-n", &ns, "--show-managed-fields"])
                    .unwrap_or_default()
            )
        },
    );
    let spec_managers: Vec<&Value> = pool["metadata"]["managedFields"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["subresource"].is_null())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        spec_managers
            .iter()
            .all(|e| e["manager"] != "workerpool-operator"),
        "the hand-over wrote no field of the spec: {spec_managers:#?}"
    );
    assert!(condition_is(&pool["status"], "Ready", "True"), "{pool:#}");
}

/// Ends counted for the app container (each run once, whatever its reason), and restarts the
/// pods show for it.
fn runs_counted_and_restarts(ns: &str) -> (i64, i64) {
    let s = status(ns, "api");
    let counted: i64 = s["aborts"]["counts"]
        .as_array()
        .map(|counts| {
            counts
                .iter()
                .filter(|c| c["reason"] != "CrashLoop")
                .filter_map(|c| c["count"].as_i64())
                .sum()
        })
        .unwrap_or(0);
    let pods = kubectl_json(&["get", "pods", "-n", ns, "-l", "workerpool.dev/pool=api"])
        .unwrap_or(Value::Null);
    let restarts: i64 = pods["items"]
        .as_array()
        .map(|pods| {
            pods.iter()
                .flat_map(|p| {
                    p["status"]["containerStatuses"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .filter(|c| c["name"] == "app")
                .filter_map(|c| c["restartCount"].as_i64())
                .sum()
        })
        .unwrap_or(0);
    (counted, restarts)
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_crash_looping_pool_never_passes_kubectl_wait_or_kstatus() {
    let (_, _operators) = setup();
    let ns = namespace("e2e-flapping");
    // Each pod boots in 1 s, is ready, and crashes 4 s later, again and again.
    let yaml = pool(
        &ns,
        "api",
        2,
        "generic",
        &[
            ("scenario", "crash"),
            ("boot", "1s"),
            ("serve", "4s"),
            ("restart", "2s"),
        ],
        json!({"failure": {"bootFailureThreshold": 1000}}),
    );
    assert!(apply(&yaml).ok);
    let wait = kubectl_wait_ready(&ns, "api", "60s");
    assert!(
        !wait.ok,
        "kubectl wait passed a crash-looping pool: {}",
        describe(&ns, "api")
    );
    let s = wait_until(
        "Ready=False CrashLooping",
        MINUTE,
        || {
            let s = status(&ns, "api");
            condition(&s, "Ready")
                .is_some_and(|c| c["status"] == "False" && c["reason"] == "CrashLooping")
                .then_some(s)
        },
        || describe(&ns, "api"),
    );
    // kstatus reads Reconciling and Stalled: in progress, never Current.
    assert!(condition_is(&s, "Reconciling", "True"), "{s:#}");
    assert!(!condition_is(&s, "Stalled", "True"), "{s:#}");
    assert!(condition_is(&s, "Degraded", "True"), "{s:#}");
    assert_eq!(s["phase"], "Degraded", "{s:#}");
    let ready = condition(&s, "Ready").expect("Ready");
    assert!(
        ready["message"]
            .as_str()
            .is_some_and(|m| m.contains("crashing: pod ")),
        "{s:#}"
    );
    // Never Ready since it was created, not even between two crashes.
    let ready_events = events(&ns, "reason=Ready", "name");
    assert_eq!(ready_events.lines().count(), 0, "{}", describe(&ns, "api"));
    // `-o wide` names the ramp target, revision, circuit and why it is not Ready.
    let wide = kubectl_ok(&["get", "wp", "api", "-n", &ns, "-o", "wide"]);
    let header = wide.lines().next().unwrap_or_default();
    for column in ["TARGET", "REVISION", "CIRCUIT-OPEN", "REASON"] {
        assert!(header.contains(column), "{wide}");
    }
    assert!(wide.contains("CrashLooping"), "{wide}");
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_template_change_is_not_ready_until_its_own_pods_are() {
    let _setup = setup();
    let ns = namespace("e2e-template-change");
    let yaml = |boot: &str| pool(&ns, "api", 2, "generic", &[("boot", boot)], json!({}));
    assert!(apply(&yaml("1s")).ok);
    wait_ready(&ns, "api", 2 * MINUTE);
    // Every version of the pool from here on, as a watch delivers them.
    let watch = watching(
        "kubectl",
        &["get", "wp", "api", "-n", &ns, "--watch-only", "-o", "json"],
    );
    std::thread::sleep(Duration::from_secs(2));
    // The new template's pods take 6 s to boot.
    let changed_at = Instant::now();
    let out = apply(&yaml("6s"));
    assert!(out.ok, "{}", out.stderr);
    let wait = kubectl_wait_ready(&ns, "api", "120s");
    let waited = changed_at.elapsed();
    assert!(wait.ok, "{}: {}", wait.stderr, describe(&ns, "api"));
    assert!(
        waited >= Duration::from_secs(5),
        "kubectl wait passed {waited:?} after the change, before the new pods booted: {}",
        describe(&ns, "api")
    );
    std::thread::sleep(Duration::from_secs(1));
    let mut watch = watch;
    let _ = watch.kill();
    let seen = watch.wait_with_output().expect("kubectl get --watch");
    let versions: Vec<Value> = serde_json::Deserializer::from_slice(&seen.stdout)
        .into_iter::<Value>()
        .filter_map(Result::ok)
        .collect();
    let generation = &versions.last().expect("the pool's versions")["metadata"]["generation"];
    let first = versions
        .iter()
        .find(|v| v["status"]["observedGeneration"] == *generation)
        .expect("a status at the new generation");
    // The first status at the new generation was written before the Deployment controller
    // replaced a pod: not Ready on the old pods' counts, and Reconciling.
    assert!(
        condition_is(&first["status"], "Ready", "False"),
        "{:#}",
        first["status"]
    );
    assert!(
        condition_is(&first["status"], "Reconciling", "True"),
        "{:#}",
        first["status"]
    );
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn runs_that_end_while_no_operator_runs_are_counted_once_when_one_is_back() {
    let (cluster, mut operators) = setup();
    let ns = namespace("e2e-unseen");
    let yaml = pool(
        &ns,
        "api",
        1,
        "generic",
        &[
            ("scenario", "crash"),
            ("boot", "1s"),
            ("serve", "6s"),
            ("restart", "4s"),
        ],
        json!({"failure": {"bootFailureThreshold": 1000}}),
    );
    assert!(apply(&yaml).ok);
    wait_until(
        "two runs counted",
        2 * MINUTE,
        || (runs_counted_and_restarts(&ns).0 >= 2).then_some(()),
        || describe(&ns, "api"),
    );
    // No operator for 30 s while the pod keeps crashing (every 11 s: each run is seen settled
    // for a while, so counted = restart count can be read between two exits).
    operators.stop_all();
    let (counted_before, restarts_before) = runs_counted_and_restarts(&ns);
    std::thread::sleep(Duration::from_secs(30));
    let (_, restarts_away) = runs_counted_and_restarts(&ns);
    assert!(
        restarts_away >= restarts_before + 2,
        "the pod did not restart while the operator was away: {restarts_before} → {restarts_away}"
    );
    operators.ensure_running(cluster);
    // Every run that ended is counted once: counted = restart count (read in one go).
    let (counted, restarts) = wait_until(
        "terminations counted = restart count",
        MINUTE,
        || {
            let (counted, restarts) = runs_counted_and_restarts(&ns);
            (counted == restarts && restarts >= restarts_away).then_some((counted, restarts))
        },
        || {
            format!(
                "{:?}\n{}",
                runs_counted_and_restarts(&ns),
                describe(&ns, "api")
            )
        },
    );
    assert!(counted > counted_before + 1, "{counted_before} → {counted}");
    assert!(restarts >= restarts_away);
    let events = kubectl_ok(&["get", "events", "-n", &ns, "-o", "json"]);
    assert!(
        events.contains("(inferred)"),
        "no Event says a run was inferred: {events}"
    );
    // Across the restart, each pod's aborts of one reason stay one series (one more for the
    // inferred ones): the new operators bumped the series the stopped ones began.
    let (_, before_more) = runs_counted_and_restarts(&ns);
    wait_until(
        "two more exits counted",
        MINUTE,
        || (runs_counted_and_restarts(&ns).0 >= before_more + 2).then_some(()),
        || describe(&ns, "api"),
    );
    let list = kubectl_json(&["get", "events.events.k8s.io", "-n", &ns]).expect("Events");
    let mut series: std::collections::BTreeMap<(String, String, String), Vec<i64>> =
        std::collections::BTreeMap::new();
    for event in list["items"].as_array().into_iter().flatten() {
        if event["reportingController"] != "workerpool-operator" || event["type"] != "Warning" {
            continue;
        }
        let key = (
            event["related"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            event["reason"].as_str().unwrap_or_default().to_string(),
            event["action"].as_str().unwrap_or_default().to_string(),
        );
        series
            .entry(key)
            .or_default()
            .push(event["series"]["count"].as_i64().unwrap_or(1));
    }
    assert!(!series.is_empty(), "{list:#}");
    for (key, counts) in &series {
        assert_eq!(
            counts.len(),
            1,
            "{key:?} is spread over {} Events: {counts:?}",
            counts.len()
        );
    }
    assert!(
        series.values().any(|counts| counts[0] > 2),
        "no series counted on across the restart: {series:?}"
    );
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_pool_with_an_occasional_abort_stays_ready_and_passes_kubectl_wait() {
    let (_, _operators) = setup();
    let ns = namespace("e2e-occasional");
    // Each pod is OOM-killed once a minute after serving: one abort per pod in a while is
    // occasional, and the pool is Ready (and Degraded) between them.
    let yaml = pool(
        &ns,
        "api",
        2,
        "gunicorn",
        &[
            ("scenario", "oom"),
            ("boot", "1s"),
            ("serve", "60s"),
            ("restart", "2s"),
        ],
        json!({}),
    );
    assert!(apply(&yaml).ok);
    wait_abort(&ns, "api", "OOMKilled", 2, 3 * MINUTE);
    let wait = kubectl_wait_ready(&ns, "api", "40s");
    assert!(wait.ok, "{}\n{}", wait.stderr, describe(&ns, "api"));
    let s = status(&ns, "api");
    assert!(condition_is(&s, "Degraded", "True"), "{s:#}");
    assert!(
        !condition_is(&s, "Reconciling", "True"),
        "kstatus: Current: {s:#}"
    );
    assert!(
        !condition_is(&s, "Stalled", "True"),
        "no circuit for OOM kills: {s:#}"
    );
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_namespace_being_deleted_takes_its_pools_without_an_error_storm() {
    let (_, operators) = setup();
    let ns = namespace("e2e-doomed");
    let yaml = pool(
        &ns,
        "api",
        2,
        "gunicorn",
        &[
            ("scenario", "exit"),
            ("exit-code", "3"),
            ("boot", "1s"),
            ("restart", "2s"),
        ],
        json!({"failure": {"bootFailureThreshold": 1000}}),
    );
    assert!(apply(&yaml).ok);
    wait_abort(&ns, "api", "BootFailed", 2, 2 * MINUTE);
    let logged_before: Vec<usize> = operators.running.iter().map(|o| o.log().len()).collect();
    kubectl_ok(&["delete", "namespace", &ns, "--wait=true", "--timeout=120s"]);
    std::thread::sleep(Duration::from_secs(5));
    for (operator, before) in operators.running.iter().zip(logged_before) {
        let log = operator.log();
        let after = &log[before.min(log.len())..];
        let noisy: Vec<&str> = after
            .lines()
            .filter(|l| l.contains(&ns) && (l.contains(" WARN ") || l.contains(" ERROR ")))
            .collect();
        assert!(
            noisy.is_empty(),
            "{} logged {} warnings for a namespace being deleted:\n{}",
            operator.identity,
            noisy.len(),
            noisy.join("\n")
        );
    }
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn render_piped_into_kubectl_apply_is_what_the_pool_says() {
    let _setup = setup();
    let ns = namespace("e2e-render");
    // Strings a YAML 1.1 reader (kubectl's) takes for booleans, nulls and numbers unless quoted.
    let yaml = json!({
        "apiVersion": "workerpool.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": "api", "namespace": ns},
        "spec": {
            "runtime": "gunicorn",
            "template": {
                "metadata": {"annotations": {"example.com/debug": "on", "example.com/mode": "0755"},
                             "labels": {"canary": "yes", "tier": "no"}},
                "spec": {"containers": [{
                    "name": "app", "image": "registry.example/app:1",
                    "args": ["gunicorn", "app:wsgi", "--log-level", "off"],
                    "env": [{"name": "FEATURE", "value": "off"}, {"name": "EMPTY", "value": "~"}],
                    "ports": [{"name": "http", "containerPort": 8000}]
                }]}
            }
        }
    })
    .to_string();
    let rendered = operator_cli(&["render", "-f", "-"], &yaml);
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let objects = String::from_utf8_lossy(&rendered.stdout).into_owned();
    let applied = kubectl_with(
        &["apply", "--dry-run=server", "-o", "json", "-f", "-"],
        Some(&objects),
    );
    assert!(applied.ok, "{}\n{objects}", applied.stderr);
    let list: Value = serde_json::from_str(&applied.stdout).expect("kubectl prints JSON");
    let deployment = list["items"]
        .as_array()
        .and_then(|items| items.iter().find(|o| o["kind"] == "Deployment"))
        .cloned()
        .unwrap_or_else(|| list.clone());
    let template = &deployment["spec"]["template"];
    assert_eq!(
        template["metadata"]["annotations"]["example.com/debug"],
        "on"
    );
    assert_eq!(
        template["metadata"]["annotations"]["example.com/mode"],
        "0755"
    );
    assert_eq!(template["metadata"]["labels"]["canary"], "yes");
    let app = &template["spec"]["containers"][0];
    assert_eq!(app["args"][3], "off");
    assert_eq!(app["env"][0]["value"], "off");
    assert_eq!(app["env"][1]["value"], "~");
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_migration_behind_a_native_sidecar_runs_with_it_and_the_pool_rolls_out() {
    let _setup = setup();
    let ns = namespace("e2e-sidecar");
    let mut yaml: Value = serde_json::from_str(&pool(
        &ns,
        "api",
        2,
        "gunicorn",
        &[("boot", "1s")],
        json!({"init": {"command": ["python", "manage.py", "migrate"]}}),
    ))
    .expect("pool JSON");
    yaml["spec"]["template"]["spec"]["initContainers"] = json!([
        {"name": "cloud-sql-proxy", "image": "registry.example/cloud-sql-proxy:2",
         "restartPolicy": "Always", "args": ["--port=5432", "shop:europe-west1:db"]}
    ]);
    assert!(apply(&yaml.to_string()).ok);
    let s = wait_ready(&ns, "api", 3 * MINUTE);
    assert_eq!(s["init"]["phase"], "Succeeded", "{s:#}");
    let job_name = s["init"]["job"].as_str().expect("the init Job").to_string();
    let job = kubectl_json(&["get", "job", &job_name, "-n", &ns]).expect("the init Job");
    let sidecar = &job["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(sidecar["name"], "cloud-sql-proxy", "{job:#}");
    assert_eq!(sidecar["restartPolicy"], "Always", "{job:#}");
    assert!(condition_is(&s, "PolicyConflict", "False"), "{s:#}");
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_stop_signal_on_which_the_app_server_does_not_drain_is_named_on_the_pool() {
    let _setup = setup();
    let ns = namespace("e2e-stop-signal");
    let conflict = |ns: &str| {
        condition(&status(ns, "api"), "PolicyConflict")
            .filter(|c| c["status"] == "True")
            .and_then(|c| c["message"].as_str().map(str::to_string))
    };

    // Pods whose image stops them with SIGQUIT, as the kubelet reports it.
    let yaml = pool(
        &ns,
        "api",
        2,
        "gunicorn",
        &[("boot", "1s"), ("stop-signal", "SIGQUIT")],
        json!({"boot": {"maxConcurrent": 2}}),
    );
    assert!(apply(&yaml).ok);
    let message = wait_until(
        "PolicyConflict naming the reported SIGQUIT",
        2 * MINUTE,
        || conflict(&ns).filter(|m| m.contains("SIGQUIT")),
        || describe(&ns, "api"),
    );
    assert!(
        message.contains("(the image's STOPSIGNAL)")
            && message.contains("gunicorn's quick shutdown")
            && message.contains("STOPSIGNAL SIGTERM"),
        "{message}"
    );
    // A warning, not a stall: the pool still becomes Ready.
    let ready = wait_ready(&ns, "api", 2 * MINUTE);
    assert!(condition_is(&ready, "Stalled", "False"), "{ready:#}");
    let warning = events(&ns, "reason=PolicyConflict", "jsonpath={.items[*].message}");
    assert!(warning.contains("SIGQUIT"), "{warning}");

    // The template's own lifecycle.stopSignal survives the CRD's schema and is named too; the
    // pods now report SIGTERM, which drains.
    let mut pool: Value = serde_json::from_str(&pool(
        &ns,
        "api",
        2,
        "gunicorn",
        &[("boot", "1s"), ("stop-signal", "SIGTERM")],
        json!({"boot": {"maxConcurrent": 2}}),
    ))
    .expect("pool JSON");
    pool["spec"]["template"]["spec"]["os"] = json!({"name": "linux"});
    pool["spec"]["template"]["spec"]["containers"][0]["lifecycle"] =
        json!({"stopSignal": "SIGINT"});
    assert!(apply(&pool.to_string()).ok);
    let kept = kubectl_ok(&[
        "get",
        "wp",
        "api",
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec.template.spec.containers[0].lifecycle.stopSignal}",
    ]);
    assert_eq!(kept, "SIGINT");
    let message = wait_until(
        "PolicyConflict naming lifecycle.stopSignal SIGINT and nothing reported",
        2 * MINUTE,
        || {
            conflict(&ns)
                .filter(|m| m.contains("lifecycle.stopSignal SIGINT") && !m.contains("SIGQUIT"))
        },
        || describe(&ns, "api"),
    );
    assert!(
        message.contains("set lifecycle.stopSignal: SIGTERM"),
        "{message}"
    );
    let applied = kubectl_ok(&[
        "get",
        "deployment",
        "api",
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec.template.spec.containers[0].lifecycle.stopSignal}",
    ]);
    assert_eq!(
        applied, "SIGINT",
        "the user's own value is applied as written"
    );
    let _ = kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn worker_classes_and_uvicorns_supervisor_get_what_their_timeouts_mean() {
    let _setup = setup();
    let ns = namespace("e2e-worker-models");
    let with_command = |name: &str, runtime: &str, command: Value| {
        let mut pool: Value = serde_json::from_str(&pool(
            &ns,
            name,
            1,
            runtime,
            &[("boot", "1s")],
            json!({"boot": {"timeoutSeconds": 75}}),
        ))
        .expect("pool JSON");
        pool["spec"]["template"]["spec"]["containers"][0]["command"] = command;
        assert!(apply(&pool.to_string()).ok);
    };
    with_command(
        "threads",
        "gunicorn",
        json!(["gunicorn", "-k", "gthread", "app.wsgi"]),
    );
    with_command(
        "asgi",
        "uvicorn",
        json!(["uvicorn", "app.main:app", "--workers", "4"]),
    );

    // gthread: Ready, with a warning that --timeout is a heartbeat.
    let threads = wait_ready(&ns, "threads", 2 * MINUTE);
    assert_eq!(
        threads["effective"]["workerClass"], "gthread",
        "{threads:#}"
    );
    let conflict = condition(&threads, "PolicyConflict").expect("PolicyConflict");
    assert_eq!(conflict["status"], "True", "{threads:#}");
    assert!(
        conflict["message"]
            .as_str()
            .is_some_and(|m| m.contains("worker class gthread") && m.contains("heartbeat")),
        "{conflict:#}"
    );
    assert!(condition_is(&threads, "Stalled", "False"));

    // uvicorn --workers 4: the supervisor's health check waits as long as a boot.
    let asgi = wait_ready(&ns, "asgi", 2 * MINUTE);
    assert_eq!(
        asgi["effective"]["workerHealthcheckTimeoutSeconds"], 75,
        "{asgi:#}"
    );
    assert!(condition_is(&asgi, "PolicyConflict", "False"), "{asgi:#}");
    let env = kubectl_ok(&[
        "get",
        "deployment",
        "asgi",
        "-n",
        &ns,
        "-o",
        "jsonpath={range .spec.template.spec.containers[0].env[*]}{.name}={.value}{\"\\n\"}{end}",
    ]);
    assert!(
        env.lines()
            .any(|l| l == "UVICORN_TIMEOUT_WORKER_HEALTHCHECK=75"),
        "{env}"
    );
    let _ = kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_worker_process_uvicorns_supervisor_replaced_is_a_worker_timeout_read_from_its_log() {
    let (_, operators) = setup();
    // KWOK's kubelet API serves this namespace's pods e2e/logs/uvicorn-supervisor.log, where the
    // supervisor of `uvicorn --workers 4` replaces worker process 9. The pod keeps booting, never
    // ready, so the operator samples its log through the API server.
    let ns = namespace("e2e-uvicorn-supervisor");
    let mut pool: Value = serde_json::from_str(&pool(
        &ns,
        "api",
        1,
        "uvicorn",
        &[("scenario", "booting")],
        json!({"boot": {"timeoutSeconds": 600}}),
    ))
    .expect("pool JSON");
    pool["spec"]["template"]["spec"]["containers"][0]["command"] =
        json!(["uvicorn", "app.main:app", "--workers", "4"]);
    assert!(apply(&pool.to_string()).ok);
    let status = wait_until(
        "WorkerTimeout from the supervisor's log",
        2 * MINUTE,
        || {
            let s = status(&ns, "api");
            (counted(&s, "WorkerTimeout") >= 1).then_some(s)
        },
        || describe(&ns, "api"),
    );
    assert_eq!(counted(&status, "WorkerTimeout"), 1, "{status:#}");
    assert_reported(&operators, &ns, "WorkerTimeout");
    let events = events(&ns, "reason=WorkerTimeout", "json");
    assert!(
        events.contains("uvicorn's supervisor replaced worker process 9")
            && events.contains("--timeout-worker-healthcheck 600s"),
        "{events}"
    );
}

/// A celery pool `api` of one worker whose health check is an exec, as the sample's.
fn celery_pool(ns: &str, behaviour: &[(&str, &str)], policy: Value) -> String {
    let mut pool: Value =
        serde_json::from_str(&pool(ns, "api", 1, "celery", behaviour, policy)).expect("pool JSON");
    let app = &mut pool["spec"]["template"]["spec"]["containers"][0];
    app["command"] = json!(["celery", "-A", "shop", "worker", "--loglevel=INFO"]);
    app["resources"] = json!({"limits": {"cpu": "2", "memory": "1Gi"}});
    if let Some(app) = app.as_object_mut() {
        app.remove("ports");
    }
    pool["spec"]["health"] = json!({"check": "exec", "command": ["sh", "-c", "exec celery -A shop inspect ping -d \"celery@$HOSTNAME\""]});
    pool.to_string()
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_celery_childs_oom_and_its_hard_time_limit_are_counted_once_each_from_its_log() {
    let (_, operators) = setup();
    // KWOK's kubelet API serves this namespace's pods e2e/logs/celery-children.log: pool child 812
    // SIGKILLed alone, child 813 killed by billiard after its task's hard time limit. The pod keeps
    // booting, never ready, so the operator samples its log through the API server.
    let ns = namespace("e2e-celery-children");
    let policy = json!({"boot": {"timeoutSeconds": 600}, "requests": {"timeoutSeconds": 300},
                        "shutdown": {"gracefulTimeoutSeconds": 300}});
    assert!(apply(&celery_pool(&ns, &[("scenario", "booting")], policy)).ok);
    wait_until(
        "an OOMKilled and a WorkerTimeout from the worker's log",
        2 * MINUTE,
        || {
            let s = status(&ns, "api");
            (counted(&s, "OOMKilled") >= 1 && counted(&s, "WorkerTimeout") >= 1).then_some(s)
        },
        || describe(&ns, "api"),
    );
    // Sampled again after the interval: still one each.
    std::thread::sleep(Duration::from_secs(35));
    let status = status(&ns, "api");
    assert_eq!(counted(&status, "OOMKilled"), 1, "{status:#}");
    assert_eq!(counted(&status, "WorkerTimeout"), 1, "{status:#}");
    assert_reported(&operators, &ns, "OOMKilled");
    assert_reported(&operators, &ns, "WorkerTimeout");
    let timeouts = events(&ns, "reason=WorkerTimeout", "json");
    assert!(
        timeouts.contains("hard time limit (300.0s) for task shop.tasks.send_digest")
            && timeouts.contains("not an OOM"),
        "{timeouts}"
    );
    let ooms = events(&ns, "reason=OOMKilled", "json");
    assert!(
        ooms.contains("pool child pid 812") && ooms.contains("1Gi"),
        "{ooms}"
    );
    // The derived options reached the worker.
    let deployment = kubectl_json(&["get", "deployment", "api", "-n", &ns]).expect("Deployment");
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains("CELERY_WORKER_CONCURRENCY") && env.contains("CELERY_WORKER_TIME_LIMIT"),
        "{env}"
    );
    let effective = &status["effective"];
    assert_eq!(effective["concurrency"], 2, "{effective:#}");
    assert_eq!(
        effective["concurrencySource"], "ContainerCpus",
        "{effective:#}"
    );
    assert_eq!(effective["taskTimeLimitSeconds"], 300, "{effective:#}");
}

#[test]
#[ignore = "needs a control plane: run e2e/real-cluster"]
fn a_celery_worker_that_cannot_reach_its_broker_is_named_without_credentials_and_ready_once_it_is_up()
 {
    let (_, operators) = setup();
    // e2e/logs/celery-broker.log: a worker retrying its redis broker. The pod takes 75 s to become
    // ready (its health check waits for the broker): a sample is due 30 s into the run, and
    // another at 60 s on a slow machine.
    let ns = namespace("e2e-celery-broker");
    let policy = json!({"boot": {"timeoutSeconds": 120}, "requests": {"timeoutSeconds": 60},
                        "shutdown": {"gracefulTimeoutSeconds": 60}});
    assert!(apply(&celery_pool(&ns, &[("boot", "75s")], policy)).ok);
    let status = wait_until(
        "BrokerUnreachable from the worker's log",
        2 * MINUTE,
        || {
            let s = status(&ns, "api");
            (counted(&s, "BrokerUnreachable") >= 1).then_some(s)
        },
        || describe(&ns, "api"),
    );
    assert_eq!(counted(&status, "BrokerUnreachable"), 1, "{status:#}");
    assert_reported(&operators, &ns, "BrokerUnreachable");
    let described = describe(&ns, "api");
    assert!(
        described.contains("redis://redis.shop:6379/0"),
        "{described}"
    );
    assert!(
        !described.contains("**@") && !described.contains("shop:**"),
        "{described}"
    );
    let events = events(&ns, "reason=BrokerUnreachable", "json");
    assert!(!events.contains("**@"), "{events}");
    // Once the broker answers, the health check passes and the pool is Ready.
    wait_ready(&ns, "api", 2 * MINUTE);
}

// --- the kubectl plugin ------------------------------------------------------------------------

/// `kubectl workerpool ARGS`, kubectl finding the plugin on the PATH as a user's would.
fn kubectl_workerpool(args: &[&str]) -> (Option<i32>, String, String) {
    let cluster = cluster().expect("a control plane");
    let plugin_dir = PathBuf::from(env!("CARGO_BIN_EXE_kubectl-workerpool"))
        .parent()
        .expect("the plugin's directory")
        .to_path_buf();
    let path = std::env::join_paths(std::iter::once(plugin_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("PATH");
    let out = Command::new("kubectl")
        .arg("workerpool")
        .args(args)
        .env("KUBECONFIG", cluster.dir.join("admin.kubeconfig"))
        .env("PATH", path)
        .output()
        .expect("kubectl on the PATH");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A plain Deployment (no pool) whose gunicorn pods behave as `behaviour` asks, with `pod` merged
/// into its pod spec.
fn plain_deployment(
    ns: &str,
    name: &str,
    replicas: u32,
    behaviour: &[(&str, &str)],
    pod: Value,
) -> String {
    let annotations: serde_json::Map<String, Value> = behaviour
        .iter()
        .map(|(k, v)| (format!("e2e.workerpool.dev/{k}"), json!(v)))
        .collect();
    let mut spec = json!({"containers": [{
        "name": "app",
        "image": "registry.example/app:1",
        "command": ["gunicorn", "--bind", "0.0.0.0:8000", format!("{name}.wsgi")],
        "ports": [{"name": "http", "containerPort": 8000}],
        "resources": {"limits": {"memory": "512Mi"}}
    }]});
    if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), pod) {
        spec.extend(extra);
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": spec
            }
        }
    })
    .to_string()
}

#[test]
#[ignore = "needs a control plane: e2e/real-cluster"]
fn the_plugin_shows_a_boot_failing_pool_and_says_why_a_plain_deployment_fails() {
    let (_, _operators) = setup();
    let ns = namespace("e2e-plugin-get");
    let failing = [
        ("scenario", "exit"),
        ("exit-code", "3"),
        ("boot", "1s"),
        ("restart", "2s"),
    ];
    assert!(apply(&pool(&ns, "api", 1, "gunicorn", &failing, json!({}))).ok);
    wait_abort(&ns, "api", "BootFailed", 1, 2 * MINUTE);

    let (code, text, err) = kubectl_workerpool(&["get", "api", "-n", &ns]);
    assert_eq!(code, Some(0), "{err}");
    assert!(text.contains("Name:       api"), "{text}");
    assert!(text.contains("└──api-"), "the pod is in the tree:\n{text}");
    assert!(
        text.contains("last abort: BootFailed (app, exit 3)"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "no colour off a terminal:\n{text}");
    let (_, json_text, _) = kubectl_workerpool(&["get", "api", "-n", &ns, "-o", "json"]);
    let tree: Value = serde_json::from_str(&json_text).expect("get -o json is JSON");
    assert_eq!(
        tree["pods"][0]["lastAbort"]["reason"], "BootFailed",
        "{tree:#}"
    );

    // `get -w` draws the same tree from its watches.
    let mut watching = watching(
        env!("CARGO_BIN_EXE_kubectl-workerpool"),
        &["get", "api", "-w", "-n", &ns],
    );
    std::thread::sleep(Duration::from_secs(4));
    let _ = watching.kill();
    let watched = watching.wait_with_output().expect("the plugin exits");
    let watched = String::from_utf8_lossy(&watched.stdout);
    assert!(watched.contains("last abort: BootFailed"), "{watched}");

    // A Deployment no pool manages, whose gunicorn exits 3: the same diagnosis before adoption.
    assert!(apply(&plain_deployment(&ns, "legacy", 1, &failing, json!({}))).ok);
    wait_until(
        "a pod of deployment/legacy that exited 3",
        2 * MINUTE,
        || {
            let pods = kubectl_json(&["get", "pods", "-n", &ns, "-l", "app=legacy"])?;
            pods["items"].as_array()?.iter().find(|p| {
                p["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 3
            })?;
            Some(())
        },
        || kubectl(&["get", "pods", "-n", &ns, "-o", "wide"]).stdout,
    );
    let (code, text, err) = kubectl_workerpool(&["why", "deployment/legacy", "-n", &ns]);
    assert_eq!(code, Some(0), "{err}");
    assert!(text.contains("BootFailed"), "{text}");
    assert!(text.contains("legacy-"), "the pod is named:\n{text}");
}

#[test]
#[ignore = "needs a control plane: e2e/real-cluster"]
fn the_plugin_audits_unmanaged_deployments_and_converts_one_the_server_accepts() {
    let (_, _operators) = setup();
    let ns = namespace("e2e-plugin-audit");
    // A grace period of 20 s for a 10 s preStop and gunicorn's 30 s graceful timeout.
    let pod = json!({"terminationGracePeriodSeconds": 20});
    let mut web: Value =
        serde_json::from_str(&plain_deployment(&ns, "web", 3, &[], pod)).expect("JSON");
    let app = &mut web["spec"]["template"]["spec"]["containers"][0];
    app["command"] = json!([
        "gunicorn",
        "--graceful-timeout",
        "30",
        "--worker-tmp-dir",
        "/dev/shm",
        "web.wsgi"
    ]);
    app["lifecycle"] = json!({"preStop": {"sleep": {"seconds": 10}}});
    assert!(apply(&web.to_string()).ok);

    let (code, text, err) = kubectl_workerpool(&["audit", "-n", &ns]);
    assert_eq!(code, Some(1), "findings fail the command: {text}{err}");
    let row = text
        .lines()
        .find(|l| l.contains("grace-period"))
        .unwrap_or_else(|| panic!("no grace-period finding:\n{text}"));
    for needle in [
        &ns,
        "web",
        "gunicorn",
        "terminationGracePeriodSeconds 20",
        "preStop hook's 10s",
        "--graceful-timeout 30s = 40s",
        "Fix: terminationGracePeriodSeconds: 45",
    ] {
        assert!(row.contains(needle), "{needle:?} not in {row}");
    }
    let (code, json_text, _) = kubectl_workerpool(&["audit", "-A", "-o", "json"]);
    assert_eq!(code, Some(1));
    let audits: Value = serde_json::from_str(&json_text).expect("audit -o json is JSON");
    assert!(
        audits
            .as_array()
            .expect("a list")
            .iter()
            .any(|a| a["namespace"] == ns.as_str() && a["name"] == "web"),
        "{audits:#}"
    );

    let (code, yaml, err) = kubectl_workerpool(&["convert", "deployment/web", "-n", &ns]);
    assert_eq!(code, Some(0), "{err}");
    let dry_run = kubectl_with(&["apply", "--dry-run=server", "-f", "-"], Some(&yaml));
    assert!(dry_run.ok, "{}\n{yaml}", dry_run.stderr);
    let pool: Value = serde_yaml::from_str(&yaml).expect("YAML");
    assert_eq!(pool["metadata"]["name"], "web-pool");
    assert_eq!(pool["spec"]["replicas"], 3);
    assert_eq!(
        pool["spec"]["policy"]["shutdown"]["gracefulTimeoutSeconds"],
        30
    );
    assert_eq!(pool["spec"]["policy"]["shutdown"]["drainSeconds"], 10);
    assert!(
        yaml.contains("terminationGracePeriodSeconds: 20 → 45"),
        "the changed grace period is said:\n{yaml}"
    );
}

// --- what a pool costs ---------------------------------------------------------------------------

#[test]
#[ignore = "needs a control plane: e2e/real-cluster"]
fn a_pool_has_a_budget_only_where_it_protects_a_pod_and_deletes_its_own_when_turned_off() {
    let (cluster, _operators) = setup();
    let ns = namespace("e2e-budget");
    let budget_of = |name: &str| kubectl_json(&["get", "pdb", name, "-n", &ns]);
    let effective = |name: &str| status(&ns, name)["effective"]["disruptionBudget"].clone();
    assert!(
        apply(&pool(
            &ns,
            "api",
            3,
            "gunicorn",
            &[("boot", "1s")],
            json!({})
        ))
        .ok
    );
    assert!(
        apply(&pool(
            &ns,
            "one",
            1,
            "gunicorn",
            &[("boot", "1s")],
            json!({})
        ))
        .ok
    );
    wait_ready(&ns, "api", 2 * MINUTE);
    wait_ready(&ns, "one", 2 * MINUTE);
    let budget = budget_of("api").expect("a budget for 3 replicas");
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    assert_eq!(
        budget["metadata"]["ownerReferences"][0]["kind"],
        "WorkerPool"
    );
    assert_eq!(effective("api"), "Applied");
    // One replica that maxUnavailable 1 lets go: a budget would protect nothing.
    assert!(budget_of("one").is_none(), "{:?}", budget_of("one"));
    assert_eq!(effective("one"), "NothingToProtect");

    let audit = Audit::start(cluster);
    let off = r#"{"spec":{"policy":{"disruption":{"budget":false}}}}"#;
    kubectl_ok(&["patch", "wp", "api", "-n", &ns, "--type=merge", "-p", off]);
    wait_until(
        "the budget of pool api deleted",
        MINUTE,
        || budget_of("api").is_none().then_some(()),
        || describe(&ns, "api"),
    );
    wait_until(
        "disruptionBudget Disabled",
        MINUTE,
        || (effective("api") == "Disabled").then_some(()),
        || describe(&ns, "api"),
    );
    let requests = audit.requests_in(&ns);
    assert_eq!(
        count(&requests, "delete", "poddisruptionbudgets"),
        1,
        "{:#?}",
        summary(&requests)
    );

    // A budget someone else made under the name of a pool that wants none is not the pool's
    // business: the pool stays Ready and the budget stays as it was made.
    kubectl_ok(&[
        "create",
        "pdb",
        "one",
        "-n",
        &ns,
        "--selector=team=theirs",
        "--min-available=1",
    ]);
    std::thread::sleep(Duration::from_secs(5));
    let s = wait_ready(&ns, "one", MINUTE);
    assert!(condition_is(&s, "Stalled", "False"), "{s:#}");
    let theirs = budget_of("one").expect("their budget");
    assert!(
        theirs["metadata"]["ownerReferences"].is_null(),
        "{theirs:#}"
    );
    assert_eq!(theirs["spec"]["minAvailable"], 1);
}

#[test]
#[ignore = "needs a control plane: e2e/real-cluster"]
fn a_pool_is_created_without_reading_its_children_and_a_taken_name_is_never_adopted() {
    let (cluster, _operators) = setup();
    let ns = namespace("e2e-create-only");
    let audit = Audit::start(cluster);
    let yaml = pool(
        &ns,
        "api",
        2,
        "gunicorn",
        &[("boot", "1s")],
        json!({"init": {"command": ["python", "manage.py", "migrate"]}}),
    );
    assert!(apply(&yaml).ok);
    wait_ready(&ns, "api", 2 * MINUTE);
    let requests = audit.requests_in(&ns);
    for child in ["jobs", "deployments", "poddisruptionbudgets"] {
        assert_eq!(
            count(&requests, "get", child),
            0,
            "a {child} read before its create: {:#?}",
            summary(&requests)
        );
    }

    // A Deployment someone else made under the name the next pool's Deployment would take.
    kubectl_ok(&[
        "create",
        "deployment",
        "taken",
        "-n",
        &ns,
        "--image=registry.example/theirs:1",
        "--replicas=0",
    ]);
    assert!(apply(&pool(&ns, "taken", 2, "gunicorn", &[], json!({}))).ok);
    let stalled = wait_until(
        "Stalled=ChildNotOwned on pool taken",
        MINUTE,
        || {
            let s = status(&ns, "taken");
            condition(&s, "Stalled")
                .filter(|c| c["status"] == "True" && c["reason"] == "ChildNotOwned")
                .map(|c| c["message"].as_str().unwrap_or_default().to_string())
        },
        || describe(&ns, "taken"),
    );
    assert!(
        stalled.contains(&format!("Deployment {ns}/taken")),
        "{stalled}"
    );
    let theirs = kubectl_json(&[
        "get",
        "deployment",
        "taken",
        "-n",
        &ns,
        "--show-managed-fields",
    ])
    .expect("theirs");
    assert!(
        theirs["metadata"]["ownerReferences"].is_null(),
        "adopted: {theirs:#}"
    );
    assert_eq!(
        theirs["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example/theirs:1"
    );
    let managers: Vec<&str> = theirs["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(
        !managers.contains(&"workerpool-operator"),
        "written by the operator: {managers:?}"
    );
}
