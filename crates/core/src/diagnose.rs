//! The `diagnose` command: classifies the aborts of pods a user saved with `kubectl get -o json`,
//! with the hints their saved logs give, as the controller would.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde::Serialize;
use serde_json::Value;

use crate::aborts::classify::{self, Abort, KubeletEvent};
use crate::aborts::detect::{self, WorkerLimits};
use crate::aborts::loghints::{self, LogFindings, TAIL_BYTES};
use crate::aborts::podview::PodView;
use crate::api::{RUNTIME_ANNOTATION, Runtime, is_dns_subdomain};
use crate::pool::{celery, policy};

#[derive(Debug, thiserror::Error)]
pub enum DiagnoseError {
    #[error("{what} is not JSON or YAML: {source}")]
    Parse {
        what: &'static str,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{what} nests more than {MAX_NESTING} levels deep, deeper than any Kubernetes object")]
    TooDeep { what: &'static str },
    #[error("{0}")]
    Shape(String),
}

/// Deeper than any Pod or Event nests (their managedFields reach about twenty levels). The YAML
/// parser's work grows with the square of flow nesting, so deeper input is refused unparsed.
pub const MAX_NESTING: usize = 200;

fn parse(text: &str, what: &'static str) -> Result<Value, DiagnoseError> {
    // JSON is flow YAML: one pass refuses both before either parser starts.
    if flow_nesting_exceeds(text, MAX_NESTING) {
        return Err(DiagnoseError::TooDeep { what });
    }
    // JSON (what `kubectl get -o json` prints) parses faster as JSON.
    match serde_json::from_str(text) {
        Ok(value) => return Ok(value),
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
            return Err(DiagnoseError::TooDeep { what });
        }
        Err(_) => {}
    }
    serde_yaml::from_str(text).map_err(|source| DiagnoseError::Parse { what, source })
}

/// Whether YAML `text` may nest flow collections (`[`, `{`) deeper than `limit`, in one linear
/// pass that stops at the first level too deep. It never counts fewer levels than a YAML parser
/// opens; it may count more (a bracket starting a line of a block scalar).
fn flow_nesting_exceeds(text: &str, limit: usize) -> bool {
    let bytes = text.as_bytes();
    let blank_at = |i: usize| bytes.get(i).is_none_or(|b| b.is_ascii_whitespace());
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    // A token may start here: a line start in block context, or after an indicator.
    let mut token_start = true;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            match b {
                b'\\' if q == b'"' => i += 1,
                b'\'' if q == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 1,
                _ if b == q => quote = None,
                _ => {}
            }
            i += 1;
            continue;
        }
        match b {
            b' ' | b'\t' | b'\r' => {}
            // In a flow collection a line break is only white space.
            b'\n' => token_start |= depth == 0,
            b'#' if i == 0 || bytes[i - 1].is_ascii_whitespace() => {
                while i + 1 < bytes.len() && bytes[i + 1] != b'\n' {
                    i += 1;
                }
            }
            b'[' | b'{' if depth > 0 || token_start => {
                depth += 1;
                if depth > limit {
                    return true;
                }
                token_start = true;
            }
            b']' | b'}' if depth > 0 => {
                depth -= 1;
                token_start = false;
            }
            b',' if depth > 0 => token_start = true,
            b'"' | b'\'' if depth > 0 && token_start => quote = Some(b),
            b':' | b'?' if blank_at(i + 1) => token_start = true,
            b'-' if depth == 0 && blank_at(i + 1) => token_start = true,
            _ => token_start = false,
        }
        i += 1;
    }
    false
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

/// One finding: an abort, and what to do about it (what its log says when a log was given).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    #[serde(flatten)]
    pub abort: Abort,
    pub hint: Option<String>,
}

/// A container log the user saved with `kubectl logs [--previous]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedLog {
    /// The pod it belongs to; `None` when the input holds one pod.
    pub pod: Option<String>,
    /// Its container; `None` for the one `kubectl logs` picks by default.
    pub container: Option<String>,
    /// Which run it is: `Some(true)` the run that ended (`--previous`), `Some(false)` the one
    /// running; `None` when unknown, and then it is read for both.
    pub previous: Option<bool>,
    pub text: String,
}

/// Splits `--log [POD[/CONTAINER]=]FILE`; a file whose name holds `=` is written `./name`.
pub fn parse_log_arg(arg: &str) -> (Option<String>, Option<String>, &str) {
    if let Some((target, file)) = arg.split_once('=') {
        let (pod, container) = match target.split_once('/') {
            Some((pod, container)) => (pod, Some(container)),
            None => (target, None),
        };
        if is_dns_subdomain(pod) && container.is_none_or(is_dns_subdomain) {
            return (Some(pod.into()), container.map(str::to_string), file);
        }
    }
    (None, None, arg)
}

/// The container `kubectl logs` reads when none is named.
fn default_container(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubectl.kubernetes.io/default-container"))
        .map(String::as_str)
        .or_else(|| Some(pod.spec.as_ref()?.containers.first()?.name.as_str()))
}

fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or_default()
}

/// A saved log's pod, container and run ([`SavedLog::previous`]).
type LogKey = (String, String, Option<bool>);

/// What each saved log says, by pod, container and run: its last [`TAIL_BYTES`], as the
/// controller reads it.
fn scan_logs(
    pods: &[Pod],
    logs: &[SavedLog],
) -> Result<BTreeMap<LogKey, LogFindings>, DiagnoseError> {
    let mut scanned = BTreeMap::new();
    for log in logs {
        let pod = match &log.pod {
            Some(name) => pods.iter().find(|p| pod_name(p) == name).ok_or_else(|| {
                DiagnoseError::Shape(format!("--log {name}=...: no pod {name} in the input"))
            })?,
            None => match pods {
                [pod] => pod,
                _ => {
                    return Err(DiagnoseError::Shape(format!(
                        "--log FILE needs one pod in the input, which has {}: write --log POD=FILE",
                        pods.len()
                    )));
                }
            },
        };
        let container = match log.container.as_deref() {
            Some(name) => name,
            None => default_container(pod).unwrap_or_default(),
        };
        let findings = loghints::scan(loghints::last_bytes(&log.text, TAIL_BYTES));
        scanned.insert(
            (
                pod_name(pod).to_string(),
                container.to_string(),
                log.previous,
            ),
            findings,
        );
    }
    Ok(scanned)
}

/// What the hint of a worker killed in `container` names: gunicorn's effective `--timeout`,
/// uvicorn's `--timeout-worker-healthcheck` and the container's memory limit, from the pod's spec.
fn worker_limits(
    runtime: Runtime,
    container: Option<&Container>,
    grace_period_seconds: Option<i64>,
) -> WorkerLimits {
    let flags = container.map(|c| policy::explicit_flags(runtime, c));
    let timeout_seconds = match (runtime, &flags) {
        (Runtime::Gunicorn, Some(flags)) => Some(
            flags
                .worker_timeout
                .unwrap_or(policy::GUNICORN_DEFAULT_TIMEOUT_SECONDS),
        ),
        _ => None,
    };
    let healthcheck_timeout_seconds = match (runtime, &flags) {
        (Runtime::Uvicorn, Some(flags)) => Some(
            flags
                .worker_healthcheck_timeout
                .unwrap_or(policy::UVICORN_DEFAULT_HEALTHCHECK_SECONDS),
        ),
        _ => None,
    };
    let memory_limit = container.and_then(policy::memory_limit).map(str::to_string);
    let task_time_limit_seconds = match (runtime, container) {
        (Runtime::Celery, Some(c)) => celery::whole(celery::worker_options(c).time_limit),
        _ => None,
    };
    WorkerLimits {
        timeout_seconds,
        healthcheck_timeout_seconds,
        memory_limit,
        grace_period_seconds,
        task_time_limit_seconds,
    }
}

/// Every abort of the pods, and each worker killed inside a container whose log was given.
pub fn diagnose(
    pods: &[Pod],
    events: &[KubeletEvent],
    runtime: Option<Runtime>,
    logs: &[SavedLog],
) -> Result<Vec<Finding>, DiagnoseError> {
    let scanned = scan_logs(pods, logs)?;
    let mut findings = Vec::new();
    for pod in pods {
        let runtime = runtime_of(pod, runtime);
        let name = pod_name(pod);
        // A run that ended is read in the log of the run that ended; a worker killed inside a
        // running container, in the log of the run.
        let log_of = |container: &str, previous: bool| {
            [Some(previous), None]
                .into_iter()
                .find_map(|run| scanned.get(&(name.to_string(), container.to_string(), run)))
        };
        let containers = pod.spec.as_ref().map_or(&[][..], |s| &s.containers);
        let grace = pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds);
        let limits_of = |container: &str| {
            let spec = containers.iter().find(|c| c.name == container);
            worker_limits(runtime, spec, grace)
        };
        for abort in classify::classify_pod(runtime, pod, events) {
            let log = match (&abort.container, abort.exit_code) {
                (Some(container), Some(_)) => log_of(container, true),
                _ => None,
            };
            let limits = limits_of(abort.container.as_deref().unwrap_or_default());
            let hint = detect::hint(&abort, log, &limits);
            findings.push(Finding {
                abort,
                hint: Some(hint),
            });
        }
        let view = PodView::from(pod);
        for ((_, container, _), log) in scanned
            .iter()
            .filter(|((pod, _, run), _)| pod == name && *run != Some(true))
        {
            let limits = limits_of(container);
            for worker in detect::worker_aborts(&view, container, log, &limits) {
                findings.push(Finding {
                    abort: worker.abort,
                    hint: Some(worker.hint),
                });
            }
        }
    }
    Ok(findings)
}

/// What the pods show beside their aborts: a default container stopped with a signal its app
/// server does not drain on, once per container name and signal (pods of one Deployment all say
/// the same).
pub fn warnings(pods: &[Pod], runtime: Option<Runtime>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for pod in pods {
        let Some(container) = default_container(pod) else {
            continue;
        };
        let view = PodView::from(pod);
        let Some(signal) = view.app_stop_signal(container) else {
            continue;
        };
        if !seen.insert((container.to_string(), signal.to_string())) {
            continue;
        }
        out.extend(
            policy::reported_stop_signal(
                runtime_of(pod, runtime),
                container,
                [(pod_name(pod), signal)],
            )
            .map(|c| printable(&c.message)),
        );
    }
    out
}

/// `text` without what a terminal would act on: control characters (line breaks become spaces)
/// and the bidirectional overrides and isolates that reorder what is shown.
pub fn printable(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            '\n' | '\t' | '\r' => Some(' '),
            '\u{061C}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}' => None,
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect()
}

/// The findings with every text from the cluster made [`printable`].
pub fn printable_findings(findings: &[Finding]) -> Vec<Finding> {
    let clean = |t: &Option<String>| t.as_deref().map(printable);
    findings
        .iter()
        .map(|f| Finding {
            abort: Abort {
                pod: printable(&f.abort.pod),
                container: clean(&f.abort.container),
                signal: clean(&f.abort.signal),
                message: clean(&f.abort.message),
                ..f.abort.clone()
            },
            hint: clean(&f.hint),
        })
        .collect()
}

/// A readable table, one finding per line, its cluster text made [`printable`].
pub fn table(findings: &[Finding]) -> String {
    if findings.is_empty() {
        return "no aborts found\n".into();
    }
    let header = [
        "POD",
        "CONTAINER",
        "REASON",
        "EXIT",
        "RESTARTS",
        "SIGNAL",
        "MESSAGE",
        "HINT",
    ];
    let rows: Vec<[String; 8]> = printable_findings(findings)
        .into_iter()
        .map(|f| {
            let a = f.abort;
            [
                a.pod,
                a.container.unwrap_or_else(|| "-".into()),
                a.reason.to_string(),
                a.exit_code.map_or("-".into(), |c| c.to_string()),
                a.restart_count.map_or("-".into(), |c| c.to_string()),
                a.signal.unwrap_or_else(|| "-".into()),
                a.message.unwrap_or_else(|| "-".into()),
                f.hint.unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[&str]| {
        let out: String = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}  "))
            .collect();
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(&header);
    for row in &rows {
        out.push_str(&line(&row.each_ref().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECTL_YAML: &str = r#"apiVersion: v1
kind: Pod
metadata:
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: |
      {"apiVersion":"v1","kind":"Pod","spec":{"containers":[{"name":"app","args":["--bind","[::]:8000"]}]}}
  managedFields:
  - fieldsV1:
      f:spec:
        f:containers:
          k:{"name":"app"}:
            .: {}
            f:args: {}
  name: shop-api-1 # [not a sequence
spec:
  containers:
  - args: ['it''s [', "a \" [", plain text]
    command: python -m shop [serve
    name: app
"#;

    #[test]
    fn a_pod_as_kubectl_prints_it_is_not_too_deep() {
        // The deepest is the JSON in the block scalar, five levels; no quoted or plain bracket counts.
        assert!(!flow_nesting_exceeds(KUBECTL_YAML, 5));
        assert!(flow_nesting_exceeds(KUBECTL_YAML, 4));
        assert!(parse(KUBECTL_YAML, "pod").is_ok());
    }

    #[test]
    fn flow_nesting_is_counted_to_the_limit() {
        let nested = |n: usize| format!("x: {}{}\n", "[".repeat(n), "]".repeat(n));
        assert!(!flow_nesting_exceeds(&nested(MAX_NESTING), MAX_NESTING));
        assert!(flow_nesting_exceeds(&nested(MAX_NESTING + 1), MAX_NESTING));
        assert!(flow_nesting_exceeds(&"{\"a\": [".repeat(150), MAX_NESTING));
        // Brackets in quoted strings, plain scalars and comments open nothing.
        let quoted = format!("[\"{}\", '{}']", "[".repeat(500), "{".repeat(500));
        assert!(!flow_nesting_exceeds(&quoted, MAX_NESTING));
        assert!(!flow_nesting_exceeds(
            &format!("x: a{}\n", "[".repeat(500)),
            10
        ));
        assert!(!flow_nesting_exceeds(
            &format!("# {}\nx: 1\n", "[".repeat(500)),
            10
        ));
        // Closing brackets inside a string cannot hide the levels around it.
        let hidden = format!(
            "{}\"{}\"{}",
            "[".repeat(150),
            "]".repeat(150),
            "[".repeat(60)
        );
        assert!(flow_nesting_exceeds(&hidden, MAX_NESTING));
    }

    #[test]
    fn too_deep_input_is_refused_naming_the_limit() {
        let deep = format!("{{\"kind\": \"Pod\", \"x\": {}}}", "[".repeat(10_000));
        let error = parse(&deep, "the pod file").unwrap_err().to_string();
        assert_eq!(
            error,
            "the pod file nests more than 200 levels deep, deeper than any Kubernetes object"
        );
        // Deeper than the JSON parser's own limit, within the scan's.
        let deep = format!("{}{}", "[".repeat(150), "]".repeat(150));
        assert!(matches!(
            parse(&deep, "the pod file"),
            Err(DiagnoseError::TooDeep { .. })
        ));
    }

    #[test]
    fn log_arguments_name_a_pod_and_container_or_only_a_file() {
        assert_eq!(parse_log_arg("app.log"), (None, None, "app.log"));
        assert_eq!(
            parse_log_arg("api-1=logs/api-1.log"),
            (Some("api-1".into()), None, "logs/api-1.log")
        );
        assert_eq!(
            parse_log_arg("api-1/app=a.log"),
            (Some("api-1".into()), Some("app".into()), "a.log")
        );
        // A path that holds `=` but names no pod before it is a file.
        assert_eq!(parse_log_arg("./x=1.log"), (None, None, "./x=1.log"));
        assert_eq!(parse_log_arg("Logs=1.log"), (None, None, "Logs=1.log"));
    }

    #[test]
    fn printable_drops_what_a_terminal_would_act_on() {
        assert_eq!(
            printable("a\u{1b}[31mred\u{7}\u{9b}\u{202e}gpj.exe\u{2066}\nnext\tcol"),
            "a[31mredgpj.exe next col"
        );
        assert_eq!(printable("Ünïcödé 日本"), "Ünïcödé 日本");
    }
}
