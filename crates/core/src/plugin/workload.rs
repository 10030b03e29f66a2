//! Which app server a workload runs, found in its containers' commands, and which workloads a
//! pool already owns.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::api::{GROUP, Runtime};
use crate::pool::celery;

/// The container that runs the app server, and which one it runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AppServer<'a> {
    pub runtime: Runtime,
    pub container: &'a Container,
}

/// The program a container's command starts: `gunicorn …`, `python -m uvicorn …`,
/// `celery … worker …` (also inside `sh -c "…"`). gunicorn wins over uvicorn (`gunicorn -k
/// uvicorn.workers.UvicornWorker` is gunicorn); a celery command that starts no worker (`celery
/// beat`, `celery flower`) is no worker pool.
pub fn runtime_of(container: &Container) -> Option<Runtime> {
    if celery::worker_options(container).found {
        return Some(Runtime::Celery);
    }
    let parts: Vec<&str> = container
        .command
        .iter()
        .chain(container.args.iter())
        .flatten()
        .flat_map(|p| p.split(|c: char| c.is_whitespace() || c == ';' || c == '&'))
        .filter(|w| !w.is_empty())
        .collect();
    let runs = |program: &str| {
        parts.iter().enumerate().any(|(i, w)| {
            w.rsplit('/').next() == Some(program)
                || (*w == "-m" && parts.get(i + 1) == Some(&program))
        })
    };
    if runs("gunicorn") {
        Some(Runtime::Gunicorn)
    } else if runs("uvicorn") {
        Some(Runtime::Uvicorn)
    } else {
        None
    }
}

/// The first container that runs gunicorn, uvicorn or a celery worker; `forced` takes the
/// first container for the runtime the user names.
pub fn app_server(pod: &PodSpec, forced: Option<Runtime>) -> Option<AppServer<'_>> {
    if let Some(runtime) = forced {
        let container = pod
            .containers
            .iter()
            .find(|c| runtime_of(c) == Some(runtime))
            .or_else(|| pod.containers.first())?;
        return Some(AppServer { runtime, container });
    }
    pod.containers
        .iter()
        .find_map(|container| runtime_of(container).map(|runtime| AppServer { runtime, container }))
}

/// A WorkerPool owns the Deployment: the operator manages it, an audit leaves it alone.
pub fn owned_by_pool(deployment: &Deployment) -> bool {
    deployment
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "WorkerPool" && o.api_version.starts_with(&format!("{GROUP}/")))
}

/// A label selector as the API's `labelSelector` parameter writes it; None for one that
/// selects nothing the parameter can say (an unknown operator).
pub fn selector_string(selector: &LabelSelector) -> Option<String> {
    let mut terms: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        terms.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            _ => return None,
        });
    }
    Some(terms.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(command: &[&str], args: &[&str]) -> Container {
        Container {
            name: "app".into(),
            command: (!command.is_empty()).then(|| command.iter().map(|s| s.to_string()).collect()),
            args: (!args.is_empty()).then(|| args.iter().map(|s| s.to_string()).collect()),
            ..Container::default()
        }
    }

    #[test]
    fn the_app_server_is_read_from_the_command_and_its_args() {
        let cases: &[(&[&str], &[&str], Option<Runtime>)] = &[
            (&["gunicorn", "app.wsgi"], &[], Some(Runtime::Gunicorn)),
            (
                &["/venv/bin/gunicorn"],
                &["-k", "uvicorn.workers.UvicornWorker", "app:app"],
                Some(Runtime::Gunicorn),
            ),
            (
                &["python", "-m", "uvicorn", "app:app"],
                &[],
                Some(Runtime::Uvicorn),
            ),
            (
                &["sh", "-c", "migrate && exec uvicorn app:app --port 8000"],
                &[],
                Some(Runtime::Uvicorn),
            ),
            (
                &["celery"],
                &["-A", "proj", "worker", "-l", "info"],
                Some(Runtime::Celery),
            ),
            (&["celery", "-A", "proj", "beat"], &[], None),
            (&["python", "manage.py", "runserver"], &[], None),
            (&[], &[], None),
        ];
        for (command, args, expected) in cases {
            assert_eq!(
                runtime_of(&container(command, args)),
                *expected,
                "{command:?} {args:?}"
            );
        }
    }

    #[test]
    fn selectors_are_written_as_the_api_reads_them() {
        let selector: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "api"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["web", "edge"]},
                {"key": "canary", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        assert_eq!(
            selector_string(&selector).as_deref(),
            Some("app=api,tier in (web,edge),!canary")
        );
    }
}
