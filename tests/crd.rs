//! The CRD as the API server sees it: checked-in file, size, structure, defaults and CEL rules
//! (evaluated with a real CEL interpreter, the way admission evaluates them).

mod common;
use common::merge;
use serde_json::{Value, json};
use workerpool_core::api::{WorkerPool, crd, crd_yaml};
use workerpool_core::pool::policy;

fn schema() -> Value {
    let crd = serde_json::to_value(crd()).expect("CRD serializes");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn pool(spec: Value) -> Value {
    json!({
        "apiVersion": "workerpool.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": spec,
    })
}

fn minimal_spec() -> Value {
    json!({
        "runtime": "gunicorn",
        "template": {"spec": {"containers": [
            {"name": "app", "image": "example/app:1", "ports": [{"name": "http", "containerPort": 8000}]}
        ]}}
    })
}

/// Messages of the CEL rules that reject `object` (schema defaults applied first, as admission does).
fn cel_errors(object: &Value) -> Vec<String> {
    match kube_cel::Validator::new().validate(&schema(), object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

#[test]
fn checked_in_crd_equals_generated() {
    let checked_in = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/workerpool.dev_workerpools.yaml"
    ))
    .expect("crds/workerpool.dev_workerpools.yaml exists");
    assert!(
        checked_in == crd_yaml(),
        "crds/ is stale: run `cargo run -- crd > crds/workerpool.dev_workerpools.yaml`"
    );
}

#[test]
fn crd_fits_the_last_applied_annotation_with_room_to_spare() {
    let json = serde_json::to_string(&crd()).expect("CRD serializes");
    // `kubectl apply` stores the whole object in an annotation capped at 256 KiB.
    assert!(json.len() < 128 * 1024, "CRD JSON is {} bytes", json.len());
}

#[test]
fn names_subresources_and_columns() {
    let crd = serde_json::to_value(crd()).expect("CRD serializes");
    let spec = &crd["spec"];
    assert_eq!(spec["group"], "workerpool.dev");
    assert_eq!(spec["scope"], "Namespaced");
    assert_eq!(spec["names"]["kind"], "WorkerPool");
    assert_eq!(spec["names"]["shortNames"], json!(["wp"]));
    assert_eq!(spec["names"]["categories"], json!(["all"]));
    let version = &spec["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["subresources"]["status"], json!({}));
    assert_eq!(
        version["subresources"]["scale"],
        json!({"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"})
    );
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Desired",
            "Ready",
            "Phase",
            "Last-Abort",
            "Age",
            "Target",
            "Revision",
            "Circuit-Open",
            "Reason"
        ]
    );
    // The last four only with `kubectl get wp -o wide`.
    let wide: Vec<i64> = version["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .iter()
        .map(|c| c["priority"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(wide, [0, 0, 0, 0, 0, 1, 1, 1, 1]);
}

/// Structural schema: every node says its type (or is int-or-string / preserves unknown fields),
/// and no `$ref`, `definitions` or type-less `anyOf` survive.
fn assert_structural(node: &Value, path: &str) {
    let Some(map) = node.as_object() else { return };
    assert!(!map.contains_key("$ref"), "{path} has $ref");
    assert!(!map.contains_key("definitions"), "{path} has definitions");
    let typed = map.contains_key("type")
        || map.contains_key("x-kubernetes-int-or-string")
        || map.contains_key("x-kubernetes-preserve-unknown-fields");
    assert!(typed, "{path} has no type");
    if let Some(props) = map.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            assert_structural(child, &format!("{path}.{name}"));
        }
    }
    if let Some(items) = map.get("items") {
        assert_structural(items, &format!("{path}[]"));
    }
    if let Some(extra) = map.get("additionalProperties").filter(|v| v.is_object()) {
        assert_structural(extra, &format!("{path}{{}}"));
    }
}

#[test]
fn schema_is_structural() {
    assert_structural(&schema(), "");
}

#[test]
fn unseen_pool_reads_as_not_observed() {
    let schema = schema();
    assert_eq!(schema["properties"]["status"]["default"], json!({}));
    assert_eq!(
        schema["properties"]["status"]["properties"]["observedGeneration"]["default"],
        json!(-1)
    );
    let conditions = &schema["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
}

#[test]
fn every_policy_field_has_a_default() {
    let schema = schema();
    let policy = &schema["properties"]["spec"]["properties"]["policy"];
    for section in ["boot", "requests", "shutdown", "failure", "disruption"] {
        let props = policy["properties"][section]["properties"]
            .as_object()
            .expect(section);
        for (field, node) in props {
            assert!(
                node.get("default").is_some(),
                "policy.{section}.{field} has no default"
            );
        }
    }
    let defaults = kube_cel::apply_defaults(&schema, &pool(minimal_spec()));
    let spec: workerpool_core::api::WorkerPoolSpec =
        serde_json::from_value(defaults["spec"].clone()).expect("defaulted spec");
    assert_eq!(spec.policy.boot.timeout_seconds, 60);
    assert_eq!(spec.policy.boot.max_concurrent, 2);
    assert_eq!(spec.policy.requests.timeout_seconds, 30);
    assert_eq!(spec.policy.shutdown.drain_seconds, 5);
    assert_eq!(spec.policy.shutdown.graceful_timeout_seconds, 30);
    assert_eq!(spec.replicas, 1);
}

#[test]
fn minimal_pool_is_accepted() {
    assert_eq!(cel_errors(&pool(minimal_spec())), Vec::<String>::new());
}

#[test]
fn a_name_longer_than_a_label_value_is_refused() {
    let mut long = pool(minimal_spec());
    long["metadata"]["name"] = json!("a".repeat(64));
    let errors = cel_errors(&long);
    assert!(
        errors.iter().any(|e| e.contains("metadata.name")),
        "{errors:?}"
    );
    let mut longest = pool(minimal_spec());
    longest["metadata"]["name"] = json!("a".repeat(63));
    assert_eq!(cel_errors(&longest), Vec::<String>::new());
}

#[test]
fn cel_rules_reject_inconsistent_pools_naming_the_field() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "unknown container",
            json!({"container": "web"}),
            "spec.container",
        ),
        (
            "preload without gunicorn",
            json!({"runtime": "uvicorn", "policy": {"boot": {"preload": true}}}),
            "spec.policy.boot.preload",
        ),
        (
            "exec without command",
            json!({"health": {"check": "exec"}}),
            "spec.health.command",
        ),
        (
            "relative path",
            json!({"health": {"path": "healthz"}}),
            "spec.health.path",
        ),
        (
            "no containers",
            json!({"template": {"spec": {"containers": []}}}),
            "spec.template.spec.containers",
        ),
        (
            "a percentage over 100",
            json!({"policy": {"disruption": {"maxUnavailable": "150%"}}}),
            "spec.policy.disruption.maxUnavailable",
        ),
        (
            "neither a count nor a percentage",
            json!({"policy": {"disruption": {"maxUnavailable": "abc"}}}),
            "spec.policy.disruption.maxUnavailable",
        ),
        (
            "a negative count",
            json!({"policy": {"disruption": {"maxUnavailable": -1}}}),
            "spec.policy.disruption.maxUnavailable",
        ),
        (
            "a health port the app container does not declare",
            json!({"health": {"port": "nosuchport"}}),
            "spec.health.port",
        ),
        (
            "a gunicorn pool whose app container has no port named http",
            json!({"template": {"spec": {"containers": [
                {"name": "app", "image": "example/app:1", "ports": [{"name": "web", "containerPort": 8000}]}
            ]}}}),
            "spec.health.port",
        ),
    ];
    for (name, overlay, field) in cases {
        let mut spec = minimal_spec();
        merge(&mut spec, &overlay);
        let errors = cel_errors(&pool(spec.clone()));
        assert!(
            errors.iter().any(|m| m.contains(field)),
            "{name}: expected a CEL error naming {field}, got {errors:?}"
        );
        // The operator's own validation, used for pools that skip admission, agrees.
        let parsed: workerpool_core::api::WorkerPoolSpec =
            serde_json::from_value(spec).expect(name);
        let invalid = policy::validate(&parsed).expect_err(name);
        assert!(
            invalid.0.iter().any(|e| e.path.starts_with(field)),
            "{name}: {invalid}"
        );
    }
}

#[test]
fn admission_accepts_what_the_health_port_rule_leaves_alone() {
    let accepted = [
        json!({"policy": {"disruption": {"maxUnavailable": "100%"}}}),
        json!({"policy": {"disruption": {"maxUnavailable": "0%"}}}),
        json!({"policy": {"disruption": {"maxUnavailable": 0}}}),
        json!({"health": {"port": 8000}}),
        json!({"health": {"check": "exec", "command": ["true"]}}),
        // The named port of the container `container` names, not the first one's.
        json!({"container": "web", "health": {"port": "api"}, "template": {"spec": {"containers": [
            {"name": "proxy", "image": "proxy:1"},
            {"name": "web", "image": "example/app:1", "ports": [{"name": "api", "containerPort": 8000}]}
        ]}}}),
        // A generic worker without health and without ports gets no probes.
        json!({"runtime": "generic", "template": {"spec": {"containers": [
            {"name": "worker", "image": "example/worker:1"}
        ]}}}),
        // Every probe set in the template: nothing probes the named port.
        json!({"template": {"spec": {"containers": [{"name": "app", "image": "example/app:1",
            "startupProbe": {"tcpSocket": {"port": 8000}},
            "readinessProbe": {"tcpSocket": {"port": 8000}},
            "livenessProbe": {"tcpSocket": {"port": 8000}}}]}}}),
    ];
    for overlay in accepted {
        let mut spec = minimal_spec();
        merge(&mut spec, &overlay);
        assert_eq!(
            cel_errors(&pool(spec.clone())),
            Vec::<String>::new(),
            "{overlay}"
        );
        let parsed: workerpool_core::api::WorkerPoolSpec =
            serde_json::from_value(spec).expect("spec");
        assert!(policy::validate(&parsed).is_ok(), "{overlay}");
    }
    // A pool naming no container of its template gets that one message, not two.
    let mut spec = minimal_spec();
    merge(&mut spec, &json!({"container": "web"}));
    let errors = cel_errors(&pool(spec));
    assert_eq!(errors.len(), 1, "{errors:?}");
}

#[test]
fn cel_rules_fit_the_cost_budget() {
    let schema = schema();
    let spec_schema = &schema["properties"]["spec"];
    let compiled = kube_cel::compile_schema(spec_schema);
    for rule in spec_schema["x-kubernetes-validations"]
        .as_array()
        .expect("rules")
    {
        let text = rule["rule"].as_str().expect("rule text");
        let warnings = kube_cel::estimate_rule_cost(text, &compiled);
        assert!(warnings.is_empty(), "{text}: {warnings:?}");
    }
}

#[test]
fn schema_bounds_reject_out_of_range_numbers() {
    let schema = schema();
    let policy = &schema["properties"]["spec"]["properties"]["policy"]["properties"];
    assert_eq!(
        policy["boot"]["properties"]["maxConcurrent"]["minimum"],
        json!(1.0)
    );
    assert_eq!(
        policy["boot"]["properties"]["timeoutSeconds"]["minimum"],
        json!(1.0)
    );
    assert_eq!(
        policy["requests"]["properties"]["timeoutSeconds"]["minimum"],
        json!(1.0)
    );
    assert_eq!(
        policy["shutdown"]["properties"]["gracefulTimeoutSeconds"]["minimum"],
        json!(1.0)
    );
    assert_eq!(
        schema["properties"]["spec"]["properties"]["runtime"]["enum"],
        json!(["gunicorn", "uvicorn", "generic", "celery"])
    );
    // The derive and the validation agree on the bounds.
    let mut spec: workerpool_core::api::WorkerPoolSpec =
        serde_json::from_value(minimal_spec()).expect("spec");
    spec.policy.boot.max_concurrent = 0;
    spec.policy.requests.timeout_seconds = -1;
    let invalid = policy::validate(&spec).expect_err("out of range");
    let paths: Vec<&str> = invalid.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.policy.boot.maxConcurrent",
            "spec.policy.requests.timeoutSeconds"
        ]
    );
}

#[test]
fn worker_pool_round_trips_through_the_api_types() {
    let value = pool(minimal_spec());
    let parsed: WorkerPool = serde_json::from_value(value).expect("parses");
    assert_eq!(parsed.spec.container, None);
    assert_eq!(parsed.status, None);
}

#[test]
fn bundled_samples_pass_admission() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config/samples");
    for entry in std::fs::read_dir(dir).expect("samples") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("sample");
        if !text.contains("kind: WorkerPool") {
            continue;
        }
        let object: Value = serde_yaml::from_str(&text).expect("sample is YAML");
        assert_eq!(
            cel_errors(&object),
            Vec::<String>::new(),
            "{}",
            path.display()
        );
    }
}

#[test]
fn container_list_is_bounded_for_the_cel_cost_estimate() {
    let schema = schema();
    let containers = &schema["properties"]["spec"]["properties"]["template"]["properties"]["spec"]
        ["properties"]["containers"];
    assert!(containers["maxItems"].as_u64().is_some_and(|n| n <= 64));
    assert!(
        containers["items"]["properties"]["name"]["maxLength"]
            .as_u64()
            .is_some_and(|n| n <= 63)
    );
}

/// Every `format` in `schema` with the path to it, and the `type` beside it.
fn formats<'a>(schema: &'a Value, path: String, found: &mut Vec<(String, &'a str, &'a str)>) {
    match schema {
        Value::Object(map) => {
            if let Some(format) = map.get("format").and_then(Value::as_str) {
                let kind = map.get("type").and_then(Value::as_str).unwrap_or("");
                found.push((path.clone(), kind, format));
            }
            for (key, value) in map {
                formats(value, format!("{path}.{key}"), found);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                formats(item, format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

#[test]
fn every_format_is_one_the_api_server_knows() {
    // The API server warns on every install of a CRD with a format it does not know (and drops
    // it): integers take int32 or int64, numbers float or double, strings the names it lists.
    const STRING_FORMATS: &[&str] = &[
        "bsonobjectid",
        "uri",
        "email",
        "hostname",
        "ipv4",
        "ipv6",
        "cidr",
        "mac",
        "uuid",
        "uuid3",
        "uuid4",
        "uuid5",
        "isbn",
        "isbn10",
        "isbn13",
        "creditcard",
        "ssn",
        "hexcolor",
        "rgbcolor",
        "byte",
        "password",
        "date",
        "duration",
        "datetime",
    ];
    let schema = schema();
    let mut found = Vec::new();
    formats(&schema, String::new(), &mut found);
    assert!(
        found.iter().any(|(_, _, format)| *format == "int32"),
        "the walk finds the formats"
    );
    let unknown: Vec<_> = found
        .into_iter()
        .filter(|(_, kind, format)| match *kind {
            "integer" => !matches!(*format, "int32" | "int64"),
            "number" => !matches!(*format, "float" | "double"),
            _ => !STRING_FORMATS.contains(&format.replace('-', "").as_str()),
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "formats the API server does not know: {unknown:?}"
    );
}
