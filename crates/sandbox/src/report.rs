//! What a sandbox run shows: the timeline, a summary and the pool as `kubectl describe` shows it,
//! as text or as one JSON object.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Value, json};

use super::Sandbox;
use super::apiserver::RESOURCES;
use super::apiserver::select::{FieldSelector, LabelSelector};
use super::timeline::Entry;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub duration_seconds: u64,
    /// The final WorkerPool, without managed fields.
    pub pool: Value,
    pub timeline: Vec<Entry>,
    #[serde(skip_serializing_if = "is_zero")]
    pub timeline_dropped: usize,
    /// The most pods booting at once.
    pub max_booting: usize,
    /// When every pod first ran the current template and was ready; null if never.
    pub all_ready_after_seconds: Option<u64>,
    /// Requests the operator made, by verb and kind.
    pub requests: BTreeMap<String, BTreeMap<String, usize>>,
    /// The pool's Events, as `kubectl describe` lists them.
    pub events: Vec<Value>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Report {
    /// The report for the first pool of the run.
    pub fn of(sandbox: &Sandbox) -> Report {
        let (namespace, name) = sandbox.pools().first().cloned().unwrap_or_default();
        let mut pool = sandbox
            .pool(&namespace, &name)
            .map(|p| (*p).clone())
            .unwrap_or(Value::Null);
        if let Some(Value::Object(meta)) = pool.get_mut("metadata") {
            meta.remove("managedFields");
        }
        let mut requests: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        for request in sandbox.server.requests() {
            let kind = match &request.subresource {
                Some(sub) => format!("{}/{sub}", request.kind),
                None => request.kind.clone(),
            };
            *requests
                .entry(request.verb.to_string())
                .or_default()
                .entry(kind)
                .or_default() += 1;
        }
        let fields =
            FieldSelector::parse("events", &format!("regarding.name={name}")).unwrap_or_default();
        let (events, _, _) = sandbox.server.list(
            &RESOURCES[5],
            Some(&namespace),
            &LabelSelector::default(),
            &fields,
            None,
            None,
        );
        let mut events: Vec<Value> = events
            .iter()
            .filter(|e| e.pointer("/regarding/kind").and_then(Value::as_str) == Some("WorkerPool"))
            .map(|e| (**e).clone())
            .collect();
        // kube's recorder names an Event after the wall clock's nanoseconds; the report names
        // each after the pool and its place, so the same seed prints the same Events.
        events.sort_by_key(|e| {
            e.pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        });
        for (place, event) in events.iter_mut().enumerate() {
            event["metadata"]["name"] = json!(format!("{name}.{place}"));
        }
        Report {
            scenario: sandbox.scenario.name.clone(),
            seed: sandbox.seed(),
            duration_seconds: sandbox.elapsed(),
            pool,
            timeline: sandbox.cluster.timeline.entries().to_vec(),
            timeline_dropped: sandbox.cluster.timeline.dropped(),
            max_booting: sandbox.cluster.max_booting,
            all_ready_after_seconds: sandbox.all_ready_after(),
            requests,
            events,
        }
    }

    pub fn total_requests(&self) -> usize {
        self.requests
            .values()
            .flat_map(|kinds| kinds.values())
            .sum()
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let name = self
            .pool
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let namespace = self
            .pool
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "Sandbox: WorkerPool {namespace}/{name}, scenario {}, seed {}, {} simulated seconds\n",
            self.scenario, self.seed, self.duration_seconds
        );
        let _ = writeln!(out, "Timeline");
        for entry in &self.timeline {
            let _ = writeln!(
                out,
                "  {:>6.0}s  {:<10} {:<32} {}",
                entry.at, entry.source, entry.object, entry.message
            );
        }
        if self.timeline_dropped > 0 {
            let _ = writeln!(out, "  … {} more entries not shown", self.timeline_dropped);
        }
        let _ = writeln!(out, "\nSummary");
        let ready = match self.all_ready_after_seconds {
            Some(s) => format!("{s}s"),
            None => "never".into(),
        };
        let _ = writeln!(out, "  All replicas ready after:   {ready}");
        let _ = writeln!(out, "  Most pods booting at once:  {}", self.max_booting);
        let by_verb: Vec<String> = self
            .requests
            .iter()
            .map(|(verb, kinds)| format!("{verb} {}", kinds.values().sum::<usize>()))
            .collect();
        let _ = writeln!(
            out,
            "  Operator API requests:      {} ({})",
            self.total_requests(),
            by_verb.join(", ")
        );
        let _ = writeln!(out, "\n$ kubectl describe workerpool -n {namespace} {name}");
        out.push_str(&describe(&self.pool, &self.events));
        out
    }
}

/// `readyReplicas` → `Ready Replicas`, as kubectl describe titles fields.
fn title(key: &str) -> String {
    let mut out = String::new();
    let mut previous_upper = true;
    for (i, c) in key.chars().enumerate() {
        if i == 0 {
            out.extend(c.to_uppercase());
        } else {
            if c.is_uppercase() && !previous_upper {
                out.push(' ');
            }
            out.push(c);
        }
        previous_upper = c.is_uppercase() || i == 0;
    }
    out
}

fn describe_value(out: &mut String, value: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match child {
                    Value::Object(_) => {
                        let _ = writeln!(out, "{pad}{}:", title(key));
                        describe_value(out, child, indent + 2);
                    }
                    Value::Array(items) => {
                        let _ = writeln!(out, "{pad}{}:", title(key));
                        for item in items {
                            match item {
                                Value::Object(_) => describe_value(out, item, indent + 2),
                                other => {
                                    let _ = writeln!(out, "{pad}  {}", scalar(other));
                                }
                            }
                        }
                    }
                    other => {
                        let _ = writeln!(out, "{pad}{}:  {}", title(key), scalar(other));
                    }
                }
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{}", scalar(other));
        }
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".into(),
        other => other.to_string(),
    }
}

/// The pool as `kubectl describe` prints a custom resource: metadata, spec and status as titled
/// fields, then its Events.
pub fn describe(pool: &Value, events: &[Value]) -> String {
    let mut out = String::new();
    let get = |p: &str| {
        pool.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let _ = writeln!(out, "Name:         {}", get("/metadata/name"));
    let _ = writeln!(out, "Namespace:    {}", get("/metadata/namespace"));
    let _ = writeln!(out, "API Version:  {}", get("/apiVersion"));
    let _ = writeln!(out, "Kind:         {}", get("/kind"));
    for section in ["spec", "status"] {
        if let Some(value) = pool.get(section) {
            let _ = writeln!(out, "{}:", title(section));
            describe_value(&mut out, value, 2);
        }
    }
    let _ = writeln!(out, "Events:");
    if events.is_empty() {
        let _ = writeln!(out, "  <none>");
        return out;
    }
    let _ = writeln!(
        out,
        "  {:<8} {:<22} {:<6} Message",
        "Type", "Reason", "Count"
    );
    let _ = writeln!(
        out,
        "  {:<8} {:<22} {:<6} -------",
        "----", "------", "-----"
    );
    for event in events {
        let text = |p: &str| event.pointer(p).and_then(Value::as_str).unwrap_or_default();
        let count = event
            .pointer("/series/count")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let _ = writeln!(
            out,
            "  {:<8} {:<22} {:<6} {}",
            text("/type"),
            text("/reason"),
            count,
            text("/note")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_like_kubectl_describe() {
        assert_eq!(title("readyReplicas"), "Ready Replicas");
        assert_eq!(title("observedGeneration"), "Observed Generation");
        assert_eq!(title("podIP"), "Pod IP");
    }
}
