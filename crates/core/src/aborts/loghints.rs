//! Known gunicorn / uvicorn / celery / Python signatures in a container's log tail. Pure.
//!
//! The lines are gunicorn's (19 to 26), uvicorn's (0.30 to 0.55), celery's (5.3 to 5.6) and
//! billiard's (4.1 to 4.2) as their source writes them.
//!
//! Worker-level timeouts and OOM kills inside a running container leave no trace in the pod
//! status; the app server's own log lines are the only evidence.

/// What a log tail shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogFindings {
    /// gunicorn "WORKER TIMEOUT (pid:N)": the master killed a worker that outlived `--timeout`.
    pub worker_timeouts: u32,
    /// The worker pids of those timeouts, in log order; they identify each one across samples.
    pub worker_timeout_pids: Vec<u32>,
    /// gunicorn "Worker (pid:N) was sent SIGKILL! Perhaps out of memory?" for a pid with no
    /// WORKER TIMEOUT before it: the kernel killed the worker. gunicorn prints the same line for
    /// the SIGKILL it sends after a timeout itself; that one is part of the timeout.
    pub worker_oom_kills: u32,
    pub worker_oom_pids: Vec<u32>,
    /// uvicorn's supervisor "Child process [N] died": it replaced worker process N, which did
    /// not answer its ping within `--timeout-worker-healthcheck` (the supervisor SIGKILLs it
    /// first) or had already exited.
    pub replaced_worker_pids: Vec<u32>,
    /// uvicorn 0.50+ "Child process [N] failed to start, stopping the parent process".
    pub worker_failed_to_start: bool,
    pub worker_failed_to_boot: bool,
    pub app_failed_to_load: bool,
    /// asyncio "Task was destroyed but it is pending!": shutdown cut short.
    pub pending_task_destroyed: bool,
    /// The last line of the last Python traceback, e.g. `ModuleNotFoundError: No module named 'x'`.
    pub last_exception: Option<String>,
    /// billiard "Process 'ForkPoolWorker-N' pid:P exited with 'signal 9 (SIGKILL)'" with no hard
    /// time limit just before it and no shutdown under way: the kernel's OOM killer took a pool
    /// child while the worker kept running.
    pub child_oom_pids: Vec<u32>,
    /// Pool children billiard killed because their task hit celery's hard time limit.
    pub time_limit_kills: Vec<TimeLimitKill>,
    /// celery "Unable to load celery application." and the line after it, which says why.
    pub celery_unloadable: Option<String>,
    /// celery "consumer: Cannot connect to URL: error.": the last one, credentials removed.
    pub broker_unreachable: Option<BrokerFailure>,
    /// celery "worker: Warm shutdown (MainProcess)": it stopped consuming and waits for the
    /// tasks running.
    pub warm_shutdown: bool,
}

/// celery's "Hard time limit (Ns) exceeded for TASK[ID]" and the pool child killed for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeLimitKill {
    pub pid: u32,
    pub task: String,
    /// As celery writes it: `300s`, `3.0s`.
    pub limit: String,
}

/// The broker a celery worker could not reach, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerFailure {
    /// The broker's URL without user or password.
    pub broker: String,
    pub error: String,
    /// How many attempts the tail shows.
    pub attempts: u32,
}

/// A child exit belongs to the latest hard time limit logged at most this many lines before it
/// (celery logs each task's TimeLimitExceeded traceback, 7 lines, before its limit; billiard
/// kills the child within 0.1 s). A time limit with no child exit that close is one whose child
/// was already gone (an OOM kill before it); a SIGKILL that close after one is taken for billiard's.
const TIME_LIMIT_REACH_LINES: usize = 16;

/// Bytes of log scanned per sample; enough for a traceback, bounded for memory.
pub const TAIL_BYTES: usize = 16 * 1024;

/// The end of `log`, at most `max` bytes, from the start of a line when one starts inside them.
pub fn last_bytes(log: &str, max: usize) -> &str {
    if log.len() <= max {
        return log;
    }
    let mut cut = log.len() - max;
    while !log.is_char_boundary(cut) {
        cut += 1;
    }
    let tail = &log[cut..];
    // The cut usually falls inside a line; start at the next one unless the last line is all.
    match tail.find('\n') {
        Some(newline) if newline + 1 < tail.len() => &tail[newline + 1..],
        _ => tail,
    }
}

/// How many lines to ask for again when an answer of `got` bytes to a request of `lines` lines
/// filled the byte limit: the kubelet cut it at its end, where the last words are. `None` when
/// the answer is whole, or no fewer lines can be asked for.
pub fn fewer_lines(lines: i64, got: usize, limit: usize) -> Option<i64> {
    (got >= limit && lines > 1).then(|| (lines / 4).max(1))
}

/// The text lines of one log line: itself, or for a structured (JSON) line its message and
/// the lines of its traceback.
fn text_lines(line: &str) -> Vec<String> {
    const MESSAGE: [&str; 4] = ["message", "msg", "event", "log"];
    const TRACEBACK: [&str; 5] = [
        "exc_info",
        "exception",
        "exc_text",
        "stack_trace",
        "traceback",
    ];
    let trimmed = line.trim_start();
    if trimmed.starts_with('{')
        && let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(trimmed)
    {
        let text = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| fields.get(*k).and_then(serde_json::Value::as_str))
        };
        let mut lines: Vec<String> = text(&MESSAGE)
            .into_iter()
            .flat_map(str::lines)
            .map(str::to_string)
            .collect();
        if let Some(traceback) = text(&TRACEBACK) {
            lines.extend(traceback.lines().map(str::to_string));
        }
        return lines;
    }
    vec![line.to_string()]
}

pub fn scan(log: &str) -> LogFindings {
    let mut findings = LogFindings::default();
    let mut in_traceback = false;
    let mut celery = CeleryScan::default();
    for (index, line) in log.lines().flat_map(text_lines).enumerate() {
        let line = line.as_str();
        celery.line(index, line, &mut findings);
        if line.contains("WORKER TIMEOUT") {
            findings.worker_timeouts += 1;
            findings.worker_timeout_pids.extend(pid_in(line));
        }
        if line.contains("Perhaps out of memory?") {
            let pid = pid_in(line);
            let after_timeout = pid.is_some_and(|pid| findings.worker_timeout_pids.contains(&pid));
            if !after_timeout {
                findings.worker_oom_kills += 1;
                findings.worker_oom_pids.extend(pid);
            }
        }
        if line.contains("Child process [") {
            if line.contains("] died") {
                findings.replaced_worker_pids.extend(bracketed_pid(line));
            } else if line.contains("] failed to start") {
                findings.worker_failed_to_start = true;
            }
        }
        if line.contains("Worker failed to boot") {
            findings.worker_failed_to_boot = true;
        }
        if line.contains("App failed to load") {
            findings.app_failed_to_load = true;
        }
        if line.contains("Task was destroyed but it is pending!") {
            findings.pending_task_destroyed = true;
        }
        if line.starts_with("Traceback (most recent call last):") {
            in_traceback = true;
            continue;
        }
        // A traceback ends with its first unindented line: the exception.
        if in_traceback
            && !line.starts_with(' ')
            && !line.starts_with('\t')
            && !line.trim().is_empty()
        {
            findings.last_exception = Some(line.trim().chars().take(300).collect());
            in_traceback = false;
        }
    }
    findings
}

/// What scanning a celery worker's log remembers from one line to the next.
#[derive(Default)]
struct CeleryScan {
    /// Hard time limits not yet matched with a child exit: (line, task, limit).
    time_limits: Vec<(usize, String, String)>,
    /// The warm or cold shutdown began: children exit as part of it.
    shutting_down: bool,
    /// The previous line was "Unable to load celery application.".
    unloadable: bool,
}

impl CeleryScan {
    fn line(&mut self, index: usize, line: &str, findings: &mut LogFindings) {
        if self.unloadable && !line.trim().is_empty() {
            findings.celery_unloadable = Some(line.trim().chars().take(300).collect());
            self.unloadable = false;
        }
        if line.contains("Unable to load celery application.") {
            findings.celery_unloadable = Some(String::new());
            self.unloadable = true;
        }
        if line.contains("Warm shutdown (") {
            findings.warm_shutdown = true;
        }
        // Children exit as part of a shutdown; only a time limit hit during it kills one then.
        if line.contains("Warm shutdown (") || line.contains("Cold shutdown (") {
            self.shutting_down = true;
            self.time_limits.clear();
        }
        if let Some((task, limit)) = hard_time_limit(line) {
            self.time_limits.push((index, task, limit));
        }
        if let Some((pid, sigkill)) = child_exit(line) {
            self.time_limits
                .retain(|(at, ..)| index - at <= TIME_LIMIT_REACH_LINES);
            if let Some((_, task, limit)) = self.time_limits.pop() {
                findings
                    .time_limit_kills
                    .push(TimeLimitKill { pid, task, limit });
            } else if sigkill && !self.shutting_down {
                findings.child_oom_pids.push(pid);
            }
        }
        if let Some((broker, error)) = broker_failure(line) {
            let attempts = findings
                .broker_unreachable
                .as_ref()
                .map_or(0, |b| b.attempts);
            findings.broker_unreachable = Some(BrokerFailure {
                broker,
                error,
                attempts: attempts + 1,
            });
        }
    }
}

/// celery's "Hard time limit (300s) exceeded for shop.tasks.report[5f1c…]": (task, limit).
fn hard_time_limit(line: &str) -> Option<(String, String)> {
    let rest = &line[line.find("Hard time limit (")? + "Hard time limit (".len()..];
    let (limit, rest) = rest.split_once(") exceeded for ")?;
    let task = rest.split('[').next().unwrap_or(rest).trim();
    Some((task.chars().take(200).collect(), limit.trim().to_string()))
}

/// billiard's "Process 'ForkPoolWorker-2' pid:812 exited with 'signal 9 (SIGKILL)'": the pid, and
/// whether SIGKILL ended it.
fn child_exit(line: &str) -> Option<(u32, bool)> {
    let at = line.find("Process '")?;
    let rest = &line[at..];
    let exited = rest.find(" exited with '")?;
    let pid_at = rest[..exited].rfind("pid:")? + "pid:".len();
    let pid = rest[pid_at..exited].trim().parse().ok()?;
    Some((pid, rest[exited..].contains("(SIGKILL)")))
}

/// celery's "consumer: Cannot connect to redis://:**@redis:6379/0: Error 111 connecting to
/// redis:6379. Connection refused.": (broker without credentials, error).
fn broker_failure(line: &str) -> Option<(String, String)> {
    let rest =
        &line[line.find("consumer: Cannot connect to ")? + "consumer: Cannot connect to ".len()..];
    let url = rest.split_whitespace().next()?;
    let error = rest[url.len()..].trim().trim_end_matches('.');
    let url = url.trim_end_matches(':');
    Some((
        without_credentials(url),
        without_credentials(error).chars().take(200).collect(),
    ))
}

/// `text` with the user and password of every URL in it removed: `redis://:pw@host` is
/// `redis://host`. kombu already masks the password of the URL it prints; an error message may
/// still carry one.
pub fn without_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme_end) = rest.find("://") {
        let (before, after) = rest.split_at(scheme_end + 3);
        out.push_str(before);
        let authority_end = after
            .find(|c: char| c == '/' || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..authority_end];
        match authority.rfind('@') {
            Some(at) => out.push_str(&authority[at + 1..]),
            None => out.push_str(authority),
        }
        rest = &after[authority_end..];
    }
    out.push_str(rest);
    out
}

/// The number in `(pid:N)`, as gunicorn writes it.
fn pid_in(line: &str) -> Option<u32> {
    let start = line.find("(pid:")? + "(pid:".len();
    let digits: String = line[start..]
        .chars()
        .skip_while(|c| *c == ' ')
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The number in `Child process [N]`, as uvicorn writes it.
fn bracketed_pid(line: &str) -> Option<u32> {
    let start = line.find("Child process [")? + "Child process [".len();
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// One line for an abort's hint: the most specific thing the log says.
pub fn hint(findings: &LogFindings) -> Option<String> {
    let headline = if findings.worker_timeouts > 0 && findings.worker_oom_kills > 0 {
        Some(
            "gunicorn: WORKER TIMEOUT (gunicorn killed a worker that outlived --timeout), and a \
             worker killed with no timeout before it: out of memory",
        )
    } else if findings.worker_timeouts > 0 {
        Some(
            "gunicorn: WORKER TIMEOUT, gunicorn killed a worker that outlived --timeout (its \
             \"Perhaps out of memory?\" line is that kill, not an OOM)",
        )
    } else if findings.worker_oom_kills > 0 {
        Some("gunicorn: a worker was sent SIGKILL with no WORKER TIMEOUT before it: out of memory")
    } else if findings.worker_failed_to_start {
        Some("uvicorn: a worker process failed to start, and the supervisor stopped")
    } else if !findings.replaced_worker_pids.is_empty() {
        Some(
            "uvicorn: the supervisor replaced a worker process that stopped answering its ping \
             (--timeout-worker-healthcheck) or exited",
        )
    } else if let Some(detail) = &findings.celery_unloadable {
        return Some(match (detail.is_empty(), &findings.last_exception) {
            (_, Some(e)) => format!("celery: Unable to load celery application; {e}"),
            (false, None) => format!("celery: Unable to load celery application; {detail}"),
            (true, None) => "celery: Unable to load celery application".to_string(),
        });
    } else if let Some(broker) = &findings.broker_unreachable {
        return Some(format!(
            "celery: consumer: Cannot connect to {}: {} ({} attempts in the log)",
            broker.broker, broker.error, broker.attempts
        ));
    } else if findings.app_failed_to_load {
        Some("gunicorn: App failed to load")
    } else if findings.worker_failed_to_boot {
        Some("gunicorn: Worker failed to boot")
    } else if findings.pending_task_destroyed {
        Some("asyncio: Task was destroyed but it is pending (shutdown cut short)")
    } else {
        None
    };
    match (headline, &findings.last_exception) {
        (Some(h), Some(e)) => Some(format!("{h}; {e}")),
        (Some(h), None) => Some(h.to_string()),
        (None, Some(e)) => Some(e.clone()),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT_FAILURE: &str = "\
[2026-11-22 10:04:01 +0000] [1] [INFO] Starting gunicorn 23.0.0
[2026-11-22 10:04:01 +0000] [7] [ERROR] Exception in worker process
Traceback (most recent call last):
  File \"/usr/local/lib/python3.12/site-packages/gunicorn/arbiter.py\", line 608, in spawn_worker
    worker.init_process()
  File \"/app/shop/wsgi.py\", line 3, in <module>
    import stripe
ModuleNotFoundError: No module named 'stripe'
[2026-11-22 10:04:01 +0000] [7] [INFO] Worker exiting (pid: 7)
[2026-11-22 10:04:02 +0000] [1] [ERROR] Worker (pid:7) exited with code 3
[2026-11-22 10:04:02 +0000] [1] [ERROR] Shutting down: Master
[2026-11-22 10:04:02 +0000] [1] [ERROR] Reason: Worker failed to boot.
";

    const DEATH_SPIRAL: &str = "\
[2026-11-22 10:05:31 +0000] [1] [CRITICAL] WORKER TIMEOUT (pid:9)
[2026-11-22 10:05:32 +0000] [1] [ERROR] Worker (pid:9) was sent SIGKILL! Perhaps out of memory?
[2026-11-22 10:05:32 +0000] [12] [INFO] Booting worker with pid: 12
[2026-11-22 10:06:03 +0000] [1] [CRITICAL] WORKER TIMEOUT (pid:12)
";

    #[test]
    fn boot_failure_with_its_exception() {
        let f = scan(BOOT_FAILURE);
        assert!(f.worker_failed_to_boot);
        assert_eq!(
            f.last_exception.as_deref(),
            Some("ModuleNotFoundError: No module named 'stripe'")
        );
        assert_eq!(
            hint(&f).as_deref(),
            Some("gunicorn: Worker failed to boot; ModuleNotFoundError: No module named 'stripe'")
        );
    }

    #[test]
    fn worker_timeouts_and_oom_kills_are_counted() {
        let f = scan(DEATH_SPIRAL);
        // gunicorn's SIGKILL of pid 9 follows its timeout: no OOM.
        assert_eq!((f.worker_timeouts, f.worker_oom_kills), (2, 0));
        assert_eq!(f.worker_timeout_pids, [9, 12]);
        assert!(f.worker_oom_pids.is_empty());
        let h = hint(&f).unwrap();
        assert!(
            h.contains("WORKER TIMEOUT") && h.contains("not an OOM"),
            "{h}"
        );
        assert_eq!(pid_in("Worker (pid: 31) was sent SIGKILL!"), Some(31));
        assert_eq!(pid_in("WORKER TIMEOUT (pid:x)"), None);
    }

    #[test]
    fn a_sigkill_with_no_timeout_of_its_pid_is_an_oom_kill() {
        // A SIGKILL before the timeout of the same pid, and one of another pid.
        let f = scan(
            "[1] [ERROR] Worker (pid:9) was sent SIGKILL! Perhaps out of memory?\n\
             [1] [CRITICAL] WORKER TIMEOUT (pid:12)\n\
             [1] [ERROR] Worker (pid:15) was sent SIGKILL! Perhaps out of memory?\n",
        );
        assert_eq!(f.worker_oom_pids, [9, 15]);
        assert_eq!(f.worker_timeout_pids, [12]);
        let h = hint(&f).unwrap();
        assert!(
            h.contains("WORKER TIMEOUT") && h.contains("out of memory"),
            "{h}"
        );
        let oom = scan("[1] [ERROR] Worker (pid:15) was sent SIGKILL! Perhaps out of memory?\n");
        assert_eq!(
            hint(&oom).as_deref(),
            Some(
                "gunicorn: a worker was sent SIGKILL with no WORKER TIMEOUT before it: out of memory"
            )
        );
    }

    /// uvicorn 0.55's supervisor, as `uvicorn --workers 2` logs: a worker that does not answer
    /// in time is SIGKILLed and replaced with no line of its own before "died".
    const SUPERVISOR: &str = "\
INFO:     Uvicorn running on http://0.0.0.0:8000 (Press CTRL+C to quit)
INFO:     Started parent process [1]
INFO:     Started server process [8]
INFO:     Waiting for application startup.
INFO:     Child process [9] died
INFO:     Started server process [12]
INFO:     Child process [12] died
";

    #[test]
    fn uvicorn_supervisor_replacements_are_read_by_pid() {
        let f = scan(SUPERVISOR);
        assert_eq!(f.replaced_worker_pids, [9, 12]);
        assert!(f.worker_timeout_pids.is_empty() && f.worker_oom_pids.is_empty());
        let h = hint(&f).unwrap();
        assert!(h.contains("--timeout-worker-healthcheck"), "{h}");
        let failed =
            scan("ERROR:    Child process [9] failed to start, stopping the parent process.\n");
        assert!(failed.worker_failed_to_start && failed.replaced_worker_pids.is_empty());
        assert_eq!(bracketed_pid("Child process [x] died"), None);
        // Its own lines are not read as a replacement.
        assert_eq!(
            scan(
                "INFO:     Terminated child process [9]\nINFO:     Waiting for child process [9]\n"
            ),
            LogFindings::default()
        );
    }

    #[test]
    fn shutdown_cut_short_and_clean_logs() {
        let f = scan("Task was destroyed but it is pending!\ntask: <Task pending name='Task-3'>");
        assert!(f.pending_task_destroyed);
        assert_eq!(
            scan("[INFO] Listening at: http://0.0.0.0:8000\n"),
            LogFindings::default()
        );
        assert_eq!(hint(&LogFindings::default()), None);
    }

    #[test]
    fn the_end_of_a_long_log_is_kept_from_a_line_start() {
        let log = "first line\nsecond line\nlast words\n";
        assert_eq!(last_bytes(log, 1000), log);
        assert_eq!(last_bytes(log, 15), "last words\n");
        // One line longer than the budget: its end is all there is.
        assert_eq!(last_bytes("abcdefghij", 4), "ghij");
        // Never a cut inside a character.
        assert_eq!(last_bytes("ééé", 3), "é");
    }

    #[test]
    fn a_cut_answer_is_asked_for_again_with_fewer_lines() {
        assert_eq!(fewer_lines(200, 65_536, 65_536), Some(50));
        assert_eq!(fewer_lines(3, 65_536, 65_536), Some(1));
        assert_eq!(fewer_lines(200, 4_000, 65_536), None);
        assert_eq!(fewer_lines(1, 65_536, 65_536), None);
    }

    #[test]
    fn json_log_lines_are_scanned_by_their_message_and_traceback() {
        let log = r#"{"asctime":"2026-11-22 10:05:31","levelname":"CRITICAL","message":"WORKER TIMEOUT (pid:9)"}
{"levelname":"ERROR","msg":"Worker (pid:9) was sent SIGKILL! Perhaps out of memory?"}
{"levelname":"ERROR","message":"Exception in worker process","exc_info":"Traceback (most recent call last):\n  File \"/app/shop/wsgi.py\", line 3, in <module>\n    import stripe\nModuleNotFoundError: No module named 'stripe'"}
{"levelname":"ERROR","message":"Reason: Worker failed to boot."}
"#;
        let f = scan(log);
        assert_eq!(f.worker_timeout_pids, [9]);
        assert!(f.worker_oom_pids.is_empty(), "{f:?}");
        assert!(f.worker_failed_to_boot);
        assert_eq!(
            f.last_exception.as_deref(),
            Some("ModuleNotFoundError: No module named 'stripe'")
        );
        // A line that only looks like JSON is read as text.
        assert_eq!(
            scan("{not json WORKER TIMEOUT (pid:4)").worker_timeout_pids,
            [4]
        );
    }

    /// celery 5.6.3 with billiard 4.2, `--concurrency=2 --time-limit=3`, as it logged: one child
    /// SIGKILLed by its own task, another killed for the hard time limit, then the warm shutdown.
    const CELERY: &str = "\
[2026-12-06 10:48:03,435: INFO/MainProcess] Task shop.killed[7751cc52-b7a7-4a1b-8545-5796b9a46e89] received
[2026-12-06 10:48:03,436: INFO/MainProcess] Task shop.slow[ba464368-204a-4a5e-b209-22af5ddc0e97] received
[2026-12-06 10:48:04,207: ERROR/MainProcess] Process 'ForkPoolWorker-1' pid:29662 exited with 'signal 9 (SIGKILL)'
[2026-12-06 10:48:07,424: ERROR/MainProcess] Task handler raised error: TimeLimitExceeded(3.0)
Traceback (most recent call last):
billiard.einfo.ExceptionWithTraceback: 
\"\"\"
Traceback (most recent call last):
billiard.exceptions.TimeLimitExceeded: TimeLimitExceeded(3.0,)
\"\"\"
[2026-12-06 10:48:07,425: ERROR/MainProcess] Hard time limit (3.0s) exceeded for shop.killed[7751cc52-b7a7-4a1b-8545-5796b9a46e89]
[2026-12-06 10:48:07,425: ERROR/MainProcess] Task handler raised error: TimeLimitExceeded(3.0)
Traceback (most recent call last):
billiard.einfo.ExceptionWithTraceback: 
\"\"\"
Traceback (most recent call last):
billiard.exceptions.TimeLimitExceeded: TimeLimitExceeded(3.0,)
\"\"\"
[2026-12-06 10:48:07,425: ERROR/MainProcess] Hard time limit (3.0s) exceeded for shop.slow[ba464368-204a-4a5e-b209-22af5ddc0e97]
[2026-12-06 10:48:07,616: ERROR/MainProcess] Process 'ForkPoolWorker-2' pid:29663 exited with 'signal 15 (SIGTERM)'
worker: Warm shutdown (MainProcess)
[2026-12-06 10:48:23,631: ERROR/MainProcess] Process 'ForkPoolWorker-4' pid:29671 exited with 'signal 9 (SIGKILL)'
";

    #[test]
    fn a_celery_child_killed_for_its_time_limit_is_no_oom_and_one_killed_alone_is() {
        let f = scan(CELERY);
        assert_eq!(f.child_oom_pids, [29662], "shutdown exits are no aborts");
        assert_eq!(
            f.time_limit_kills,
            [TimeLimitKill {
                pid: 29663,
                task: "shop.slow".into(),
                limit: "3.0s".into()
            }]
        );
        assert!(f.warm_shutdown);
        // The same SIGKILL right after a hard time limit is billiard's, not the kernel's.
        let escalated = scan(
            "[x: ERROR/MainProcess] Hard time limit (300s) exceeded for shop.report[1]\n\
             [x: ERROR/MainProcess] Process 'ForkPoolWorker-7' pid:812 exited with 'signal 9 (SIGKILL)'\n",
        );
        assert!(escalated.child_oom_pids.is_empty());
        assert_eq!(escalated.time_limit_kills[0].pid, 812);
        assert_eq!(escalated.time_limit_kills[0].limit, "300s");
    }

    #[test]
    fn an_unloadable_celery_app_is_named_with_celerys_reason() {
        // celery 5.6.3's output for `celery -A nosuch worker` (exit 2).
        let f = scan(
            "Usage: celery [OPTIONS] [COMMAND] [ARGS]...\n\
             Try 'celery --help' for help.\n\n\
             Error: \n\
             Unable to load celery application.\n\
             The module nosuch was not found.\n",
        );
        assert_eq!(
            hint(&f).as_deref(),
            Some("celery: Unable to load celery application; The module nosuch was not found.")
        );
    }

    #[test]
    fn an_unreachable_broker_is_named_without_credentials() {
        // celery 5.6.3 with redis-py, the broker down; the password is a secret of the user's.
        let line = "[2026-12-06 10:53:52,693: ERROR/MainProcess] consumer: Cannot connect to \
            redis://:**@127.0.0.1:1/0: Error 111 connecting to 127.0.0.1:1. Connection refused..\n\
            Trying again in 2.00 seconds... (1/100)\n";
        let f = scan(&line.repeat(3));
        let broker = f.broker_unreachable.as_ref().expect("the broker");
        assert_eq!(broker.broker, "redis://127.0.0.1:1/0");
        assert_eq!(
            broker.error,
            "Error 111 connecting to 127.0.0.1:1. Connection refused"
        );
        assert_eq!(broker.attempts, 3);
        assert_eq!(
            without_credentials("amqp://shop:s3cret@rabbit:5672// and redis://:pw@r/0"),
            "amqp://rabbit:5672// and redis://r/0"
        );
        assert!(!hint(&f).unwrap_or_default().contains("**"));
    }
}
