//! A celery worker as its container starts it: the options it was given, and the numbers derived
//! for those it was not. Checked against celery 5.3–5.6 (`celery/bin/celery.py`,
//! `celery/bin/worker.py`, `celery/worker/worker.py`) and billiard 4.1–4.2.
//!
//! celery's command line is click's: an option left off the command line is read from
//! `CELERY_WORKER_<OPTION>` (`celery` runs with `auto_envvar_prefix="CELERY"`), and either beats the
//! app's configuration (`worker_concurrency`, `task_time_limit`), which the operator cannot see.
//! So the operator derives through those variables, and only when neither the command line nor the
//! container's env sets the option.

use k8s_openapi::api::core::v1::Container;

use super::drift::quantity;
use super::policy::{Conflict, memory_limit};
use crate::api::ConcurrencySource;

/// The variable celery's worker reads an option from when the command line leaves it off.
pub const CONCURRENCY_ENV: &str = "CELERY_WORKER_CONCURRENCY";
pub const TIME_LIMIT_ENV: &str = "CELERY_WORKER_TIME_LIMIT";
pub const MAX_MEMORY_PER_CHILD_ENV: &str = "CELERY_WORKER_MAX_MEMORY_PER_CHILD";
const POOL_ENV: &str = "CELERY_WORKER_POOL";

/// Of the container's memory limit, the share the pool's children may grow to together before
/// each is recycled; the rest is the main process's and headroom for a task that overshoots
/// (a child is recycled only after the task that crossed the limit finishes).
pub const CHILDREN_MEMORY_SHARE: f64 = 0.75;

/// An option as the container sets it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Given {
    Value(f64),
    /// Set, to a value the spec does not show: from a ConfigMap, a Secret or the downward API, or
    /// empty (click then reads none, and the app's configuration decides).
    Unknown,
}

/// The worker's options as its command line and env give them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerOptions {
    /// The command starts a worker (`celery … worker …`, `python -m celery … worker …`).
    pub found: bool,
    /// `-A`/`--app` after `worker`, which celery 5 refuses: it is a global option.
    pub app_after_worker: bool,
    pub concurrency: Option<Given>,
    pub time_limit: Option<Given>,
    pub max_memory_per_child: Option<Given>,
    /// `-P`/`--pool`, else `CELERY_WORKER_POOL`; prefork when neither says.
    pub pool: Option<String>,
}

impl WorkerOptions {
    /// Children are processes the pool forks (prefork, the default): the only pool whose size
    /// follows the CPUs and whose children `--max-memory-per-child` recycles.
    pub fn forks(&self) -> bool {
        self.pool.as_deref().is_none_or(|p| p == "prefork")
    }
}

/// The words after the `celery` program (a path to it, or `python -m celery`), up to the end.
fn celery_words<'a>(words: &[&'a str]) -> Option<Vec<&'a str>> {
    let program = |w: &str| w.rsplit('/').next() == Some("celery");
    let start = words.iter().enumerate().find_map(|(i, w)| {
        if program(w) && (i == 0 || words[i - 1] != "-m") {
            Some(i + 1)
        } else if *w == "-m" && words.get(i + 1).is_some_and(|m| *m == "celery") {
            Some(i + 2)
        } else {
            None
        }
    })?;
    Some(words[start..].to_vec())
}

/// Value of `--long N`, `--long=N`, `-s N` or `-sN` in `words`; the last one wins.
fn option<'a>(words: &[&'a str], long: &str, short: Option<&str>) -> Option<&'a str> {
    let mut found = None;
    let mut iter = words.iter().peekable();
    while let Some(word) = iter.next() {
        if let Some(value) = word.strip_prefix(long).and_then(|r| r.strip_prefix('=')) {
            found = Some(value);
        } else if *word == long || short == Some(*word) {
            if let Some(next) = iter.peek() {
                found = Some(**next);
            }
        } else if let Some(value) = short.and_then(|s| word.strip_prefix(s))
            && !value.is_empty()
            && !word.starts_with("--")
        {
            found = Some(value);
        }
    }
    found
}

fn env<'a>(container: &'a Container, name: &str) -> Option<Option<&'a str>> {
    let var = container.env.as_deref()?.iter().find(|e| e.name == name)?;
    Some(match &var.value_from {
        Some(_) => None,
        None => var.value.as_deref().filter(|v| !v.trim().is_empty()),
    })
}

/// The worker's options, the command line first, then `CELERY_WORKER_*`.
pub fn worker_options(container: &Container) -> WorkerOptions {
    let mut parts: Vec<String> = container.command.clone().unwrap_or_default();
    parts.extend(container.args.clone().unwrap_or_default());
    let words: Vec<&str> = parts.iter().flat_map(|p| p.split_whitespace()).collect();
    let Some(after_program) = celery_words(&words) else {
        return WorkerOptions::default();
    };
    let Some(at) = after_program.iter().position(|w| *w == "worker") else {
        return WorkerOptions::default();
    };
    let worker = &after_program[at + 1..];
    let number = |text: &str| text.trim().parse::<f64>().ok().filter(|n| n.is_finite());
    let given = |long: &str, short: Option<&str>, variable: &str| match option(worker, long, short)
    {
        Some(text) => Some(number(text).map_or(Given::Unknown, Given::Value)),
        None => env(container, variable)
            .map(|value| value.and_then(number).map_or(Given::Unknown, Given::Value)),
    };
    WorkerOptions {
        found: true,
        app_after_worker: worker
            .iter()
            .any(|w| *w == "-A" || *w == "--app" || w.starts_with("--app=")),
        concurrency: given("--concurrency", Some("-c"), CONCURRENCY_ENV),
        time_limit: given("--time-limit", None, TIME_LIMIT_ENV),
        max_memory_per_child: given("--max-memory-per-child", None, MAX_MEMORY_PER_CHILD_ENV),
        pool: option(worker, "--pool", Some("-P"))
            .or_else(|| env(container, POOL_ENV).flatten())
            .map(str::to_string),
    }
}

/// The CPUs the container may use: its limit, else its request.
fn cpus(container: &Container) -> Option<f64> {
    let resources = container.resources.as_ref()?;
    let of = |list: &Option<std::collections::BTreeMap<String, _>>| {
        let list: &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        > = list.as_ref()?;
        quantity(&list.get("cpu")?.0)
    };
    of(&resources.limits).or_else(|| of(&resources.requests))
}

/// The pool's children: one per whole CPU of the container's limit (else its request), at
/// least one. None when the container says neither.
pub fn concurrency_for(container: &Container) -> Option<i64> {
    // Whole CPUs, rounded down: a child per fraction of a CPU only competes for it.
    cpus(container).map(|cpus| (cpus.floor() as i64).max(1))
}

/// `--max-memory-per-child` in KiB: the children's share of the memory limit, split evenly.
pub fn max_memory_per_child_kib(memory_limit: &str, concurrency: i64) -> Option<i64> {
    let bytes = quantity(memory_limit)?;
    let kib = bytes * CHILDREN_MEMORY_SHARE / 1024.0 / concurrency.max(1) as f64;
    (kib >= 1.0).then_some(kib.floor() as i64)
}

/// The value of an option as a whole number, when the spec shows it.
pub fn whole(given: Option<Given>) -> Option<i64> {
    match given? {
        Given::Value(v) => Some(v.ceil() as i64),
        Given::Unknown => None,
    }
}

/// What a celery pool's policy comes to: the variables to set, the effective numbers and what
/// breaks a rule.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settled {
    /// `CELERY_WORKER_*` for each option derived.
    pub env: Vec<(String, String)>,
    pub concurrency: Option<i64>,
    pub concurrency_source: Option<ConcurrencySource>,
    pub time_limit_seconds: Option<i64>,
    pub max_memory_per_child_kib: Option<i64>,
    pub conflicts: Vec<Conflict>,
}

/// The shutdown a celery pool gets, for the messages: the warm shutdown's bound, by the name it
/// was set with, and the pod's grace period.
pub struct Shutdown<'a> {
    pub graceful_seconds: i64,
    pub graceful_name: &'a str,
    pub grace_seconds: i64,
}

/// Derives what the worker was not given: `--concurrency` from the container's CPUs,
/// `--time-limit` from `policy.requests.timeoutSeconds`, `--max-memory-per-child` from the memory
/// limit and the concurrency.
pub fn settle(app: &Container, task_timeout: i64, shutdown: &Shutdown<'_>) -> Settled {
    let options = worker_options(app);
    let mut settled = Settled::default();
    if !options.found {
        settled.conflicts.push(Conflict {
            field: "command".into(),
            message: format!(
                "container {:?} does not start a celery worker (celery -A <app> worker …, or python -m celery -A <app> worker …): nothing is derived for it",
                app.name
            ),
        });
        return settled;
    }
    if options.app_after_worker {
        settled.conflicts.push(Conflict {
            field: "command".into(),
            message: "-A/--app comes after worker, which celery 5 refuses at start: write celery -A <app> worker …".into(),
        });
    }
    let forks = options.forks();
    settled.concurrency_source = match options.concurrency {
        Some(Given::Value(_)) => Some(ConcurrencySource::Template),
        Some(Given::Unknown) => Some(ConcurrencySource::AppConfiguration),
        None if !forks => None,
        None if concurrency_for(app).is_some() => Some(ConcurrencySource::ContainerCpus),
        None => Some(ConcurrencySource::NodeCpus),
    };
    settled.concurrency = match options.concurrency {
        Some(given) => whole(Some(given)),
        None if forks => {
            let derived = concurrency_for(app);
            match derived {
                Some(n) => settled.env.push((CONCURRENCY_ENV.into(), n.to_string())),
                None => settled.conflicts.push(Conflict {
                    field: "celery --concurrency".into(),
                    message: format!(
                        "container {:?} sets no --concurrency and no CPU limit or request: celery starts one child per CPU of the node (os.cpu_count()), not of the container, and a large node forks more children than the memory limit holds; set resources.limits.cpu (one child per whole CPU is derived) or --concurrency",
                        app.name
                    ),
                }),
            }
            derived
        }
        None => None,
    };
    settled.time_limit_seconds = match options.time_limit {
        Some(given) => whole(Some(given)),
        None => {
            settled
                .env
                .push((TIME_LIMIT_ENV.into(), task_timeout.to_string()));
            Some(task_timeout)
        }
    };
    settled.max_memory_per_child_kib = match options.max_memory_per_child {
        Some(given) => whole(Some(given)),
        None if forks => {
            let derived = memory_limit(app)
                .zip(settled.concurrency)
                .and_then(|(limit, children)| max_memory_per_child_kib(limit, children));
            if let Some(kib) = derived {
                settled
                    .env
                    .push((MAX_MEMORY_PER_CHILD_ENV.into(), kib.to_string()));
            }
            derived
        }
        None => None,
    };
    if let Some(limit) = settled.time_limit_seconds
        && limit > shutdown.graceful_seconds
    {
        settled.conflicts.push(Conflict {
            field: "celery --time-limit".into(),
            message: format!(
                "a task may run {limit}s (the task time limit), but the warm shutdown gets {} {}s before the kubelet's SIGKILL at terminationGracePeriodSeconds {}: tasks still running on a rollout or scale-down are killed mid-flight (and lost unless acks_late); raise policy.shutdown.gracefulTimeoutSeconds to {limit} or lower the time limit",
                shutdown.graceful_name, shutdown.graceful_seconds, shutdown.grace_seconds
            ),
        });
    }
    settled
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(command: &[&str], extra: serde_json::Value) -> Container {
        let mut value = json!({"name": "worker", "command": command});
        if let (Some(object), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
            object.extend(extra.clone());
        }
        serde_json::from_value(value).expect("container")
    }

    #[test]
    fn the_worker_is_found_however_celery_is_started() {
        for command in [
            &["celery", "-A", "shop", "worker", "-l", "INFO"][..],
            &["/venv/bin/celery", "--app=shop", "worker"],
            &["python", "-m", "celery", "-A", "shop", "worker"],
            &["sh", "-c", "exec celery -A shop worker --concurrency 3"],
        ] {
            assert!(
                worker_options(&container(command, json!({}))).found,
                "{command:?}"
            );
        }
        for command in [
            &["celery", "-A", "shop", "beat"][..],
            &["gunicorn", "shop.wsgi"],
            &["python", "worker.py"],
        ] {
            assert!(
                !worker_options(&container(command, json!({}))).found,
                "{command:?}"
            );
        }
    }

    #[test]
    fn the_command_line_beats_the_env_and_the_env_beats_nothing() {
        let env = json!({"env": [
            {"name": "CELERY_WORKER_CONCURRENCY", "value": "8"},
            {"name": "CELERY_WORKER_TIME_LIMIT", "value": "120.5"},
            {"name": "CELERY_WORKER_MAX_MEMORY_PER_CHILD", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}
        ]});
        let options = worker_options(&container(
            &["celery", "-A", "shop", "worker", "-c4"],
            env.clone(),
        ));
        assert_eq!(options.concurrency, Some(Given::Value(4.0)));
        assert_eq!(whole(options.time_limit), Some(121));
        assert_eq!(options.max_memory_per_child, Some(Given::Unknown));
        let options = worker_options(&container(&["celery", "-A", "shop", "worker"], env));
        assert_eq!(options.concurrency, Some(Given::Value(8.0)));
        let bare = worker_options(&container(&["celery", "-A", "shop", "worker"], json!({})));
        assert_eq!((bare.concurrency, bare.time_limit), (None, None));
        let empty = json!({"env": [{"name": "CELERY_WORKER_CONCURRENCY", "value": ""}]});
        let options = worker_options(&container(&["celery", "-A", "shop", "worker"], empty));
        assert_eq!(
            options.concurrency,
            Some(Given::Unknown),
            "an empty variable leaves it to the app's configuration"
        );
    }

    #[test]
    fn only_prefork_forks_and_the_app_belongs_before_the_worker() {
        let threads = worker_options(&container(
            &["celery", "-A", "s", "worker", "-P", "threads"],
            json!({}),
        ));
        assert!(!threads.forks());
        assert!(worker_options(&container(&["celery", "-A", "s", "worker"], json!({}))).forks());
        let late = worker_options(&container(&["celery", "worker", "-A", "s"], json!({})));
        assert!(late.app_after_worker);
    }

    #[test]
    fn children_follow_whole_cpus_and_share_three_quarters_of_the_memory() {
        let with = |resources: serde_json::Value| {
            container(&["celery", "worker"], json!({"resources": resources}))
        };
        assert_eq!(
            concurrency_for(&with(json!({"limits": {"cpu": "2500m"}}))),
            Some(2)
        );
        assert_eq!(
            concurrency_for(&with(json!({"requests": {"cpu": "500m"}}))),
            Some(1)
        );
        assert_eq!(
            concurrency_for(&with(
                json!({"limits": {"cpu": "4"}, "requests": {"cpu": "1"}})
            )),
            Some(4)
        );
        assert_eq!(
            concurrency_for(&with(json!({"limits": {"memory": "1Gi"}}))),
            None
        );
        // 1 GiB = 1,048,576 KiB; three quarters over 2 children.
        assert_eq!(max_memory_per_child_kib("1Gi", 2), Some(393_216));
        assert_eq!(max_memory_per_child_kib("512Mi", 1), Some(393_216));
    }
}
