//! What `render` prints means the same to YAML 1.1 readers (PyYAML here; kubectl's is one too)
//! and YAML 1.2 readers: arbitrary label, annotation, env and command strings come back unchanged.
//!
//! PyYAML runs through `python3` (or `PYTHON`); without it the test says so and stops, unless
//! `WORKERPOOL_REQUIRE_TOOLS=1` (set by `.ci/run`, which installs it).

use std::io::Write;
use std::process::{Command, Stdio};

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};
use workerpool_core::render;

/// Strings YAML readers are known to disagree on, and arbitrary ones.
fn strings() -> impl Strategy<Value = String> {
    proptest::prop_oneof![
        proptest::sample::select(vec![
            "on",
            "off",
            "On",
            "OFF",
            "yes",
            "no",
            "Y",
            "n",
            "true",
            "False",
            "null",
            "~",
            "",
            "0755",
            "012",
            "0o12",
            "0x1F",
            "0b101",
            "1_000",
            "1:30",
            "190:20:30",
            "2001-12-14",
            "2001-12-14t21:59:43.10-05:00",
            "+1",
            "-1",
            ".5",
            "1e3",
            ".inf",
            "-.Inf",
            ".NaN",
            "<<",
            "=",
            "- a",
            "? a",
            ": a",
            "a: b",
            "a #b",
            "#a",
            "*a",
            "&a",
            "!a",
            "%a",
            "@a",
            "`a",
            "|",
            ">",
            "[a]",
            "{a}",
            "'a'",
            "\"a\"",
            " a",
            "a ",
            "a\tb",
            "a\nb",
            "\u{85}",
        ])
        .prop_map(str::to_string),
        "\\PC{0,16}",
        "[0-9.:+-]{1,8}",
        "[a-zA-Z]{1,5}",
    ]
}

fn python() -> Option<String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let has_yaml = Command::new(&python)
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !has_yaml {
        assert!(
            std::env::var("WORKERPOOL_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "python3 with PyYAML is required (WORKERPOOL_REQUIRE_TOOLS=1) but not found; .ci/run installs it"
        );
        eprintln!("python3 with PyYAML not found: skipping (CI requires it)");
        return None;
    }
    Some(python)
}

/// Every document of `yaml` as PyYAML's safe loader (YAML 1.1 types) reads it, as JSON.
fn read_as_yaml_1_1(python: &str, yaml: &str) -> Vec<Value> {
    let script = "import sys, json, yaml\n\
        docs = [d for d in yaml.safe_load_all(sys.stdin) if d is not None]\n\
        json.dump(docs, sys.stdout, default=lambda v: {'not a string': repr(v)})\n";
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python exits");
    assert!(
        out.status.success(),
        "PyYAML refused the output: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from python")
}

#[test]
fn rendered_strings_read_back_unchanged_by_yaml_1_1_and_1_2_readers() {
    let Some(python) = python() else {
        return;
    };
    let mut runner = TestRunner::deterministic();
    let strategy = proptest::collection::vec(strings(), 200);
    let values = strategy.new_tree(&mut runner).expect("strings").current();
    let annotations: serde_json::Map<String, Value> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("example.com/a{i}"), json!(v)))
        .collect();
    let labels: serde_json::Map<String, Value> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("l{i}"), json!(v)))
        .collect();
    let env: Vec<Value> = values
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"name": format!("E{i}"), "value": v}))
        .collect();
    let pool: workerpool_core::api::WorkerPool = serde_json::from_value(json!({
        "apiVersion": "workerpool.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {
            "runtime": "generic",
            "template": {
                "metadata": {"annotations": annotations, "labels": labels},
                "spec": {"containers": [{
                    "name": "app", "image": "example/app:1",
                    "command": values, "env": env
                }]}
            }
        }
    }))
    .expect("pool");
    let rendered = render::render_pool(&pool).expect("renders");
    let yaml = render::to_yaml(&rendered.children).expect("yaml");

    let yaml_1_2: Vec<Value> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML 1.2"))
        .collect();
    for docs in [read_as_yaml_1_1(&python, &yaml), yaml_1_2] {
        let deployment = docs
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("a Deployment");
        let template = &deployment["spec"]["template"];
        let app = &template["spec"]["containers"][0];
        for (i, expected) in values.iter().enumerate() {
            assert_eq!(
                template["metadata"]["annotations"][format!("example.com/a{i}")],
                json!(expected),
                "annotation {i}"
            );
            assert_eq!(
                template["metadata"]["labels"][format!("l{i}")],
                json!(expected),
                "label {i}"
            );
            assert_eq!(app["command"][i], json!(expected), "command[{i}]");
            let value = app["env"]
                .as_array()
                .and_then(|env| env.iter().find(|e| e["name"] == format!("E{i}")))
                .map(|e| e["value"].clone());
            assert_eq!(value, Some(json!(expected)), "env E{i}");
        }
    }
}
