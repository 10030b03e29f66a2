//! The install paths as users run them: the Helm chart rendered by the real `helm`, the kustomize
//! layout built by `kubectl kustomize`, the Argo CD health check run by Lua 5.1, the CRD copies and
//! the image the chart points at.
//!
//! `helm`, `kubectl`, `lua5.1` and `promtool` are looked up on PATH (or `HELM`, `KUBECTL`, `LUA`,
//! `PROMTOOL`). Where one is
//! missing the test says so and stops, unless `WORKERPOOL_REQUIRE_TOOLS=1` (set by `.ci/run`),
//! which makes a missing tool a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/workerpool-operator");

fn tool(name: &str, env: &str) -> Option<PathBuf> {
    let found = std::env::var_os(env).map(PathBuf::from).or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
        })
    });
    if found.is_none() {
        assert!(
            std::env::var("WORKERPOOL_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "{name} is required (WORKERPOOL_REQUIRE_TOOLS=1) but not found; .ci/run installs it"
        );
        eprintln!("{name} not found: skipping (CI requires it)");
    }
    found
}

fn run(program: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(ROOT)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("each document is YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

fn helm_template(helm: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", "wp", CHART, "--namespace", "workerpool-system"];
    args.extend_from_slice(extra);
    let (ok, out, err) = run(helm, &args);
    assert!(ok, "helm template {extra:?} failed: {err}");
    docs(&out)
}

/// `(apiGroup, resource, sorted verbs)` of every rule.
fn rules(role: &Value) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for rule in role["rules"].as_sequence().expect("rules") {
        let strings = |key: &str| -> Vec<String> {
            rule[key]
                .as_sequence()
                .map(|s| {
                    s.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        for group in strings("apiGroups") {
            for resource in strings("resources") {
                let mut verbs = strings("verbs");
                verbs.sort();
                out.push((group.clone(), resource, verbs));
            }
        }
    }
    out.sort();
    out
}

/// The API calls the controller makes, as RBAC rules: recorded from a whole run of the loop on
/// the sandbox that takes every path to the API (an init Job, children created by server-side
/// apply, boot failures whose pods' Events and logs are read, Warning Events, a restart that finds
/// its Event series already there), plus the two permissions no request of such a run shows:
/// `update` on `workerpools/finalizers`, which the `OwnerReferencesPermissionEnforcement`
/// admission plugin asks of an owner reference with `blockOwnerDeletion`, and `patch` on
/// `workerpools`, the one-time handover of status fields an earlier version merge-patched (a JSON
/// patch the sandbox does not serve; proven on a real API server by the e2e suite).
fn controller_rules() -> Vec<(String, String, Vec<String>)> {
    let recorded = recorded_requests();
    let mut verbs: std::collections::BTreeMap<
        (String, String),
        std::collections::BTreeSet<String>,
    > = Default::default();
    let mut allow = |group: &str, resource: &str, verb: &str| {
        verbs
            .entry((group.to_string(), resource.to_string()))
            .or_default()
            .insert(verb.to_string());
    };
    // Every request asks for its verb, whatever the answer (a lookup that finds nothing too).
    for request in &recorded {
        let resource = match &request.subresource {
            Some(sub) => format!("{}/{sub}", request.resource),
            None => request.resource.to_string(),
        };
        allow(request.group, &resource, request.verb);
        // An apply that creates its object is authorized as a create too.
        if request.verb == "patch" && request.code == 201 {
            allow(request.group, &resource, "create");
        }
    }
    // A name taken by someone else is read through the API the same way for each kind of child;
    // the recorded run takes that path for a Deployment.
    if recorded
        .iter()
        .any(|r| r.verb == "get" && r.resource == "deployments")
    {
        allow("batch", "jobs", "get");
        allow("policy", "poddisruptionbudgets", "get");
    }
    allow("workerpool.dev", "workerpools/finalizers", "update");
    allow("workerpool.dev", "workerpools", "patch");
    let mut all: Vec<(String, String, Vec<String>)> = verbs
        .into_iter()
        .map(|((group, resource), verbs)| (group, resource, verbs.into_iter().collect()))
        .collect();
    all.sort();
    all
}

/// Every request of the controller in recorded runs on the sandbox: the bundled sample (with its
/// init Job) failing to boot (exit 3), then booting slower than its startup probe allows (probe
/// kills, whose pods' Events are read), each with an operator restart in the middle; then the
/// sample created where its Deployment's name is taken; then the sample turning its budget off.
fn recorded_requests() -> Vec<workerpool_sandbox::apiserver::http::RequestRecord> {
    use workerpool_sandbox::scenario::Scenario;
    use workerpool_sandbox::{Options, Sandbox};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let text = std::fs::read_to_string(format!("{ROOT}/config/samples/gunicorn-django.yaml"))
        .expect("sample");
    let pool: serde_json::Value = serde_yaml::from_str(&text).expect("sample YAML");
    let mut requests = Vec::new();
    for scenario in ["boot-failure", "slow-boot"] {
        let scenario = Scenario::built_in(scenario).expect("scenario");
        requests.extend(runtime.block_on(async {
            let mut sandbox = Sandbox::new(Options::new(scenario, 1));
            sandbox.add_pool(pool.clone()).expect("pool");
            sandbox.start_operator();
            sandbox.run_for(300).await;
            // A new operator finds the Event series the last one began.
            sandbox.stop_operator().await;
            sandbox.start_operator();
            sandbox.run_for(300).await;
            sandbox.stop_operator().await;
            sandbox.server.requests()
        }));
    }
    // A pool whose Deployment's name someone else took: the create-only apply is refused (409)
    // and the object is read through the API, to be named, never adopted.
    requests.extend(runtime.block_on(async {
        use k8s_openapi::api::apps::v1::Deployment;
        use workerpool_sandbox::apiserver::resource_of;
        let scenario = Scenario::built_in("healthy").expect("scenario");
        let mut sandbox = Sandbox::new(Options::new(scenario, 1));
        let name = pool["metadata"]["name"].as_str().expect("name");
        let namespace = pool["metadata"]["namespace"].as_str().expect("namespace");
        let foreign = serde_json::json!({
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "selector": {"matchLabels": {"app": "theirs"}},
                "template": {"metadata": {"labels": {"app": "theirs"}},
                             "spec": {"containers": [{"name": "c", "image": "theirs:1"}]}}
            }
        });
        sandbox
            .server
            .create(
                resource_of::<Deployment>(),
                namespace,
                foreign,
                Some("kubectl-create"),
            )
            .expect("someone else's Deployment");
        sandbox.add_pool(pool.clone()).expect("pool");
        sandbox.start_operator();
        sandbox.run_for(30).await;
        sandbox.stop_operator().await;
        sandbox.server.requests()
    }));
    // A pool that turns its budget off: its own budget is deleted.
    requests.extend(runtime.block_on(async {
        use workerpool_core::api::WorkerPool;
        let scenario = Scenario::built_in("healthy").expect("scenario");
        let mut sandbox = Sandbox::new(Options::new(scenario, 1));
        sandbox.add_pool(pool.clone()).expect("pool");
        sandbox.start_operator();
        sandbox.run_for(30).await;
        let name = pool["metadata"]["name"].as_str().expect("name");
        let namespace = pool["metadata"]["namespace"].as_str().expect("namespace");
        let pools: kube::Api<WorkerPool> =
            kube::Api::namespaced(sandbox.server.client(), namespace);
        let off = serde_json::json!({"spec": {"policy": {"disruption": {"budget": false}}}});
        pools
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&off),
            )
            .await
            .expect("the budget turned off");
        sandbox.run_for(30).await;
        sandbox.stop_operator().await;
        sandbox.server.requests()
    }));
    requests.retain(|r| r.verb != "unknown");
    requests
}

#[test]
fn the_recorded_run_takes_every_path_to_the_api() {
    let requests = recorded_requests();
    let saw = |verb: &str, resource: &str, code: u16| {
        requests.iter().any(|r| {
            let name = match &r.subresource {
                Some(sub) => format!("{}/{sub}", r.resource),
                None => r.resource.to_string(),
            };
            r.verb == verb && name == resource && r.code == code
        })
    };
    assert!(
        saw("patch", "jobs", 201),
        "the init Job is created by an apply"
    );
    assert!(
        saw("patch", "deployments", 409),
        "a create-only apply finds a name someone else took"
    );
    assert!(
        saw("get", "deployments", 200),
        "and reads that object through the API"
    );
    assert!(
        saw("delete", "poddisruptionbudgets", 200),
        "a budget the pool turned off is deleted"
    );
    assert!(saw("list", "events", 200), "a pod's Events are listed");
    assert!(saw("get", "pods/log", 200), "a log tail is read");
    assert!(
        saw("create", "events", 409),
        "a restart finds its Event series"
    );
    assert!(saw("patch", "events", 200), "and counts on in it");
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

fn args(deployment: &Value) -> Vec<String> {
    container(deployment)["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect()
}

fn assert_hardened(deployment: &Value) {
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    let c = container(deployment);
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(
        sc["capabilities"]["drop"].as_sequence().map(|d| d.len()),
        Some(1)
    );
    assert_eq!(sc["capabilities"]["drop"][0].as_str(), Some("ALL"));
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(args(deployment)[0], "run");
}

#[test]
fn crd_copies_are_identical() {
    let main = std::fs::read_to_string(format!("{ROOT}/crds/workerpool.dev_workerpools.yaml"))
        .expect("crds/");
    for copy in [
        "charts/workerpool-operator/crds/workerpool.dev_workerpools.yaml",
        "config/crd/workerpool.dev_workerpools.yaml",
    ] {
        let text = std::fs::read_to_string(format!("{ROOT}/{copy}")).expect("copy");
        assert!(text == main, "{copy} differs from crds/; copy it again");
    }
}

#[test]
fn chart_lints_and_renders_a_hardened_least_privilege_operator() {
    let Some(helm) = tool("helm", "HELM") else {
        return;
    };
    let (ok, out, err) = run(&helm, &["lint", CHART, "--strict"]);
    assert!(ok, "helm lint: {out}{err}");

    let rendered = helm_template(&helm, &[]);
    let deployment = of_kind(&rendered, "Deployment")[0];
    assert_hardened(deployment);
    let chart: Value =
        serde_yaml::from_str(&std::fs::read_to_string(format!("{CHART}/Chart.yaml")).unwrap())
            .unwrap();
    let app_version = chart["appVersion"].as_str().expect("appVersion");
    assert_eq!(
        container(deployment)["image"].as_str(),
        Some(format!("ghcr.io/workerpool-operator/workerpool-operator:{app_version}").as_str())
    );
    let a = args(deployment);
    assert!(
        a.contains(&"--metrics-addr=0.0.0.0:8080".to_string()),
        "{a:?}"
    );
    assert!(
        a.contains(&"--leader-elect".to_string()),
        "one active operator during upgrades too: {a:?}"
    );
    assert_eq!(
        deployment["spec"]["strategy"],
        Value::Null,
        "a rolling upgrade, the new pod waiting on the Lease"
    );

    let roles = of_kind(&rendered, "ClusterRole");
    assert_eq!(roles.len(), 1);
    assert_eq!(rules(roles[0]), controller_rules());
    let text = serde_yaml::to_string(&rendered).unwrap();
    assert!(
        !text.contains("'*'") && !text.contains("\"*\""),
        "no wildcards"
    );
    assert_eq!(of_kind(&rendered, "ClusterRoleBinding").len(), 1);
    assert_eq!(of_kind(&rendered, "ServiceAccount").len(), 1);
    assert_eq!(of_kind(&rendered, "Service").len(), 1);
    assert!(of_kind(&rendered, "ServiceMonitor").is_empty());
    assert!(
        of_kind(&rendered, "PrometheusRule").is_empty(),
        "alerts are opt-in"
    );
    assert!(
        of_kind(&rendered, "ConfigMap").is_empty(),
        "the dashboard is opt-in"
    );
    // The one Role is the Lease's, in the release namespace.
    let lease_roles = of_kind(&rendered, "Role");
    assert_eq!(lease_roles.len(), 1);
    assert_eq!(rules(lease_roles[0])[0].1, "leases");

    // The CRD comes from crds/ (installed by helm install, never templated).
    let with_crds = helm_template(&helm, &["--include-crds"]);
    assert_eq!(of_kind(&with_crds, "CustomResourceDefinition").len(), 1);
}

#[test]
fn chart_options_leader_election_namespace_scope_and_service_monitor() {
    let Some(helm) = tool("helm", "HELM") else {
        return;
    };
    // Without leader election, an upgrade never overlaps two operators.
    let rendered = helm_template(&helm, &["--set", "leaderElection.enabled=false"]);
    let deployment = of_kind(&rendered, "Deployment")[0];
    assert!(!args(deployment).contains(&"--leader-elect".to_string()));
    assert_eq!(
        deployment["spec"]["strategy"]["type"].as_str(),
        Some("Recreate")
    );
    assert!(
        of_kind(&rendered, "Role").is_empty(),
        "no Lease, no Lease role"
    );

    let rendered = helm_template(
        &helm,
        &[
            "--set",
            "replicaCount=2",
            "--set",
            "leaderElection.enabled=false",
        ],
    );
    let a = args(of_kind(&rendered, "Deployment")[0]);
    assert!(a.contains(&"--leader-elect".to_string()), "{a:?}");
    let lease_role = of_kind(&rendered, "Role")[0];
    assert_eq!(
        lease_role["metadata"]["namespace"].as_str(),
        Some("workerpool-system")
    );
    assert_eq!(
        rules(lease_role),
        [(
            "coordination.k8s.io".to_string(),
            "leases".to_string(),
            vec!["create".to_string(), "get".to_string(), "patch".to_string()]
        )]
    );

    let rendered = helm_template(&helm, &["--set", "watchNamespace=shop"]);
    assert!(of_kind(&rendered, "ClusterRole").is_empty());
    let role = of_kind(&rendered, "Role")[0];
    assert_eq!(role["metadata"]["namespace"].as_str(), Some("shop"));
    assert_eq!(rules(role), controller_rules());
    assert!(args(of_kind(&rendered, "Deployment")[0]).contains(&"--namespace=shop".to_string()));

    let rendered = helm_template(
        &helm,
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.serviceMonitor.labels.release=prom",
        ],
    );
    let monitor = of_kind(&rendered, "ServiceMonitor")[0];
    assert_eq!(
        monitor["metadata"]["labels"]["release"].as_str(),
        Some("prom")
    );
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"].as_str(),
        Some("metrics")
    );
}

#[test]
fn chart_values_are_validated_by_the_schema() {
    let Some(helm) = tool("helm", "HELM") else {
        return;
    };
    for bad in [
        "replicaCount=0",
        "image.pullPolicy=Sometimes",
        "logging.format=xml",
        "unknownKey=1",
        "watchNamespace=Not_A_Namespace",
        "metrics.prometheusRule.window=15 minutes",
        "metrics.prometheusRule.bootFailureThreshold=0",
        "metrics.grafanaDashboard.folder=Pools",
    ] {
        let (ok, _, err) = run(&helm, &["template", "wp", CHART, "--set", bad]);
        assert!(!ok, "{bad} should be rejected");
        assert!(err.contains("schema"), "{bad}: {err}");
    }
}

#[test]
fn kustomize_layout_builds_the_same_install() {
    let Some(kubectl) = tool("kubectl", "KUBECTL") else {
        return;
    };
    let (ok, out, err) = run(&kubectl, &["kustomize", "config/default"]);
    assert!(ok, "kubectl kustomize config/default: {err}");
    let built = docs(&out);
    assert_eq!(of_kind(&built, "CustomResourceDefinition").len(), 1);
    let deployment = of_kind(&built, "Deployment")[0];
    assert_hardened(deployment);
    assert_eq!(
        deployment["metadata"]["namespace"].as_str(),
        Some("workerpool-system")
    );
    assert_eq!(
        container(deployment)["image"].as_str(),
        Some("ghcr.io/workerpool-operator/workerpool-operator:0.1.0")
    );
    assert_eq!(rules(of_kind(&built, "ClusterRole")[0]), controller_rules());
    let binding = of_kind(&built, "ClusterRoleBinding")[0];
    assert_eq!(
        binding["subjects"][0]["namespace"].as_str(),
        Some("workerpool-system")
    );

    let (ok, out, err) = run(&kubectl, &["kustomize", "config/samples"]);
    assert!(ok, "kubectl kustomize config/samples: {err}");
    let samples = docs(&out);
    assert_eq!(of_kind(&samples, "WorkerPool").len(), 3);
    // A fresh cluster has none of the samples' namespaces.
    let namespaces: Vec<_> = of_kind(&samples, "Namespace")
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str())
        .collect();
    for pool in of_kind(&samples, "WorkerPool") {
        let namespace = pool["metadata"]["namespace"].as_str().unwrap_or_default();
        assert!(namespaces.contains(&namespace), "no Namespace {namespace}");
    }
    assert!(
        samples
            .iter()
            .any(|s| s["spec"]["policy"]["init"]["command"].is_sequence()),
        "a sample runs migrations in an init Job"
    );
}

#[test]
fn argocd_health_check_passes_its_cases() {
    let Some(lua) = tool("lua5.1", "LUA") else {
        return;
    };
    let (ok, out, err) = run(
        &lua,
        &[
            "tests/argocd/health_test.lua",
            "charts/workerpool-operator/argocd/health.lua",
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("11 cases passed"), "{out}");
}

/// `cargo tree` of the binary as the image builds it: `--no-default-features`, normal edges only.
fn image_dependency_tree(format: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(ROOT)
        .args([
            "tree",
            "--locked",
            "-p",
            "workerpool-operator",
            "--no-default-features",
        ])
        .args(["-e", "normal", "--prefix", "none", "-f", format])
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The README's `cargo run -- …` commands need cargo to know which of the package's binaries
/// (the operator, the kubectl plugin) to run.
#[test]
fn cargo_run_runs_the_operator() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(ROOT)
        .args(["metadata", "--locked", "--no-deps", "--format-version", "1"])
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let package = metadata["packages"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "workerpool-operator"))
        .expect("the root package");
    let binaries: Vec<&str> = package["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .filter_map(|t| t["name"].as_str())
        .collect();
    let runs = match binaries.as_slice() {
        [only] => Some(*only),
        _ => package["default_run"].as_str(),
    };
    assert_eq!(runs, Some("workerpool-operator"), "binaries {binaries:?}");
}

#[test]
fn the_image_links_neither_the_sandbox_crate_nor_tokios_test_util() {
    let crates = image_dependency_tree("{p}");
    assert!(crates.contains("workerpool-core"), "{crates}");
    assert!(!crates.contains("workerpool-sandbox"), "{crates}");
    let features = image_dependency_tree("{p} {f}");
    let tokio = features
        .lines()
        .find(|l| l.starts_with("tokio v"))
        .expect("tokio is in the tree");
    assert!(tokio.contains("rt-multi-thread"), "{tokio}");
    assert!(!tokio.contains("test-util"), "{tokio}");
}

#[test]
fn the_chart_runs_the_image_the_dockerfile_builds() {
    let dockerfile = std::fs::read_to_string(format!("{ROOT}/Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("USER 65532:65532"));
    assert!(
        dockerfile.contains("COPY crates ./crates"),
        "every workspace member's manifest is in the build context"
    );
    assert!(
        dockerfile.contains("--no-default-features"),
        "the image is built without the sandbox and tokio's test-util"
    );
    assert!(dockerfile.contains("EXPOSE 8080"));
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/workerpool-operator\"]"));
    let deployment = std::fs::read_to_string(format!("{CHART}/templates/deployment.yaml")).unwrap();
    assert!(deployment.contains("runAsUser: 65532"));
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(format!("{CHART}/values.yaml")).unwrap())
            .unwrap();
    assert_eq!(values["metrics"]["port"].as_i64(), Some(8080));
    let ignore = std::fs::read_to_string(format!("{ROOT}/.dockerignore")).expect(".dockerignore");
    for excluded in ["target/", ".git/", "charts/", "e2e/"] {
        assert!(
            ignore.lines().any(|l| l == excluded),
            "{excluded} in .dockerignore"
        );
    }
}

/// Every `workerpool_` series the operator serves.
fn served_series() -> String {
    use workerpool_core::controller::metrics::Metrics;
    let metrics = Metrics::default();
    metrics.observe_reconcile(std::time::Duration::from_millis(1), Some("apply"));
    let stalled: k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition =
        serde_json::from_value(serde_json::json!({"type": "Stalled", "status": "False",
            "reason": "Progressing", "message": "", "lastTransitionTime": "2026-11-22T10:00:00Z"}))
        .expect("condition");
    metrics.publish_pool("shop", "api", &[stalled]);
    metrics.encode()
}

/// The `workerpool_` metric names a PromQL expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("workerpool_") {
        let name: String = rest[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[start + name.len()..];
        names.push(name);
    }
    names
}

fn assert_served(expr: &str, served: &str) {
    let names = metric_names(expr);
    assert!(!names.is_empty(), "{expr}");
    for name in names {
        assert!(
            served
                .lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
            "{name} in {expr} is not served:\n{served}"
        );
    }
}

/// A scratch directory of its own for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("workerpool-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

#[test]
fn the_chart_alerts_pass_their_promtool_unit_tests() {
    let (Some(helm), Some(promtool)) = (tool("helm", "HELM"), tool("promtool", "PROMTOOL")) else {
        return;
    };
    let rendered = helm_template(
        &helm,
        &[
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "metrics.prometheusRule.labels.release=kube-prometheus-stack",
        ],
    );
    let rules = of_kind(&rendered, "PrometheusRule");
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0]["metadata"]["labels"]["release"].as_str(),
        Some("kube-prometheus-stack")
    );
    let groups = &rules[0]["spec"]["groups"];
    let alerts: Vec<&str> = groups[0]["rules"]
        .as_sequence()
        .expect("rules")
        .iter()
        .filter_map(|r| r["alert"].as_str())
        .collect();
    for needed in [
        "WorkerPoolBootFailing",
        "WorkerPoolOOMKills",
        "WorkerPoolWorkerTimeouts",
        "WorkerPoolBrokerUnreachable",
        "WorkerPoolStalled",
    ] {
        assert!(alerts.contains(&needed), "{alerts:?}");
    }
    let served = served_series();
    for rule in groups[0]["rules"].as_sequence().expect("rules") {
        assert_served(rule["expr"].as_str().expect("expr"), &served);
        let description = rule["annotations"]["description"]
            .as_str()
            .expect("description");
        assert!(
            description.contains("kubectl describe workerpool"),
            "a runbook says where to look: {description}"
        );
    }

    let dir = scratch("promtool");
    let mut file = serde_yaml::Mapping::new();
    file.insert("groups".into(), groups.clone());
    std::fs::write(
        dir.join("rules.yaml"),
        serde_yaml::to_string(&file).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        format!("{ROOT}/tests/prometheus/rules_test.yaml"),
        dir.join("rules_test.yaml"),
    )
    .unwrap();
    let rules_file = dir.join("rules.yaml");
    let (ok, out, err) = run(&promtool, &["check", "rules", rules_file.to_str().unwrap()]);
    assert!(ok, "promtool check rules: {out}{err}");
    let tests_file = dir.join("rules_test.yaml");
    let (ok, out, err) = run(&promtool, &["test", "rules", tests_file.to_str().unwrap()]);
    assert!(ok, "promtool test rules: {out}{err}");
    assert!(out.contains("SUCCESS"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_chart_dashboard_is_valid_grafana_json_on_served_metrics() {
    let (Some(helm), Some(promtool)) = (tool("helm", "HELM"), tool("promtool", "PROMTOOL")) else {
        return;
    };
    let rendered = helm_template(
        &helm,
        &[
            "--set",
            "metrics.grafanaDashboard.enabled=true",
            "--set",
            "metrics.grafanaDashboard.namespace=monitoring",
        ],
    );
    let maps = of_kind(&rendered, "ConfigMap");
    assert_eq!(maps.len(), 1);
    let map = maps[0];
    assert_eq!(map["metadata"]["namespace"].as_str(), Some("monitoring"));
    assert_eq!(
        map["metadata"]["labels"]["grafana_dashboard"].as_str(),
        Some("1"),
        "the label the Grafana sidecar loads"
    );
    let text = map["data"]["workerpool-operator.json"]
        .as_str()
        .expect("dashboard JSON");
    let dashboard: serde_json::Value = serde_json::from_str(text).expect("JSON");
    assert_eq!(dashboard["uid"], "workerpool-operator");
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(variables, ["datasource", "namespace", "pool"]);

    // Every query reads served metrics and parses as PromQL once Grafana's variables are set.
    let served = served_series();
    let mut records = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            assert_served(expr, &served);
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$namespace", ".*")
                .replace("$pool", ".*");
            records.push(
                serde_json::json!({"record": format!("panel_{}", records.len()), "expr": expr}),
            );
        }
    }
    assert!(records.len() >= 8, "{} queries", records.len());
    let dir = scratch("dashboard");
    let rules = serde_json::json!({"groups": [{"name": "dashboard", "rules": records}]});
    let file = dir.join("queries.yaml");
    std::fs::write(&file, serde_json::to_string(&rules).unwrap()).unwrap();
    let (ok, out, err) = run(&promtool, &["check", "rules", file.to_str().unwrap()]);
    assert!(ok, "the dashboard's queries: {out}{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `.krew.yaml` as krew-release-bot renders it for a tag: every platform is an archive the release
/// workflow builds, holding the binary the manifest names.
#[test]
fn the_krew_manifest_renders_to_one_archive_per_platform_the_release_builds() {
    let template = std::fs::read_to_string(format!("{ROOT}/.krew.yaml")).unwrap();
    let workflow =
        std::fs::read_to_string(format!("{ROOT}/.github/workflows/release.yaml")).unwrap();
    // The bot's addURIAndSha writes the URI and, four spaces in, the archive's sha256.
    let mut rendered = String::new();
    for line in template.lines() {
        let trimmed = line.trim_start();
        match trimmed.strip_prefix("{{addURIAndSha \"") {
            Some(rest) => {
                let uri = rest
                    .split('"')
                    .next()
                    .unwrap()
                    .replace("{{ .TagName }}", "v1.2.3");
                let indent = &line[..line.len() - trimmed.len()];
                rendered.push_str(&format!(
                    "{indent}uri: {uri}\n    sha256: {}\n",
                    "0".repeat(64)
                ));
            }
            None => {
                rendered.push_str(&line.replace("{{ .TagName }}", "v1.2.3"));
                rendered.push('\n');
            }
        }
    }
    let manifest: Value = serde_yaml::from_str(&rendered).expect("the rendered manifest is YAML");
    assert_eq!(manifest["kind"], "Plugin");
    assert_eq!(
        manifest["metadata"]["name"], "workerpool",
        "installed as kubectl workerpool"
    );
    assert_eq!(manifest["spec"]["version"], "v1.2.3");
    let platforms = manifest["spec"]["platforms"]
        .as_sequence()
        .expect("platforms");
    assert_eq!(platforms.len(), 4);
    for platform in platforms {
        let labels = &platform["selector"]["matchLabels"];
        let name = format!(
            "{}_{}",
            labels["os"].as_str().unwrap(),
            labels["arch"].as_str().unwrap()
        );
        let uri = platform["uri"].as_str().expect("uri");
        assert!(
            uri.ends_with(&format!("/v1.2.3/kubectl-workerpool_{name}.tar.gz")),
            "{uri}"
        );
        assert_eq!(platform["sha256"].as_str().map(str::len), Some(64));
        assert_eq!(platform["bin"], "kubectl-workerpool");
        assert!(
            workflow.contains(&format!("platform: {name}}}")),
            "the release workflow builds no {name} archive"
        );
    }
    assert!(workflow.contains("--bin kubectl-workerpool"), "{workflow}");
}
