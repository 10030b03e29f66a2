//! The `diagnose` command: classifies the aborts of pods a user saved with `kubectl get -o json`.

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::api::{RUNTIME_ANNOTATION, Runtime};
use crate::classify::{self, Abort, KubeletEvent};

#[derive(Debug, thiserror::Error)]
pub enum DiagnoseError {
    #[error("{what} is not JSON or YAML: {source}")]
    Parse {
        what: &'static str,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{0}")]
    Shape(String),
}

fn parse(text: &str, what: &'static str) -> Result<Value, DiagnoseError> {
    serde_yaml::from_str(text).map_err(|source| DiagnoseError::Parse { what, source })
}

/// Pods from a Pod or a PodList (`kind: List` as kubectl prints it works too).
pub fn parse_pods(text: &str) -> Result<Vec<Pod>, DiagnoseError> {
    let value = parse(text, "the pod file")?;
    let items = match value.get("kind").and_then(Value::as_str) {
        Some("Pod") => vec![value],
        Some("PodList") | Some("List") => value
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        other => {
            return Err(DiagnoseError::Shape(format!(
                "kind: expected Pod or PodList (kubectl get pod -o json), got {}",
                other.unwrap_or("<none>")
            )));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            serde_path_to_error::deserialize(item).map_err(|e| {
                DiagnoseError::Shape(format!("items[{i}].{}: {}", e.path(), e.inner()))
            })
        })
        .collect()
}

/// Kubelet Events from an EventList of `v1` or `events.k8s.io/v1` Events.
pub fn parse_events(text: &str) -> Result<Vec<KubeletEvent>, DiagnoseError> {
    let value = parse(text, "the events file")?;
    let items = match value.get("items").and_then(Value::as_array) {
        Some(items) => items.clone(),
        None if value.get("kind").and_then(Value::as_str) == Some("Event") => vec![value],
        None => {
            return Err(DiagnoseError::Shape(
                "expected an EventList (kubectl get events -o json)".into(),
            ));
        }
    };
    let text_at = |item: &Value, keys: &[&str]| {
        keys.iter()
            .find_map(|k| item.pointer(k).and_then(Value::as_str))
            .map(str::to_string)
    };
    let time_at = |item: &Value, keys: &[&str]| {
        keys.iter().find_map(|k| {
            item.pointer(k)
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        })
    };
    Ok(items
        .iter()
        .filter_map(|item| {
            let kind = text_at(item, &["/involvedObject/kind", "/regarding/kind"]);
            if kind.as_deref().is_some_and(|k| k != "Pod") {
                return None;
            }
            Some(KubeletEvent {
                pod: text_at(item, &["/involvedObject/name", "/regarding/name"])?,
                container: text_at(item, &["/involvedObject/fieldPath", "/regarding/fieldPath"])
                    .and_then(|p| KubeletEvent::container_from_field_path(&p)),
                reason: text_at(item, &["/reason"]).unwrap_or_default(),
                message: text_at(item, &["/message", "/note"]).unwrap_or_default(),
                seen: time_at(
                    item,
                    &["/firstTimestamp", "/deprecatedFirstTimestamp", "/eventTime"],
                )
                .map(|first| {
                    let last = time_at(
                        item,
                        &[
                            "/series/lastObservedTime",
                            "/lastTimestamp",
                            "/deprecatedLastTimestamp",
                        ],
                    )
                    .unwrap_or(first);
                    (first, last.max(first))
                }),
            })
        })
        .collect())
}

/// The runtime of a pod: the operator's annotation, else the one the user gave.
pub fn runtime_of(pod: &Pod, fallback: Option<Runtime>) -> Runtime {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RUNTIME_ANNOTATION))
        .and_then(|r| r.parse().ok())
        .or(fallback)
        .unwrap_or(Runtime::Generic)
}

pub fn diagnose(pods: &[Pod], events: &[KubeletEvent], runtime: Option<Runtime>) -> Vec<Abort> {
    pods.iter()
        .flat_map(|pod| classify::classify_pod(runtime_of(pod, runtime), pod, events))
        .collect()
}

/// A readable table, one abort per line.
pub fn table(aborts: &[Abort]) -> String {
    if aborts.is_empty() {
        return "no aborts found\n".into();
    }
    let rows: Vec<[String; 6]> = aborts
        .iter()
        .map(|a| {
            [
                a.pod.clone(),
                a.container.clone().unwrap_or_else(|| "-".into()),
                a.reason.to_string(),
                a.exit_code.map_or("-".into(), |c| c.to_string()),
                a.restart_count.map_or("-".into(), |c| c.to_string()),
                a.signal.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = ["POD", "CONTAINER", "REASON", "EXIT", "RESTARTS", "SIGNAL"];
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>, message: &str| {
        let mut out: String = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}  "))
            .collect();
        out.push_str(message);
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec(), "MESSAGE");
    for (row, abort) in rows.iter().zip(aborts) {
        let message = abort.message.as_deref().unwrap_or("").replace('\n', " ");
        out.push_str(&line(row.iter().map(String::as_str).collect(), &message));
    }
    out
}
